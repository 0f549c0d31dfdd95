//===- Kernels.h - Kernel builders per op family ----------------*- C++ -*-===//
//
// Each builder emits one program of its kernel. Shapes that vary between
// launches of the same kernel (the number of rows) are not baked in: they
// determine the grid, so one kernel serves every layer and batch size.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_KERNELS_KERNELS_H
#define KILN_KERNELS_KERNELS_H

#include "kiln/Kernels/Program.h"

#include "mlir/IR/Types.h"
#include "llvm/ADT/StringRef.h"

namespace kiln::kernels {

/// Element-wise binary ops over a flat range; each program handles
/// `block` consecutive elements. Scalars: [total elements].
/// BiasAdd: lhs [..., n] + rhs [n] (rhs index = i mod n).
enum class ElementwiseKind { Add, Mul, SwiGLU, BiasAdd };
llvm::StringRef stringifyElementwiseKind(ElementwiseKind kind);
void emitElementwiseProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                            ElementwiseKind kind, int64_t block,
                            mlir::Type lhsType, mlir::Type rhsType,
                            mlir::Type outType, int64_t biasSize = 0);

/// out[m, n] = silu(x[m] . w_gate[n]) * (x[m] . w_up[n]): the gate and up
/// projections with the SwiGLU in the epilogue. One program per (row, tile
/// of tileN columns). Buffers: x, w_gate, w_up, out.
void emitGemmSwiGLUProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                           int64_t n, int64_t k, int64_t tileN,
                           llvm::ArrayRef<mlir::Type> types);

/// Two projections of the same input in one launch: columns [0, n1) of the
/// combined width come from w1 into out1, [n1, n1 + n2) from w2 into out2.
/// One program per (row, tile of tileN combined columns).
/// Buffers: x, w1, w2, out1, out2.
void emitGemmDualProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                         int64_t n1, int64_t n2, int64_t k, int64_t tileN,
                         llvm::ArrayRef<mlir::Type> types);
/// The column loops shared by the plain and FP8 dual GEMMs: the output
/// buffers are `out1` and `out1 + 1`; dot(which, row, col) computes one
/// element of projection `which` (col local to it).
void emitGemmDualSkeleton(
    ProgramBuilder &p, const ProgramArgs &args, int64_t n1, int64_t n2,
    int64_t tileN, unsigned out1, llvm::ArrayRef<mlir::Type> types,
    llvm::function_ref<mlir::Value(unsigned which, mlir::Value row,
                                   mlir::Value col)>
        dot);

/// acc + sum of the addend buffers [first, first + n) at `index` (loaded as
/// `type`): the epilogue of kernels that absorb residual adds.
mlir::Value addAddends(ProgramBuilder &p, const ProgramArgs &args,
                       unsigned first, unsigned n, mlir::Type type,
                       mlir::Value acc, mlir::Value index);

/// out[row, :] = table[ids[row], :] (zeros when the id is out of range).
/// One program per row. Buffers: table, ids, out.
void emitGatherRowsProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                           int64_t vocab, int64_t cols, mlir::Type tableType,
                           mlir::Type idType, mlir::Type outType);

/// RMSNorm of one row: out = x * rsqrt(mean(x^2) + eps) * w.
/// One program per row. Buffers: x, w, out.
/// With inputStride > 0, row r of x is read at r * inputStride + inputOffset
/// (a slice fused into the norm).
/// Output placement into a KV cache: row (b, s) of `seq` rows per batch is
/// written at row start[b] + s of a [batch, capacity, width] cache (rows past
/// the capacity are dropped). `startBuffer` < 0: start 0.
struct CachePlacement {
  int64_t capacity = 0; ///< 0: no placement, rows are written in order
  int64_t seq = 0;
  int startBuffer = -1;
  mlir::Type startType;
};

/// With inputStride > 0, row r of x is read at r * inputStride + inputOffset
/// (a slice fused into the norm). Buffers: x, w, [cache], [start], out.
void emitRMSNormProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                        int64_t cols, float eps, mlir::Type xType,
                        mlir::Type wType, mlir::Type outType,
                        int64_t inputStride = 0, int64_t inputOffset = 0,
                        const CachePlacement &place = {});

/// out[m, n] = sum_k x[m, k] * w[n, k]: one program per (row, tile of
/// `tileN` columns), fp32 accumulation. Buffers: x, w, out.
/// `numAddends` buffers of the output's shape and type (residuals, a shared
/// expert's output) bound after w are added in the epilogue.
void emitGemmProgram(mlir::OpBuilder &b, const ProgramArgs &args, int64_t n,
                     int64_t k, int64_t tileN, mlir::Type xType,
                     mlir::Type wType, mlir::Type outType,
                     unsigned numAddends = 0);

/// Copies row `(pid / seq) * seq + n - 1` of [batch * seq, cols] to row
/// pid / seq of [batch, cols], with n = scalars[0] (positions given).
void emitLastTokenProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                          int64_t seq, int64_t cols, mlir::Type inType,
                          mlir::Type outType);
/// out[row, :] = in[row, offset : offset + outCols]. One program per row.
void emitSliceProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                      int64_t inCols, int64_t offset, int64_t outCols,
                      mlir::Type inType, mlir::Type outType);

/// cache[b, start[b] + s, :] = values[b, s, :] (rows past `capacity` are
/// dropped). One program per (batch, seq) row. Buffers: cache, values,
/// [start], result (the cache's buffer).
void emitCacheWriteProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                           int64_t capacity, int64_t seq, int64_t width,
                           bool hasStart, llvm::ArrayRef<mlir::Type> types);

/// Rotary embedding parameters (see kiln.rope).
struct RopeParams {
  int64_t seq = 0, heads = 0, headDim = 0, rotaryDim = 0;
  double theta = 10000.0, scaling = 1.0;
  bool interleaved = false;
  double yarnFactor = 1.0, yarnLow = 0.0, yarnHigh = 0.0, mscale = 1.0;
  bool hasStart = false;
  /// Row r of the input starts at r * inputStride + inputOffset
  /// (inputStride 0: contiguous rows of headDim).
  int64_t inputStride = 0, inputOffset = 0;
  /// > 0: rows are written into a cache of this capacity at start + s (the
  /// cache buffer is bound after start).
  int64_t cacheCapacity = 0;
};
/// Rotates one row of rp.headDim values at position `pos` (f64): reads
/// element i through load(i), writes through store(i, value); elements past
/// rotaryDim are copied. Shared by the rope kernel and the kernels that fuse
/// rope (MLA's q rope).
void emitRotation(ProgramBuilder &p, const RopeParams &rp, mlir::Value pos,
                  llvm::function_ref<mlir::Value(mlir::Value)> load,
                  llvm::function_ref<void(mlir::Value, mlir::Value)> store);
/// One program per (batch, seq, head) row. Buffers: x, [start], out.
void emitRopeProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                     const RopeParams &p, mlir::Type xType,
                     mlir::Type startType, mlir::Type outType);

/// Attention parameters shared by the GQA and MLA kernels.
struct AttentionParams {
  int64_t seq = 0, kvLen = 0, heads = 0, kvHeads = 0;
  int64_t headDim = 0, valueDim = 0;
  double scale = 1.0;
  bool causal = true;
  bool hasStart = false;
  /// Rotary embedding of the query fused into the kernel (kiln-fuse-rope):
  /// each program rotates its query row at position start + s as it stages
  /// it. For MLA it applies to q_rope.
  bool qRotate = false;
  RopeParams qRope;
};
/// Flash-style GQA attention with an online softmax; the output row is the
/// accumulator, the score matrix never exists. One program per (batch,
/// seq, head). Buffers: q, k, v, [start], out, workspace (head_dim floats
/// per program: the staged, possibly rotated, query row).
void emitAttentionProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                          const AttentionParams &p, mlir::Type qType,
                          mlir::Type kType, mlir::Type vType,
                          mlir::Type startType, mlir::Type outType);

/// MLA in its absorbed form: W_UK folded into the query, attention over the
/// latent (kv_lora_rank) and the shared rope key, W_UV applied after.
/// headDim = qk_nope, valueDim = v_head_dim. One program per (batch, seq,
/// head). Buffers: q_nope, q_rope, latent, k_rope, kv_b, [start], out,
/// workspace (2 * rank + ropeDim floats per program: the absorbed query, the
/// latent accumulator, the staged q_rope row).
struct MLAParams : AttentionParams {
  int64_t ropeDim = 0, rank = 0;
  /// kv_b is e4m3 with 128x128 block scales (an extra buffer after kv_b),
  /// dequantized as it is read.
  bool kvbScale = false;
  /// The latent cache is e4m3 with f32 scales [batch, kvLen, latentTiles]
  /// (tiles of rank / latentTiles; an extra buffer after kv_b's scale): the
  /// FP8 latent cache (one power-of-two scale per token).
  bool latentScale = false;
  int64_t latentTiles = 0;
  /// Row stride of q_nope (0: contiguous rows of headDim); a slice of q
  /// fused into the kernel.
  int64_t qNopeStride = 0;
  /// q_rope's row r starts at r * qRopeStride + qRopeOffset (stride 0:
  /// contiguous rows of ropeDim): a slice of q read in place.
  int64_t qRopeStride = 0, qRopeOffset = 0;
  /// When > 0, the output row is also quantized in tiles of `quantAct`
  /// (valueDim % quantAct == 0): two more buffers, e4m3 values and scales,
  /// laid out as the [batch, seq, heads * valueDim] input of o_proj.
  int64_t quantAct = 0;
};
void emitMLAProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                    const MLAParams &p, llvm::ArrayRef<mlir::Type> types);
/// Floats of MLA absorbed's workspace per program: the reference's 2 * rank
/// + ropeDim, twice that at one position per row (decode kernels, seq = 1),
/// where the optimized CPU emitter keeps a head group's staged queries and
/// split-key partial states (compiler/lib/Codegen/CPU/AttentionEmitter.cpp).
inline int64_t mlaWorkspacePerProgram(int64_t seq, int64_t rank,
                                      int64_t ropeDim) {
  return (2 * rank + ropeDim) * (seq == 1 ? 2 : 1);
}
/// MLA in the naive form: kv = kv_b(latent) per head ([B, T, H, dn + dv],
/// computed by a GEMM before), scores q_nope . k_nope + q_rope . k_rope,
/// the output row is the online-softmax accumulator of v. One program per
/// (batch, seq, head). Buffers: q_nope, q_rope, kv, k_rope, [start], out,
/// workspace (ropeDim floats per program: the staged q_rope row).
void emitMLANaiveProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                         const MLAParams &p, llvm::ArrayRef<mlir::Type> types);

/// The experts' contiguous layout: every token has `slots` rows (top_k
/// routed + shared experts), grouped by expert (`experts` includes the
/// shared ones), each expert's segment padded to a multiple of `blockM`.
/// `rows()` is the worst case over all routings, so no token is dropped.
struct MoELayout {
  int64_t tokens = 0, slots = 0, experts = 0, blockM = 1;
  int64_t rows() const {
    int64_t used = tokens * slots;
    int64_t segments = experts < used ? experts : used;
    int64_t r = used + segments * (blockM - 1);
    return (r + blockM - 1) / blockM * blockM;
  }
  int64_t blocks() const { return rows() / blockM; }
};

/// MoE routing of one token (gate GEMM, scoring, correction bias, group
/// limited selection, top-k, normalization, scaling), then the token
/// permutation into the contiguous layout by the last program to finish.
/// Scalars: [tokens].
/// Buffers: x, router, [bias], sync (i32 [1], zero), ids (i32 [T, K]),
/// weights (f32 [T, K]), workspace (T x (2E + G) floats, then E + S i32
/// counters), sorted_token (i32 [rows]), block_expert (i32 [blocks]),
/// slot_row (i32 [T, K + S]).
struct MoERouteParams {
  int64_t hidden = 0, experts = 0, topK = 0, groups = 1, topkGroup = 1;
  bool sigmoid = false, groupTop2Sum = true, normTopK = true, hasBias = false;
  double scaling = 1.0;
  int64_t sharedExperts = 0, blockM = 1;
};
void emitMoERouteProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                         const MoERouteParams &p,
                         llvm::ArrayRef<mlir::Type> types);

/// The loop shared by the grouped expert GEMMs: program (block, column
/// tile) of a grid of blocks x ceil(n / tile); when the block belongs to an
/// expert, calls `row(r, token, expert, begin, end)` for each of its rows
/// that holds a token, with the program's columns [begin, end).
/// Buffers `sortedBuffer`, `sortedBuffer + 1`: sorted_token, block_expert.
void forEachGroupedRow(
    ProgramBuilder &p, const ProgramArgs &args, int64_t blockM, int64_t n,
    int64_t tile, unsigned sortedBuffer, llvm::ArrayRef<mlir::Type> types,
    llvm::function_ref<void(mlir::Value r, mlir::Value token,
                            mlir::Value expert, mlir::Value begin,
                            mlir::Value end)>
        row);

/// act[r, f] = silu(x[t] . w_gate[e, f]) * (x[t] . w_up[e, f]) over the
/// contiguous layout (t = sorted_token[r], e = block_expert[r / blockM]);
/// w_gate/w_up are pointer tables. One program per (block, tile of tileF).
/// Buffers: x, sorted_token, block_expert, w_gate table, w_up table, act.
void emitMoEUpProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                      int64_t hidden, int64_t ffn, int64_t blockM,
                      int64_t tileF, llvm::ArrayRef<mlir::Type> types);

/// rows[r, d] = act[r] . w_down[e, d] over the contiguous layout. One
/// program per (block, tile of tileD). Buffers: act, sorted_token,
/// block_expert, w_down table, rows.
void emitMoEDownProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                        int64_t hidden, int64_t ffn, int64_t blockM,
                        int64_t tileD, llvm::ArrayRef<mlir::Type> types);

/// y[t, d] = sum_{k < topK} w[t, k] * rows[slot_row[t, k], d]
///         + sum_{k >= topK} rows[slot_row[t, k], d] + addends.
/// One program per (token, tile of tileD). Buffers: rows, slot_row,
/// weights, [addends], y.
void emitMoECombineProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                           int64_t hidden, int64_t topK, int64_t slots,
                           int64_t tileD, llvm::ArrayRef<mlir::Type> types,
                           unsigned numAddends = 0);

//===----------------------------------------------------------------------===//
// FP8 block quantization (DeepSeek-V3): e4m3 values, fp32 scales; weights in
// 128x128 blocks, activations in dynamic 1 x act tiles along K.
//===----------------------------------------------------------------------===//

/// Quantizes `cols` values of a row (read through `value(i)`, f32) in tiles
/// of `act`: s = max(amax, 1e-4) / 448, q = e4m3(x / s). Writes q at
/// qBase + i and the scales at sBase + tile. Used by every producer that
/// fuses activation quantization.
/// With `pow2Scale`, s is rounded up to a power of two (so q x s is exact
/// in bf16); with `flushSubnormals`, values that round to an e4m3
/// subnormal are stored as zero (both: the FP8 latent cache).
void emitRowQuantize(ProgramBuilder &p, int64_t cols, int64_t act,
                     llvm::function_ref<mlir::Value(mlir::Value)> value,
                     mlir::Value q, mlir::Type qType, mlir::Value qBase,
                     mlir::Value s, mlir::Value sBase, bool pow2Scale = false,
                     bool flushSubnormals = false);

/// kiln.quantize: one program per row. Buffers: x, q, s.
void emitQuantizeProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                         int64_t cols, int64_t act, mlir::Type xType,
                         mlir::Type qType, bool pow2Scale = false,
                         bool flushSubnormals = false);
/// kiln.dequantize: one program per row. Buffers: q, s, x.
void emitDequantizeProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                           int64_t cols, int64_t act, mlir::Type qType,
                           mlir::Type xType);
/// RMSNorm fused with activation quantization: one program per row.
/// Buffers: x, w, y (f32), q, s.
void emitRMSNormQuantProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                             int64_t cols, float eps, int64_t act,
                             llvm::ArrayRef<mlir::Type> types);
/// SwiGLU fused with activation quantization: one program per row.
/// Buffers: gate, up, q, s.
void emitSwiGLUQuantProgram(mlir::OpBuilder &b, const ProgramArgs &args,
                            int64_t cols, int64_t act,
                            llvm::ArrayRef<mlir::Type> types);
/// Block-scaled FP8 GEMM: one program per (row, tile of tileN columns);
/// per K block of `act` (= the weight block's K), e4m3 products summed in
/// fp32, then scaled by x_scale[m, kb] * w_scale[n / wbN, kb].
/// Buffers: xq, w, xs, ws, out.
void emitGemmFP8Program(mlir::OpBuilder &b, const ProgramArgs &args,
                        int64_t n, int64_t k, int64_t tileN, int64_t act,
                        int64_t wbN, llvm::ArrayRef<mlir::Type> types,
                        unsigned numAddends = 0);
/// Two block-scaled FP8 projections of the same quantized input in one
/// launch (the FP8 form of gemm_dual). Buffers: xq, w1, w2, xs, ws1, ws2,
/// out1, out2.
void emitGemmDualFP8Program(mlir::OpBuilder &b, const ProgramArgs &args,
                            int64_t n1, int64_t n2, int64_t k, int64_t tileN,
                            int64_t act, int64_t wbN,
                            llvm::ArrayRef<mlir::Type> types);
/// Gate and up block-scaled FP8 GEMMs, the SwiGLU and the quantization of
/// its output in one launch: one program per (row, tile of tileN columns,
/// a multiple of act or the whole row). Buffers: xq, w_gate, w_up, xs,
/// w_gate scale, w_up scale, q, s, workspace (f32 [M, N]).
void emitGemmSwiGLUFP8Program(mlir::OpBuilder &b, const ProgramArgs &args,
                              int64_t n, int64_t k, int64_t tileN,
                              int64_t act, int64_t wbN,
                              llvm::ArrayRef<mlir::Type> types);

/// FP8 grouped experts, gate and up: one program per (block, tile of tileF
/// columns, a multiple of act); the SwiGLU output of each row's tile is
/// quantized in place. Buffers: xq, xs, sorted_token, block_expert, wg
/// table, wu table, wg-scale table, wu-scale table, act_q, act_s, workspace
/// (f32 [rows, F]).
void emitMoEUpFP8Program(mlir::OpBuilder &b, const ProgramArgs &args,
                         int64_t hidden, int64_t ffn, int64_t blockM,
                         int64_t tileF, int64_t act,
                         llvm::ArrayRef<mlir::Type> types);
/// FP8 grouped experts, down: one program per (block, tile of tileD
/// columns). Buffers: act_q, act_s, sorted_token, block_expert, wd table,
/// wd-scale table, rows (f32).
void emitMoEDownFP8Program(mlir::OpBuilder &b, const ProgramArgs &args,
                           int64_t hidden, int64_t ffn, int64_t blockM,
                           int64_t tileD, int64_t act,
                           llvm::ArrayRef<mlir::Type> types);

} // namespace kiln::kernels

#endif // KILN_KERNELS_KERNELS_H
