//===- HopperGemm.h - TMA + wgmma GEMM kernels for sm_90a -------*- C++ -*-===//
//
// The first tile-level GPU emitter: a persistent, warp-specialized GEMM
// out[M, N] (f32) = A[M, K] x B[N, K]^T, bf16 or block-scaled e4m3, both
// operands K-major as checkpoints store weights, written as PTX for sm_90a:
//
//  - one producer warpgroup (setmaxnreg down to 40 where it matters) whose
//  elected thread
//    feeds a ring of `stages` shared-memory stages by TMA (A and B boxes of
//    blockK x rows, 128B swizzle) under full/empty mbarriers;
//  - blockM / 64 math warpgroups (up to 232 registers), each owning 64
//    rows of the tile, issuing wgmma.m64nNk16 from shared-memory
//    descriptors (HopperLayout.h) with f32 accumulators in registers;
//  - a persistent grid: CTA c takes tiles c, c + gridDim, ... of the
//    ceil(M / blockM) x (N / blockN) tiles, rows beyond M zero-filled by TMA
//    and not stored;
//  - forms: e4m3 with per-128 promotion, the experts' grouped GEMM over the
//    contiguous layout, and decode's swapped form (GemmTileConfig).
//
// It is MLIR-free (string emission over HopperLayout.h's arithmetic), so
// its tests assemble it with ptxas and read the SASS without the compiler.
// Plans use the f32-activation form for their bf16 dense GEMMs (CUDA.cpp's
// tile variants, while GPU activations are f32; issue 12); no GPU has run
// it yet.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_COMPILER_HOPPERGEMM_H
#define KILN_COMPILER_HOPPERGEMM_H

#include <cstdint>
#include <string>

namespace kiln::hopper {

/// What the tile does with its accumulators (not swapped forms yet).
enum class Epilogue : uint8_t {
  kStore,    // out = acc
  kResidual, // out = acc + residual[M, N] (f32), the residual adds of Kiln's gemm
  kSwiGLU,   // gate and up rows interleaved in groups of 8 (16 weight rows
             // per 8 outputs): out[M, N / 2] = silu(gate) * up
};

struct GemmTileConfig {
  int64_t n = 0, k = 0;   // static shape; M is a kernel parameter
  int64_t blockM = 128;   // 64 x math warpgroups (1 or 2)
  int64_t blockN = 128;   // wgmma N: a multiple of 8 in [8, 256]
  int64_t blockK = 64;    // one 128-byte swizzle span: 64 bf16, 128 e4m3
  int64_t stages = 4;
  // e4m3 operands with DeepSeek's scaling: activation scales [M, K / 128]
  // (1 x 128), weight scales [ceil(N / 128), ceil(K / 128)] (128 x 128); each
  // k-block of 128 is a fresh wgmma chain promoted into f32 totals on CUDA
  // cores (total += chain * scale_a[row] * scale_b), as DeepGEMM does.
  bool fp8 = false;
  // The experts' grouped GEMM over the contiguous layout (prefill): A's rows
  // sorted by expert, each expert's segment padded to blockM (the layout's
  // block); block_expert[M / blockM] (i32) names each row block's expert, -1
  // for unused blocks, which are skipped; B is the experts' weights as one
  // [E, N, K] tensor (a 3D tensor map); e4m3 weight scales [E, N/128, K/128].
  bool grouped = false;
  // Decode's form (few rows): operands swapped so the weights fill the
  // wgmma's 64-row M and the tokens its N (blockN: 8 up); the kernel computes
  // out^T tiles and stores them transposed. Tiles: (N / blockM) weight
  // blocks x ceil(M / blockN) token blocks, weight blocks first so
  // consecutive CTAs stream different weights. The tensor-map parameters
  // swap roles: tma_a is the weights' map (box rows blockM), tma_b the
  // activations' (box rows blockN). Grouped and swapped is the experts'
  // decode form: the layout's block is blockN rows (8 up), so an expert
  // with one token pads to 8 rows, not 64; block_expert is then per token
  // block and the weights' 3D map is tma_a.
  bool swapAB = false;
  Epilogue epilogue = Epilogue::kStore;
  bool bf16Out = false; // bf16 stores (round to nearest even), else f32
  // The activations (A, or B when swapped) are f32 [M, K] row-major in
  // global memory, as plans' GPU activations still are (issue 12): a
  // pointer parameter instead of their tensor map. The producer
  // warpgroup's 128 threads load each k-block's rows (16-byte loads, rows
  // past M as zeros), round them to bf16 (nearest even) and store them in
  // the stage's 128B-swizzled layout, exactly where TMA would have put
  // them (f32ActivationChunkOffset), then fence the stores for the async
  // proxy and arrive on the stage's full barrier with the weights' TMA
  // bytes. bf16 only (grouped too: rows in layout order); no register
  // rebalancing (the producer keeps a stage's loads in flight).
  bool f32Activations = false;
  // SwiGLU over two weight matrices, as checkpoints store them (gate and up
  // [N / 2, K] each) instead of rows interleaved by 8: B comes through two
  // tensor maps, each tile's B stage holding blockN / 2 gate rows then the
  // same blockN / 2 up rows (boxes of a multiple of 8 rows, so the second
  // starts at a 1024-byte swizzle repeat), and a thread holds each output's
  // gate and up accumulators blockN / 2 columns apart. Swapped (decode):
  // the A stage's 64 weight rows are 8-row boxes, gate rows j .. j + 7 then
  // up rows j .. j + 7, four times, so a thread's two fragment rows (l / 4
  // and l / 4 + 8 of its warp's 16) are one output's gate and up; the tile
  // gives 32 outputs x blockN tokens. Grouped: two 3D maps, the experts'
  // gate and up tables. Epilogue kSwiGLU, bf16 weights, f32 stores when
  // swapped.
  bool splitGateUp = false;
  // The grouped f32-activation form's rows come through the layout's
  // row-to-token map (the experts' up projection, moe_up): a u64
  // sorted_token (i32 [M]) after block_expert; row r of A (swapped: token
  // column r) is activation row sorted_token[r] of the [tokens, K] f32
  // activations, a zero row where it is -1 (padding). The producer reads a
  // tile's tokens once, before its k-blocks. In e4m3 (moe_up_fp8; not
  // swapped) the producer's 128 threads copy the gathered rows' 16-byte
  // chunks into the swizzled stage as the f32 form does (TMA cannot
  // gather), and the math warpgroups read their rows' tokens' activation
  // scales.
  bool gatherRows = false;
  // The activations' tensor map spans more rows than the launch computes
  // (a buffer's whole batch, of which the launch is one run of rows): a u64
  // `row0` parameter after M offsets their TMA row coordinates; the other
  // row-indexed pointers (out, residual, activation scales) come advanced
  // by the caller. Not with f32Activations (its pointer is advanced).
  bool activationRow0 = false;
  // Two outputs (gemm_dual): the first dualN1 of the N columns are
  // A x W1^T into `out` [M, dualN1], the rest A x W2^T into `out2`
  // [M, N - dualN1], each weight through its own tensor map; a column tile
  // (or swapped, a weight block) lies in one of them (dualN1 a multiple of
  // blockN, of blockM when swapped), which the producer and the epilogue
  // pick per tile; e4m3: W2's tiles read their own weight scales (u64
  // scale_b2 after scale_b), the split at a whole 128-row block. 0: one
  // output. f32 stores, no residual.
  int64_t dualN1 = 0;
  // FP8 SwiGLU with its output quantized (gemm_swiglu_fp8): e4m3 operands,
  // split gate and up weights, out[M, N / 2] e4m3 and out_scale[M, N / 256]
  // f32, DeepSeek's 1 x 128 quantization (s = max(amax, 1e-4) / 448, values
  // v / s rounded to nearest even, saturated at 448). A tile is blockM = 64
  // rows x 128 outputs (blockN = 256: the B stage holds 128 gate rows then
  // the same 128 up rows); both math warpgroups work on the same 64 rows,
  // warpgroup 0 on the gate rows and warpgroup 1 on the up rows (wgmma N
  // 128 each, their own weight scales: u64 scale_b2 after scale_b). After
  // the tile's k-blocks warpgroup 1 hands its totals to warpgroup 0 through
  // 32 KiB of shared memory past the stages (each thread the same fragment
  // positions, named barriers 1 and 2), and warpgroup 0 computes
  // silu(g) * u, each row's amax over its 128 outputs (the quad of threads
  // holding the row: two butterfly shuffles), the scale, and stores the
  // e4m3 pairs and the row's scale (u64 out_scale after out). Not swapped;
  // grouped (moe_up_fp8) in the layout's 64-row blocks; activationRow0 as
  // the e4m3 form.
  bool quantizeSwiGLU = false;
  // Grouped e4m3: the weight scales parameter is a table of u64 pointers,
  // one per expert, to its [N / 128, K / 128] scales (a plan's weight
  // table), instead of one [E, N / 128, K / 128] tensor.
  bool scaleTable = false;
};

/// The tile for a GEMM of M rows (the per-shape heuristic, docs/kernels.md):
/// blockM 64 (one math warpgroup) up to 64 rows, else 128 (two); blockN the
/// widest of 128, 64, 32, 16, 8 that divides N and still gives each of the
/// `sms` SMs a tile, else the widest that divides N (0 when none does: N not
/// a multiple of 8); blockK one swizzle span; as many stages (up to 8) as fit
/// in 227 KiB. Up to 32 rows (decode) the swapped form instead, when N is a
/// multiple of 64: blockM 64 weight rows, blockN 8, 16 or 32 tokens. Grid:
/// min(tiles, sms) persistent CTAs.
GemmTileConfig chooseGemmTile(int64_t m, int64_t n, int64_t k, bool fp8,
                              bool grouped, int64_t sms);

/// Gives `c` as many stages (2 to 8) as keep it valid (shared memory grows
/// with them); false, with 2 stages, when even 2 do not.
bool fitStages(GemmTileConfig &c);

/// The quantized SwiGLU's tile (quantizeSwiGLU) for gate and up of N / 2
/// rows each over K: 64 x 256 x 128, as many stages (up to 8) as fit.
GemmTileConfig chooseQuantizedSwiGLUTile(int64_t n, int64_t k);

/// Empty when `c` is valid, else why not (N not a multiple of blockN, K not
/// of blockK, shared memory over 227 KiB, ...).
std::string checkGemmTileConfig(const GemmTileConfig &c);

/// Dynamic shared memory the kernel needs: the stages (and quantizeSwiGLU's
/// 32 KiB exchange) plus 1024 bytes for aligning them to the 128B swizzle's
/// repeat (at most 226 KiB, leaving 1 KiB of the 227 for the static
/// barriers).
int64_t gemmDynamicSharedBytes(const GemmTileConfig &c);

/// Math warpgroups: blockM / 64, or 2 for quantizeSwiGLU (split over N).
int64_t gemmMathGroups(const GemmTileConfig &c);

/// Threads per CTA: 128 x (1 + math warpgroups).
int64_t gemmThreads(const GemmTileConfig &c);

/// Whether the kernel moves registers from the producer to the math
/// warpgroups (setmaxnreg 40 / 232): with two math warpgroups (384 threads,
/// so at most 168 registers each at launch) whose wgmma N is >= 112 (56 or
/// more accumulators per thread), TMA-fed. Below that the launch allocation
/// suffices and ptxas 13.0 drops the instructions itself (seen at blockN 96 and
/// below).
bool rebalancesRegisters(const GemmTileConfig &c);

/// The .entry of one kernel, named `name`, with parameters
/// (tensor map of A, tensor map of B (each a 128-byte CUtensorMap passed by
/// value, 64-byte aligned), [grouped: u64 block_expert, [gatherRows: u64
/// sorted_token,]] [fp8: u64 activation scales, u64 weight scales,] u64
/// out, [residual: u64 residual,] u64 M); with f32Activations (tensor map
/// of the weights, u64 activations, [grouped: u64 block_expert, [u64
/// sorted_token,]] u64 out, [u64 residual,] u64 M). With
/// splitGateUp the weights' map is two, the gate's then the up
/// projection's (dualN1: W1's then W2's), where one map of B (or of the
/// weights) would be; dualN1 adds u64 out2 after out; with activationRow0 a
/// last u64 row0.
/// `c` must be valid.
std::string emitGemmEntryPtx(const GemmTileConfig &c, const std::string &name);

/// The PTX module header for sm_90a (ISA 8.0) that entries follow: the
/// version and target, then ptxSharedDeclarations().
std::string ptxModuleHeader();

/// The module-scope declarations the entries use (their dynamic shared
/// memory), for appending entries to a module that has its own header.
std::string ptxSharedDeclarations();

} // namespace kiln::hopper

#endif // KILN_COMPILER_HOPPERGEMM_H
