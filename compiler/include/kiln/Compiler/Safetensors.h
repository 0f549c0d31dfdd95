//===- Safetensors.h - Reading safetensors checkpoints ----------*- C++ -*-===//
#ifndef KILN_COMPILER_SAFETENSORS_H
#define KILN_COMPILER_SAFETENSORS_H

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln {

struct SafetensorsTensor {
  std::string dtype; ///< "F32", "BF16", "F16", "I32", "F8_E4M3", ...
  std::vector<int64_t> shape;
  uint64_t offset = 0; ///< absolute offset of the data in the file
  uint64_t size = 0;
};

/// A mapped safetensors file: 8-byte little-endian header length, a JSON
/// header mapping names to {dtype, shape, data_offsets}, then the data.
/// Every header entry is validated (offsets inside the file, size consistent
/// with dtype and shape); errors name the file and the tensor.
class SafetensorsFile {
public:
  static llvm::Expected<std::unique_ptr<SafetensorsFile>>
  open(const std::string &path);

  const std::string &path() const { return filePath; }
  uint64_t fileSize() const { return buffer->getBufferSize(); }
  const SafetensorsTensor *find(llvm::StringRef name) const;
  const uint8_t *data(const SafetensorsTensor &t) const {
    return reinterpret_cast<const uint8_t *>(buffer->getBufferStart()) +
           t.offset;
  }
  const llvm::StringMap<SafetensorsTensor> &tensors() const { return map; }

private:
  std::string filePath;
  std::unique_ptr<llvm::MemoryBuffer> buffer;
  llvm::StringMap<SafetensorsTensor> map;
};

/// A Hugging Face checkpoint directory: model.safetensors, or the shards
/// listed in model.safetensors.index.json.
class Checkpoint {
public:
  static llvm::Expected<std::unique_ptr<Checkpoint>>
  open(const std::string &dir);
  /// A single safetensors file as a checkpoint.
  static llvm::Expected<std::unique_ptr<Checkpoint>>
  openFile(const std::string &path);

  struct Entry {
    const SafetensorsFile *file = nullptr;
    const SafetensorsTensor *tensor = nullptr;
  };
  /// The tensor named `name`, or an entry with null members.
  Entry find(llvm::StringRef name) const;
  const std::string &dir() const { return directory; }

private:
  std::string directory;
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  llvm::StringMap<Entry> index;
};

/// Bytes per element of a safetensors dtype, 0 when unknown.
unsigned safetensorsDTypeSize(llvm::StringRef dtype);

} // namespace kiln

#endif // KILN_COMPILER_SAFETENSORS_H
