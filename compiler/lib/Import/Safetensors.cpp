//===- Safetensors.cpp - Reading safetensors checkpoints ------------------===//
#include "kiln/Compiler/Safetensors.h"

#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"

#include <set>

namespace kiln {

unsigned safetensorsDTypeSize(llvm::StringRef dtype) {
  return llvm::StringSwitch<unsigned>(dtype)
      .Cases({"F64", "I64", "U64"}, 8)
      .Cases({"F32", "I32", "U32"}, 4)
      .Cases({"F16", "BF16", "I16", "U16"}, 2)
      .Cases({"I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"}, 1)
      .Default(0);
}

static llvm::Error err(const std::string &path, const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 path + ": " + msg.str());
}

llvm::Expected<std::unique_ptr<SafetensorsFile>>
SafetensorsFile::open(const std::string &path) {
  auto buf = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                         /*RequiresNullTerminator=*/false);
  if (!buf)
    return err(path, "cannot open: " + buf.getError().message());
  auto file = std::make_unique<SafetensorsFile>();
  file->filePath = path;
  file->buffer = std::move(*buf);
  const uint64_t fileSize = file->buffer->getBufferSize();
  if (fileSize < 8)
    return err(path, "truncated safetensors file (no header length)");
  const auto *bytes =
      reinterpret_cast<const uint8_t *>(file->buffer->getBufferStart());
  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = (headerLen << 8) | bytes[i];
  if (headerLen > fileSize - 8)
    return err(path, "header length " + llvm::Twine(headerLen) +
                         " exceeds the file size " + llvm::Twine(fileSize));
  llvm::StringRef header(reinterpret_cast<const char *>(bytes + 8), headerLen);
  auto json = llvm::json::parse(header);
  if (!json)
    return err(path, "invalid JSON header: " + llvm::toString(json.takeError()));
  const llvm::json::Object *root = json->getAsObject();
  if (!root)
    return err(path, "the header is not a JSON object");
  const uint64_t dataStart = 8 + headerLen;
  for (const auto &kv : *root) {
    std::string name = kv.first.str();
    if (name == "__metadata__")
      continue;
    const llvm::json::Object *t = kv.second.getAsObject();
    if (!t)
      return err(path, "tensor '" + name + "': entry is not an object");
    auto dtype = t->getString("dtype");
    const llvm::json::Array *shape = t->getArray("shape");
    const llvm::json::Array *offs = t->getArray("data_offsets");
    if (!dtype || !shape || !offs || offs->size() != 2)
      return err(path, "tensor '" + name +
                           "': needs dtype, shape and data_offsets [begin, end]");
    SafetensorsTensor tensor;
    tensor.dtype = dtype->str();
    uint64_t count = 1;
    for (const llvm::json::Value &d : *shape) {
      auto v = d.getAsInteger();
      if (!v || *v < 0)
        return err(path, "tensor '" + name + "': invalid shape");
      tensor.shape.push_back(*v);
      count *= static_cast<uint64_t>(*v);
    }
    auto b = (*offs)[0].getAsInteger(), e = (*offs)[1].getAsInteger();
    if (!b || !e || *b < 0 || *e < *b)
      return err(path, "tensor '" + name + "': invalid data_offsets");
    unsigned esize = safetensorsDTypeSize(tensor.dtype);
    if (esize == 0)
      return err(path, "tensor '" + name + "': unsupported dtype " +
                           tensor.dtype);
    tensor.offset = dataStart + static_cast<uint64_t>(*b);
    tensor.size = static_cast<uint64_t>(*e - *b);
    if (tensor.size != count * esize)
      return err(path, "tensor '" + name + "': data_offsets hold " +
                           llvm::Twine(tensor.size) + " bytes but " +
                           tensor.dtype + " of this shape needs " +
                           llvm::Twine(count * esize));
    if (tensor.offset + tensor.size > fileSize)
      return err(path, "tensor '" + name +
                           "': data lies past the end of the file (truncated?)");
    file->map[name] = std::move(tensor);
  }
  return file;
}

const SafetensorsTensor *SafetensorsFile::find(llvm::StringRef name) const {
  auto it = map.find(name);
  return it == map.end() ? nullptr : &it->second;
}

llvm::Expected<std::unique_ptr<Checkpoint>>
Checkpoint::openFile(const std::string &path) {
  auto file = SafetensorsFile::open(path);
  if (!file)
    return file.takeError();
  auto ck = std::make_unique<Checkpoint>();
  ck->directory = llvm::sys::path::parent_path(path).str();
  for (const auto &kv : (*file)->tensors())
    ck->index[kv.first()] = Entry{file->get(), &kv.second};
  ck->files.push_back(std::move(*file));
  return ck;
}

/// Why an index's shard name would reach outside the checkpoint directory
/// ("" when it does not). The check is lexical: shards may be symbolic links
/// (a Hugging Face cache snapshot links each one to its blob), but the name
/// itself must be a relative path without "..", as `save_pretrained` writes.
static std::string shardNameProblem(llvm::StringRef name) {
  if (name.empty())
    return "is empty";
  if (llvm::sys::path::is_absolute(name) || name.starts_with("~"))
    return "is an absolute path; shards must lie inside the checkpoint "
           "directory";
  for (auto it = llvm::sys::path::begin(name), e = llvm::sys::path::end(name);
       it != e; ++it)
    if (*it == "..")
      return "contains '..'; shards must lie inside the checkpoint directory";
  return "";
}

llvm::Expected<std::unique_ptr<Checkpoint>>
Checkpoint::open(const std::string &dir) {
  llvm::SmallString<256> indexPath(dir), single(dir);
  llvm::sys::path::append(indexPath, "model.safetensors.index.json");
  llvm::sys::path::append(single, "model.safetensors");
  if (!llvm::sys::fs::exists(indexPath)) {
    if (!llvm::sys::fs::exists(single))
      return err(dir, "no model.safetensors or model.safetensors.index.json");
    return openFile(single.str().str());
  }
  auto buf = llvm::MemoryBuffer::getFile(indexPath);
  if (!buf)
    return err(indexPath.str().str(), "cannot read: " + buf.getError().message());
  auto json = llvm::json::parse((*buf)->getBuffer());
  if (!json)
    return err(indexPath.str().str(),
               "invalid JSON: " + llvm::toString(json.takeError()));
  const llvm::json::Object *root = json->getAsObject();
  const llvm::json::Object *map = root ? root->getObject("weight_map") : nullptr;
  if (!map)
    return err(indexPath.str().str(), "missing \"weight_map\"");
  auto ck = std::make_unique<Checkpoint>();
  ck->directory = dir;
  llvm::StringMap<const SafetensorsFile *> byName;
  for (const auto &kv : *map) {
    auto fileName = kv.second.getAsString();
    if (!fileName)
      return err(indexPath.str().str(),
                 "weight_map entry '" + kv.first.str() + "' is not a string");
    if (std::string why = shardNameProblem(*fileName); !why.empty())
      return err(indexPath.str().str(),
                 "weight_map entry '" + kv.first.str() + "': shard '" +
                     fileName->str() + "' " + why);
    auto it = byName.find(*fileName);
    if (it == byName.end()) {
      llvm::SmallString<256> shard(dir);
      llvm::sys::path::append(shard, *fileName);
      auto file = SafetensorsFile::open(shard.str().str());
      if (!file)
        return file.takeError();
      it = byName.try_emplace(*fileName, file->get()).first;
      ck->files.push_back(std::move(*file));
    }
    const SafetensorsTensor *t = it->second->find(kv.first);
    if (!t)
      return err(it->second->path(), "tensor '" + kv.first.str() +
                                         "' is listed in the index but "
                                         "missing from the shard");
    ck->index[kv.first] = Entry{it->second, t};
  }
  return ck;
}

Checkpoint::Entry Checkpoint::find(llvm::StringRef name) const {
  auto it = index.find(name);
  return it == index.end() ? Entry{} : it->second;
}

} // namespace kiln
