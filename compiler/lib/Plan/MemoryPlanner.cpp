//===- MemoryPlanner.cpp - Static arena planning from liveness ------------===//
//
// Buffers are placed largest first; each takes the lowest aligned offset
// that does not overlap (in address) any already-placed buffer whose live
// range overlaps its own (in time). The arena is allocated once by the
// runtime; its size is reported next to the peak of simultaneously live
// bytes, the lower bound any placement could reach.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Plan.h"

#include <algorithm>
#include <numeric>

namespace kiln {

static uint64_t alignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::pair<uint64_t, uint64_t> planArena(std::vector<ArenaRequest> &requests,
                                        uint64_t alignment) {
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (requests[a].size != requests[b].size)
      return requests[a].size > requests[b].size;
    return requests[a].first < requests[b].first;
  });
  std::vector<size_t> placed;
  uint64_t arena = 0;
  for (size_t i : order) {
    ArenaRequest &r = requests[i];
    uint64_t size = alignUp(std::max<uint64_t>(r.size, 1), alignment);
    // Intervals (in address) taken by buffers live at the same time.
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (size_t j : placed) {
      const ArenaRequest &o = requests[j];
      if (o.last < r.first || r.last < o.first)
        continue;
      busy.push_back({o.offset, o.offset + alignUp(std::max<uint64_t>(o.size, 1),
                                                   alignment)});
    }
    std::sort(busy.begin(), busy.end());
    uint64_t offset = 0;
    for (auto [lo, hi] : busy) {
      if (offset + size <= lo)
        break;
      offset = std::max(offset, hi);
    }
    r.offset = offset;
    arena = std::max(arena, offset + size);
    placed.push_back(i);
  }
  // Peak of live bytes over the schedule.
  uint32_t horizon = 0;
  for (const ArenaRequest &r : requests)
    horizon = std::max(horizon, r.last);
  uint64_t peak = 0;
  for (uint32_t t = 0; t <= horizon && !requests.empty(); ++t) {
    uint64_t live = 0;
    for (const ArenaRequest &r : requests)
      if (r.first <= t && t <= r.last)
        live += alignUp(std::max<uint64_t>(r.size, 1), alignment);
    peak = std::max(peak, live);
  }
  return {arena, peak};
}

uint64_t fnv1a64(const uint8_t *data, size_t size) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 1099511628211ull;
  }
  return h;
}

} // namespace kiln
