//===- GpuRowKernels.h - cooperative row kernels for sm_90a -----*- C++ -*-===//
//
// GPU kernels whose work is one row at a time (norms, the MoE combine),
// written as PTX over
// a block of cooperating threads instead of the one-thread-per-row
// programs: each block walks rows blockIdx, blockIdx + gridDim, ... (a
// persistent grid of min(rows, SMs) blocks), its threads read the row in
// 16-byte pieces, reduce through warp shuffles and shared memory, and write
// it back. At decode's single row the program form leaves one thread to
// read 7168 floats twice; here 256 threads share it. Plans carry them as
// tile variants (plan.fbs TileVariant, CUDA.cpp); MLIR-free text like
// HopperGemm.h, so unit tests assemble them with ptxas alone.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_COMPILER_GPUROWKERNELS_H
#define KILN_COMPILER_GPUROWKERNELS_H

#include <cstdint>
#include <string>

namespace kiln::gpurow {

/// Threads per block of the row kernels (8 warps).
constexpr int64_t kRowThreads = 256;

/// out[r, c] = x[r, c] * (1 / sqrt(mean_c(x[r, c]^2) + eps)) * w[c], f32 rows
/// of `cols` (a multiple of 4) elements, w f32 or bf16, rounded as the
/// reference program rounds (correctly rounded divide, square root and
/// reciprocal; only the order of the sum of squares differs).
struct RmsNormConfig {
  int64_t cols = 0;
  float eps = 1e-6f;
  bool bf16Weight = false;
  // rms_norm_quant: the normalized row also quantized per 1 x 128
  // (DeepSeek's s = max(amax, 1e-4) / 448, v / s rounded to nearest even,
  // saturated; cols a multiple of 128): each warp's pass covers one block,
  // its amax five butterfly shuffles, lane 0 storing the block's scale.
  bool quantize = false;
};

/// Empty when `c` has a row kernel, else why not.
std::string checkRmsNormConfig(const RmsNormConfig &c);

/// The .entry `name` (u64 x, u64 w, u64 out, [quantize: u64 q (e4m3), u64
/// scales,] u64 rows) for `c` (valid), for a module with an sm_90a header
/// (HopperGemm.h ptxModuleHeader).
std::string emitRmsNormRowPtx(const RmsNormConfig &c, const std::string &name);

/// kernel.quantize of f32 rows of `cols` (a multiple of 128) per 1 x 128,
/// no scale flags: the quantization of rms_norm_quant without the norm.
/// Empty when it has a row kernel, else why not.
std::string checkQuantizeRowConfig(int64_t cols);

/// The .entry `name` (u64 x, u64 q (e4m3), u64 scales, u64 rows).
std::string emitQuantizeRowPtx(int64_t cols, const std::string &name);

/// The MoE combine (kernel.moe_combine): y[t, d] = sum over the routed
/// slots k < topK of weights[t, k] * rows[slot_row[t, k], d] (fused
/// multiply-adds, in slot order), plus rows[slot_row[t, k], d] for the
/// shared-expert slots topK <= k < slots, plus the addends' [t, d] in
/// order; all f32, rows of `cols` (a multiple of 4). A block per token:
/// its threads read the token's slots and weights once, then each 16-byte
/// chunk of every slot row.
struct MoECombineConfig {
  int64_t cols = 0, topK = 0, slots = 0, addends = 0;
};

/// Empty when `c` has a row kernel, else why not.
std::string checkMoECombineConfig(const MoECombineConfig &c);

/// The .entry `name` (u64 rows, u64 slot_row, u64 weights, u64 addend x
/// addends, u64 out, u64 tokens) for `c` (valid).
std::string emitMoECombineRowPtx(const MoECombineConfig &c,
                                 const std::string &name);

} // namespace kiln::gpurow

#endif // KILN_COMPILER_GPUROWKERNELS_H
