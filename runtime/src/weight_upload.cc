#include "weight_upload.h"

#include <algorithm>
#include <cstring>

namespace kiln {

WeightLayout LayOutWeights(const std::vector<uint64_t>& sizes, uint64_t alignment) {
  WeightLayout layout;
  uint64_t at = 0;
  for (uint64_t size : sizes) {
    layout.offsets.push_back(at);
    at = (at + size + alignment - 1) & ~(alignment - 1);
  }
  layout.total = at;
  return layout;
}

uint64_t FillChunk(const WeightLayout& layout, const std::vector<WeightView>& weights, uint64_t chunk,
                   uint64_t chunk_bytes, uint8_t* staging) {
  uint64_t begin = chunk * chunk_bytes;
  if (begin >= layout.total) return 0;
  uint64_t end = std::min(layout.total, begin + chunk_bytes);
  // The last weight that starts at or before `begin` (offsets ascend).
  size_t w = std::upper_bound(layout.offsets.begin(), layout.offsets.end(), begin) - layout.offsets.begin();
  w = w > 0 ? w - 1 : 0;
  uint64_t filled = begin;  // staging holds [begin, filled)
  for (; w < weights.size() && layout.offsets[w] < end; ++w) {
    uint64_t lo = std::max(begin, layout.offsets[w]);
    uint64_t hi = std::min(end, layout.offsets[w] + weights[w].size);
    if (lo >= hi) continue;
    std::memset(staging + (filled - begin), 0, lo - filled);  // padding
    std::memcpy(staging + (lo - begin), weights[w].data + (lo - layout.offsets[w]), hi - lo);
    filled = hi;
  }
  std::memset(staging + (filled - begin), 0, end - filled);
  return end - begin;
}

}  // namespace kiln
