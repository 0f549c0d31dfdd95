// Read-only memory mapping of a whole file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace kiln {

class MappedFile {
 public:
  // Maps `path` read-only. Empty files map to size 0 with a null data().
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Asks the kernel to read [offset, offset + size) ahead (madvise
  // MADV_WILLNEED; returns at once): many prefetched ranges are read from
  // the disk concurrently instead of one page fault at a time. A hint only.
  void Prefetch(uint64_t offset, uint64_t size) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace kiln
