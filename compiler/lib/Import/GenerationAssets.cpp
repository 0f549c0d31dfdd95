//===- GenerationAssets.cpp - Tokenizer and generation defaults -----------===//
//
// transformers' GenerationConfig takes eos/bos ids and sampling defaults from
// generation_config.json, and from the model's config.json when the file (or
// the field) is absent. The end-of-sequence token falls back to
// tokenizer_config.json's `eos_token`, looked up in the tokenizer, as
// llama.cpp's converters do. tokenizer.json is checked by loading it with the
// runtime's tokenizer, so that a plan never carries one the runtime refuses.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/GenerationAssets.h"

#include "kiln/tokenizer.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

namespace json = llvm::json;

namespace kiln {

namespace {

llvm::Error error(const std::string &file, const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 file + ": " + msg.str());
}

std::string inDir(const std::string &dir, llvm::StringRef name) {
  llvm::SmallString<256> p(dir);
  llvm::sys::path::append(p, name);
  return p.str().str();
}

/// The file's text, std::nullopt when it does not exist.
llvm::Expected<std::optional<std::string>> readIfPresent(const std::string &path) {
  if (!llvm::sys::fs::exists(path))
    return std::nullopt;
  auto buf = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                         /*RequiresNullTerminator=*/false);
  if (!buf)
    return error(path, "cannot read: " + buf.getError().message());
  return std::optional<std::string>((*buf)->getBuffer().str());
}

/// A JSON object file, std::nullopt when absent.
llvm::Expected<std::optional<json::Object>> readObject(const std::string &path) {
  auto text = readIfPresent(path);
  if (!text)
    return text.takeError();
  if (!*text)
    return std::nullopt;
  auto v = json::parse(**text);
  if (!v)
    return error(path, "invalid JSON: " + llvm::toString(v.takeError()));
  json::Object *o = v->getAsObject();
  if (!o)
    return error(path, "expected a JSON object at the top level");
  return std::optional<json::Object>(std::move(*o));
}

/// The value of `key`, null when absent or JSON null.
const json::Value *field(const std::optional<json::Object> &o, llvm::StringRef key) {
  if (!o)
    return nullptr;
  const json::Value *v = o->get(key);
  return v && v->kind() != json::Value::Null ? v : nullptr;
}

/// A token id field: an integer, or (eos) a list of integers.
llvm::Error tokenIds(const json::Value &v, const std::string &file,
                     llvm::StringRef key, bool allowList, int64_t vocab,
                     std::vector<int32_t> &out) {
  auto one = [&](const json::Value &x, const std::string &where) -> llvm::Error {
    std::optional<int64_t> id = x.getAsInteger();
    if (!id)
      return error(file, where + ": expected an integer token id" +
                             (allowList ? " or a list of them" : ""));
    if (*id < 0 || (vocab > 0 && *id >= vocab))
      return error(file, where + ": token id " + llvm::Twine(*id) +
                             " is outside the model's vocabulary [0, " +
                             llvm::Twine(vocab) + ") (config.json vocab_size)");
    if (!llvm::is_contained(out, static_cast<int32_t>(*id)))
      out.push_back(static_cast<int32_t>(*id));
    return llvm::Error::success();
  };
  if (const json::Array *a = v.getAsArray()) {
    if (!allowList)
      return error(file, key + ": expected an integer token id");
    for (size_t i = 0; i < a->size(); ++i)
      if (auto e = one((*a)[i], (key + "[" + llvm::Twine(i) + "]").str()))
        return e;
    return llvm::Error::success();
  }
  return one(v, key.str());
}

} // namespace

llvm::Expected<GenerationAssets> readGenerationAssets(const std::string &dir) {
  GenerationAssets a;
  const std::string configPath = inDir(dir, "config.json");
  const std::string genPath = inDir(dir, "generation_config.json");
  const std::string tokPath = inDir(dir, "tokenizer.json");
  const std::string tokConfigPath = inDir(dir, "tokenizer_config.json");
  auto config = readObject(configPath);
  if (!config)
    return config.takeError();
  auto gen = readObject(genPath);
  if (!gen)
    return gen.takeError();
  int64_t vocab = 0;
  if (const json::Value *v = field(*config, "vocab_size"))
    vocab = v->getAsInteger().value_or(0);

  // The tokenizer, kept only when the runtime loads it.
  std::unique_ptr<Tokenizer> tokenizer;
  auto tokText = readIfPresent(tokPath);
  if (!tokText)
    return tokText.takeError();
  if (*tokText) {
    auto t = Tokenizer::FromJson(**tokText, tokPath);
    if (t.ok()) {
      tokenizer = std::move(*t);
      a.tokenizerJson = std::move(**tokText);
      a.tokenizerSource = tokPath;
    } else {
      a.tokenizerSkipped = std::string(t.status().message());
    }
  }

  // eos: generation_config.json, config.json, then tokenizer_config.json.
  for (auto [obj, path] : {std::pair{&*gen, genPath}, {&*config, configPath}}) {
    if (const json::Value *v = field(*obj, "eos_token_id")) {
      if (auto e = tokenIds(*v, path, "eos_token_id", true, vocab, a.eosTokenIds))
        return std::move(e);
      a.eosSource = llvm::sys::path::filename(path).str();
      break;
    }
  }
  if (a.eosSource.empty() && tokenizer) {
    auto tc = readObject(tokConfigPath);
    if (!tc)
      return tc.takeError();
    if (const json::Value *v = field(*tc, "eos_token")) {
      std::optional<llvm::StringRef> content = v->getAsString();
      if (const json::Object *o = v->getAsObject())
        content = o->getString("content");
      if (!content)
        return error(tokConfigPath, "eos_token: expected a string or an object "
                                    "with a \"content\" string");
      std::optional<int32_t> id = tokenizer->TokenToId(content->str());
      if (!id)
        return error(tokConfigPath, "eos_token: '" + *content +
                                        "' is not a token of " + tokPath);
      if (vocab > 0 && *id >= vocab)
        return error(tokConfigPath, "eos_token: '" + *content + "' is token " +
                                        llvm::Twine(*id) +
                                        ", outside the model's vocabulary [0, " +
                                        llvm::Twine(vocab) + ")");
      a.eosTokenIds.push_back(*id);
      a.eosSource = "tokenizer_config.json";
    }
  }
  // bos: generation_config.json, then config.json.
  for (auto [obj, path] : {std::pair{&*gen, genPath}, {&*config, configPath}}) {
    if (const json::Value *v = field(*obj, "bos_token_id")) {
      std::vector<int32_t> ids;
      if (auto e = tokenIds(*v, path, "bos_token_id", false, vocab, ids))
        return std::move(e);
      a.bosTokenId = ids[0];
      a.bosSource = llvm::sys::path::filename(path).str();
      break;
    }
  }

  // Sampling defaults: generation_config.json only.
  if (const json::Value *v = field(*gen, "do_sample")) {
    if (!v->getAsBoolean())
      return error(genPath, "do_sample: expected true or false");
    a.doSample = *v->getAsBoolean();
  }
  if (const json::Value *v = field(*gen, "temperature")) {
    std::optional<double> t = v->getAsNumber();
    if (!t || !(*t >= 0))
      return error(genPath, "temperature: expected a number >= 0");
    a.temperature = static_cast<float>(*t);
  }
  if (const json::Value *v = field(*gen, "top_k")) {
    std::optional<int64_t> k = v->getAsInteger();
    if (!k || *k < 0 || *k > INT32_MAX)
      return error(genPath, "top_k: expected an integer >= 0");
    a.topK = static_cast<int32_t>(*k);
  }
  if (const json::Value *v = field(*gen, "top_p")) {
    std::optional<double> p = v->getAsNumber();
    if (!p || !(*p > 0 && *p <= 1))
      return error(genPath, "top_p: expected a number in (0, 1]");
    a.topP = static_cast<float>(*p);
  }
  return a;
}

} // namespace kiln
