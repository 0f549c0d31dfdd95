//===- GemmKernels.h - Blocked GEMM kernels shared by CPU emitters -*- C++ -*-//
//
// The blocked AVX-512 and AMX-BF16 kernels of out[m, n] = epilogue(sum_k
// x[m, k] * w[n, k]) (weights [N, K] and activations [M, K], both
// K-contiguous), written as private helper functions of a kernel's entry:
// NAME.range (rows x columns of the combined column space) and per
// projection NAME.pI.avx512 / NAME.pI.amx (or NAME.pI.dpbf16). The GEMM emitter (GemmEmitter.cpp)
// calls NAME.range on its row blocks; the experts' emitter (MoeEmitter.cpp)
// on each expert's rows of the contiguous layout, with that expert's
// weights in the weight slots and the layout's row -> token map
// (GemmSpec::rowMap). docs/kernels.md, "CPU emitters", describes both.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_CODEGEN_CPU_GEMMKERNELS_H
#define KILN_CODEGEN_CPU_GEMMKERNELS_H

#include "Emitter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace kiln::cpu {

/// Rows from which a block takes the AMX path (one B tile of activations).
constexpr int64_t kAmxMinRows = 16;

/// One projection of the kernel: columns [offset, offset + n) of its
/// combined column space, from `weights` (gate and up for SwiGLU).
struct Projection {
  llvm::SmallVector<unsigned, 2> weights; ///< buffer indices
  mlir::Type wType, outType;
  int64_t n = 0, offset = 0;
  unsigned out = 0;
  llvm::SmallVector<unsigned> addends;
  /// FP8: the buffer of each weight's block scales, [ceil(n / wbN),
  /// ceil(K / act)] f32.
  llvm::SmallVector<unsigned, 2> wScales;
};

struct GemmSpec {
  unsigned x = 0;
  mlir::Type xType;
  int64_t k = 0, tileN = 1, combinedN = 0;
  bool swiglu = false;
  llvm::SmallVector<Projection, 2> projections;
  /// Rows of a layout (the experts' grouped GEMMs): buffer `rowMap` (of
  /// `rowMapType` integers) holds each row's token, -1 for a padding row,
  /// whose outputs are not written. With `gatherX` the activation row of
  /// row r is its token (clamped to 0 for padding), else r itself. -1: the
  /// rows are plain rows.
  int rowMap = -1;
  mlir::Type rowMapType;
  bool gatherX = false;
  /// FP8 (DeepSeek's block scales, docs/fp8.md): x and the weights are
  /// e4m3; buffer `xScale` holds x's scales per row and `act` of K
  /// ([rows, ceil(K / act)] f32), each weight its scales per block of wbN
  /// rows x act of K. Products are summed per K block of `act`, then
  /// promoted: acc += partial * (x scale * weight scale).
  bool fp8 = false;
  /// FP8 on a target with AVX-512-BF16 (and `act` % 32 == 0): the AVX-512
  /// kernel converts x and the weights to bf16 pairs (exact) and sums them
  /// by vdpbf16ps instead of decoding to f32 for FMAs.
  bool fp8Dot = false;
  /// FP8 on other AVX-512 targets (Intel's): x and the weights widened to
  /// f32 through f16 (VectorBuilder::e4m3ToF32Scaled, values x 2^-8, the
  /// promotion's scale x 2^16) for FMAs: exact, and on Sapphire Rapids 1.4x
  /// the weights per second of fp8Dot's table lookups.
  bool fp8Half = false;
  /// FP8 on Intel AVX-512-BF16 with AVX512-VBMI (Sapphire Rapids on; with
  /// fp8Dot set too, which does the tail of a block not a multiple of 64):
  /// fp8Dot's bf16 pairs from byte permutes (VectorBuilder::
  /// e4m3ToBF16Unpacked, 64 of K per step) instead of word permutes; at
  /// the speed of decoding, 1.15x fp8Half's weights per second there.
  bool fp8Perm = false;
  /// FP8 GEMV rows (fewer than a register block: decode) on fp8Perm's
  /// targets (64 of K per step): x's rows converted once per call into a
  /// bf16 buffer (exactly, times 2^110; per 64 of K the even elements, then
  /// the odd), each weight row by VectorBuilder::e4m3ToBF16Shifted (shifts
  /// and a mask, no shuffles; times 2^-120) beside them, the promotion's
  /// scale times 2^10: 1.4x fp8Perm's weights per second on Sapphire
  /// Rapids. e4m3 subnormal weights (below 2^-6, 1/28672 of a block's
  /// largest) read as zero there (docs/fp8.md); --fp8-exact-subnormals
  /// turns it off.
  bool fp8Shift = false;
  int64_t act = 0, wbN = 0;
  unsigned xScale = 0;
  /// FP8 SwiGLU: the f32 output (the projection's `out`, a workspace) is
  /// then quantized per row in tiles of `act` columns into e4m3 `quantQ`
  /// (of `quantType`) and f32 scales `quantS` ([rows, ceil(n / act)]), as
  /// the reference does (docs/fp8.md). -1: no output quantization.
  int quantQ = -1, quantS = -1;
  mlir::Type quantType;
  // Blocking (static).
  /// The vector instruction set, as the config names it: "avx512" (zmm),
  /// or "avx2" (AVX2 + FMA: each 16-lane vector is a pair of ymm, so the
  /// register blocks are smaller; the same sums in the same order).
  std::string isa = "avx512";
  int64_t regRows = 4, regCols = 4; ///< register block
  int64_t gemvCols = 8;             ///< columns of a streamed single row
  int64_t panel = 0;                ///< AVX-512 columns per L2 panel
  bool amx = false;
  /// AVX-512-BF16 instead of AMX (--cpu-gemm-precision=bf16 on a target
  /// with avx512bf16 but without AMX, such as AMD Zen 4 and 5): the same
  /// packed activations and C^T = W X^T, in zmm accumulators of 16 rows
  /// each, by vdpbf16ps with one weight pair broadcast per column.
  bool dpbf16 = false;
  /// With a bf16 tile path: blocks of fewer rows than the register block
  /// (decode) as a GEMV by vdpbf16ps over their rows rounded to bf16
  /// (GemmKernels.cpp, dpGemv) instead of the streamed fp32 block.
  bool dpGemv = false;
  int64_t dpCols = 6;   ///< weight rows per register block (gate + up: each)
  int64_t dpBlocks = 4; ///< 16-row blocks of activations per register block
  int64_t amxChunk = 0; ///< rows packed at a time (AMX, avx512-bf16)
  int64_t amxMinRows = kAmxMinRows; ///< blocks of fewer rows: AVX-512 fp32
  std::string amxOff; ///< why no bf16 tile path, when it was asked
  /// Whether blocks of >= amxMinRows rows take a packed bf16 path.
  bool packedPath() const { return amx || dpbf16; }
};

bool isStoredFloat(mlir::Type t);
/// Fails with `why` unless the operands are f32/bf16/f16 (FP8: e4m3 inputs
/// and weights, f32/bf16/f16 outputs, an activation tile of 16k).
mlir::LogicalResult checkOperandTypes(GemmSpec &s, std::string &why);

/// The static blocking of the AVX-512 and AMX kernels (docs/kernels.md).
void chooseBlocking(GemmSpec &s, const CpuCodegenOptions &options,
                    const CpuTarget &target);
/// The blocking as the config text shows it.
std::string describeBlocking(const GemmSpec &s);

/// Builds a private helper `void name(ptr x numBuffers, i64 r0, i64 r1,
/// i64 c0, i64 c1)` at the end of `module`.
mlir::func::FuncOp makeHelper(mlir::ModuleOp module, mlir::Location loc,
                              llvm::StringRef name, unsigned numBuffers);

/// The pieces of a helper's body: its builder (before the return), the
/// buffers and the block bounds.
struct Body {
  mlir::OpBuilder b;
  llvm::SmallVector<mlir::Value> buffers;
  mlir::Value r0, r1, c0, c1;
};
Body bodyOf(mlir::func::FuncOp fn, unsigned numBuffers);

void callHelper(mlir::OpBuilder &b, mlir::Location loc, mlir::func::FuncOp fn,
                llvm::ArrayRef<mlir::Value> buffers, mlir::Value r0,
                mlir::Value r1, mlir::Value c0, mlir::Value c1);

/// Emits the per-projection kernels and returns NAME.range: rows [r0, r1)
/// x combined columns [c0, c1), AMX or AVX-512-BF16 for >= amxMinRows rows
/// where the spec has it, else AVX-512.
mlir::func::FuncOp emitRangeHelper(mlir::ModuleOp module, mlir::Location loc,
                                   llvm::StringRef kernelName,
                                   const GemmSpec &s, unsigned numBuffers);

/// Program range [begin, end) of a grid of rows x `tiles` column tiles of
/// `tileN` (pid = row * tiles + tile, n columns in all) as at most three
/// blocks of rows [r0, r1) x columns [c0, c1): a partial first row, the
/// full rows, a partial last row; `run` is emitted once per block.
void forEachRowBlock(
    mlir::OpBuilder &b, mlir::Location loc, mlir::Value begin,
    mlir::Value end, int64_t tiles, int64_t tileN, int64_t n,
    llvm::function_ref<void(mlir::Value, mlir::Value, mlir::Value,
                            mlir::Value)>
        run);

} // namespace kiln::cpu

#endif // KILN_CODEGEN_CPU_GEMMKERNELS_H
