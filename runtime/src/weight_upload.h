// Internal: how the CUDA executor uploads the weights, as plain arithmetic
// the CPU tests check. All weights share one device allocation, each at an
// aligned offset in plan order; the host side of the copy goes through a
// staging buffer (pinned memory) in chunks, one cuMemcpyHtoD per chunk, so
// a checkpoint of 90,000 tensors takes total / chunk copies, not 90,000.
#pragma once

#include <cstdint>
#include <vector>

#include "kiln/runtime.h"

namespace kiln {

// Device offsets of the weights in one allocation of `total` bytes.
struct WeightLayout {
  std::vector<uint64_t> offsets;  // per weight; each a multiple of the alignment
  uint64_t total = 0;             // bytes to allocate (a multiple of the alignment; 0: none)
};

// Every weight at the next multiple of `alignment` (a power of two) after the
// previous one; empty weights take no space (their offset is where the next
// would start).
WeightLayout LayOutWeights(const std::vector<uint64_t>& sizes, uint64_t alignment = 256);

// Chunk `chunk` of the device image [chunk x chunk_bytes, + chunk_bytes)
// (shorter at the end): the weights' bytes that fall in it, copied to
// `staging` (chunk_bytes long), the padding between them zeroed. Returns the
// chunk's size. Chunks: ceil(layout.total / chunk_bytes).
uint64_t FillChunk(const WeightLayout& layout, const std::vector<WeightView>& weights, uint64_t chunk,
                   uint64_t chunk_bytes, uint8_t* staging);

}  // namespace kiln
