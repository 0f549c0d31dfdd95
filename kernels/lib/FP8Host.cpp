//===- FP8Host.cpp - Host-side e4m3 conversion and weight quantization ----===//
#include "kiln/Kernels/FP8Host.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace kiln::kernels {

uint8_t encodeE4M3(float v) {
  // Mirrors ProgramBuilder::encodeE4M3 step for step.
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  uint32_t sign = (bits >> 24) & 0x80;
  float a = std::min(std::fabs(v), 448.0f);
  uint32_t abits;
  std::memcpy(&abits, &a, 4);
  uint32_t mag;
  if (a >= 0.015625f) {
    uint32_t rounded = abits + 0x7FFFF + ((abits >> 20) & 1);
    mag = std::min<uint32_t>((rounded >> 20) - 960, 0x7E);
  } else {
    float scaled = a * 512.0f + 8388608.0f;
    uint32_t sbits;
    std::memcpy(&sbits, &scaled, 4);
    mag = sbits - 0x4B000000;
  }
  return static_cast<uint8_t>(mag | sign);
}

float decodeE4M3(uint8_t b) {
  uint32_t e = (b >> 3) & 15, m = b & 7;
  if ((b & 0x7F) == 0x7F)
    return std::numeric_limits<float>::quiet_NaN();
  float mag;
  if (e == 0) {
    mag = static_cast<float>(m) * 0.001953125f;
  } else {
    uint32_t bits = ((e + 120) << 23) | (m << 20);
    std::memcpy(&mag, &bits, 4);
  }
  return (b & 0x80) ? -mag : mag;
}

void quantizeWeightBlocks(const float *w, int64_t rows, int64_t cols,
                          int64_t block, std::vector<uint8_t> &q,
                          std::vector<float> &scales) {
  int64_t rb = (rows + block - 1) / block, cb = (cols + block - 1) / block;
  q.assign(rows * cols, 0);
  scales.assign(rb * cb, 1.0f);
  for (int64_t bi = 0; bi < rb; ++bi)
    for (int64_t bj = 0; bj < cb; ++bj) {
      int64_t r0 = bi * block, r1 = std::min(rows, r0 + block);
      int64_t c0 = bj * block, c1 = std::min(cols, c0 + block);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          amax = std::max(amax, std::fabs(w[r * cols + c]));
      float s = amax > 0.0f ? amax / 448.0f : 1.0f;
      scales[bi * cb + bj] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          q[r * cols + c] = encodeE4M3(w[r * cols + c] / s);
    }
}

} // namespace kiln::kernels
