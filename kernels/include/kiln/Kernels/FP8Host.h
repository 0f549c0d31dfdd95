//===- FP8Host.h - Host-side e4m3 conversion and weight quantization -*- C++ -*-===//
//
// The compiler quantizes weights (--quantize=fp8-block) with the same
// integer arithmetic the generated kernels use, so compile-time and run-time
// quantization agree bit for bit.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_KERNELS_FP8HOST_H
#define KILN_KERNELS_FP8HOST_H

#include <cstdint>
#include <vector>

namespace kiln::kernels {

/// f32 -> e4m3: round to nearest even, saturate at +-448, sign kept.
uint8_t encodeE4M3(float v);
/// e4m3 -> f32 (0x7F / 0xFF decode to NaN).
float decodeE4M3(uint8_t b);

/// Quantizes a row-major [rows, cols] f32 matrix in `block` x `block` blocks:
/// s = amax / 448 (1 when the block is all zeros), q = e4m3(w / s).
/// `scales` is [ceil(rows / block), ceil(cols / block)].
void quantizeWeightBlocks(const float *w, int64_t rows, int64_t cols,
                          int64_t block, std::vector<uint8_t> &q,
                          std::vector<float> &scales);

} // namespace kiln::kernels

#endif // KILN_KERNELS_FP8HOST_H
