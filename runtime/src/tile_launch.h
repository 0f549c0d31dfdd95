// How a CUDA launch of an entry point with tile variants runs (plan.fbs
// TileVariant): the rows of the programs it covers, the variant that holds
// them, its persistent grid, and the cuTensorMapEncodeTiled arguments of a
// tensor-map parameter. Pure functions of the plan, so that they are tested
// without a GPU; the CUDA executor calls them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cuda_driver.h"
#include "kiln/Kernels/HopperLayout.h"
#include "kiln/dtype.h"
#include "plan_generated.h"

namespace kiln {

// The runs of contiguous rows [r0, r1) that program ranges [begin, end)
// cover, rows being `programs_per_row` programs each: ranges sorted by
// begin (a window's, or the whole grid), touching or overlapping runs
// merged, so a grid is one run and a window one per batch row it gives.
inline std::vector<std::pair<uint64_t, uint64_t>> TileRowRuns(
    const std::vector<std::pair<int64_t, int64_t>>& ranges, uint64_t programs_per_row) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  for (auto [b, e] : ranges) {
    if (e <= b) continue;
    uint64_t r0 = static_cast<uint64_t>(b) / programs_per_row;
    uint64_t r1 = (static_cast<uint64_t>(e) + programs_per_row - 1) / programs_per_row;
    if (!runs.empty() && r0 <= runs.back().second)
      runs.back().second = std::max(runs.back().second, r1);
    else
      runs.push_back({r0, r1});
  }
  return runs;
}

// The first variant whose max_rows holds `rows`; -1 when none does (the plan
// checks say the last holds every grid's rows).
inline int ChooseTileVariant(const plan::EntryPoint& ep, uint64_t rows) {
  const auto* tiles = ep.tiles();
  for (uint32_t v = 0; tiles && v < tiles->size(); ++v)
    if (rows <= tiles->Get(v)->max_rows()) return static_cast<int>(v);
  return -1;
}

// Persistent blocks: one per tile, at most one per SM.
inline uint32_t TileGrid(const plan::TileVariant& v, uint64_t rows, int sms) {
  uint64_t tiles = (rows + v.rows_per_tile() - 1) / v.rows_per_tile() * v.column_tiles();
  return static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(tiles, static_cast<uint64_t>(sms))));
}

// A map's swizzle span (TensorMapSpec.swizzle_bytes) as HopperLayout.h
// names it: kNone for 0 and for a span it does not know.
inline hopper::Swizzle SwizzleOf(uint32_t swizzle_bytes) {
  return swizzle_bytes == 128  ? hopper::Swizzle::k128B
         : swizzle_bytes == 64 ? hopper::Swizzle::k64B
         : swizzle_bytes == 32 ? hopper::Swizzle::k32B
                               : hopper::Swizzle::kNone;
}

// cuTensorMapEncodeTiled's arguments for `spec` over `address`.
struct TensorMapArgs {
  int dtype = -1;  // CUtensorMapDataType, -1: no TMA type for the element
  int swizzle = cuda::CU_TENSOR_MAP_SWIZZLE_NONE;
  uint32_t rank = 0;
  unsigned long long dims[5] = {0}, strides[4] = {0};
  unsigned int box[5] = {0}, element_strides[5] = {1, 1, 1, 1, 1};
};

inline TensorMapArgs TensorMapArgsOf(const plan::TensorMapSpec& spec) {
  TensorMapArgs a;
  switch (static_cast<DType>(spec.dtype())) {
    case DType::kF32: a.dtype = cuda::CU_TENSOR_MAP_DATA_TYPE_FLOAT32; break;
    case DType::kF16: a.dtype = cuda::CU_TENSOR_MAP_DATA_TYPE_FLOAT16; break;
    case DType::kBF16: a.dtype = cuda::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16; break;
    case DType::kI32: a.dtype = cuda::CU_TENSOR_MAP_DATA_TYPE_INT32; break;
    case DType::kI64: a.dtype = cuda::CU_TENSOR_MAP_DATA_TYPE_INT64; break;
    case DType::kF8E4M3:
    case DType::kU8: a.dtype = cuda::CU_TENSOR_MAP_DATA_TYPE_UINT8; break;
  }
  a.swizzle = spec.swizzle_bytes() == 128  ? cuda::CU_TENSOR_MAP_SWIZZLE_128B
              : spec.swizzle_bytes() == 64 ? cuda::CU_TENSOR_MAP_SWIZZLE_64B
              : spec.swizzle_bytes() == 32 ? cuda::CU_TENSOR_MAP_SWIZZLE_32B
                                           : cuda::CU_TENSOR_MAP_SWIZZLE_NONE;
  a.rank = std::min<uint32_t>(spec.dims() ? spec.dims()->size() : 0, 5);
  for (uint32_t d = 0; d < a.rank; ++d) {
    a.dims[d] = spec.dims()->Get(d);
    a.box[d] = spec.box() && d < spec.box()->size() ? spec.box()->Get(d) : 0;
    if (d > 0 && spec.strides_bytes() && d - 1 < spec.strides_bytes()->size())
      a.strides[d - 1] = spec.strides_bytes()->Get(d - 1);
  }
  return a;
}

}  // namespace kiln
