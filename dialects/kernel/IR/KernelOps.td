#ifndef KILN_KERNEL_OPS_TD
#define KILN_KERNEL_OPS_TD

include "kernel/IR/KernelDialect.td"
include "kernel/IR/KernelInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/CommonAttrConstraints.td"

def KK_Tensor : RankedTensorOf<[F32, F16, BF16, I32, I64, F8E4M3FN]>;

class KK_LaunchOp<string mnemonic, list<Trait> traits = [],
                  list<string> overrides = [], list<Trait> effects = [Pure]>
    : Op<KilnKernel_Dialect, mnemonic,
         !listconcat(traits, effects, [DeclareOpInterfaceMethods<KilnKernel_KernelOpInterface, overrides>])> {
  let hasVerifier = 1;
}

// A launch that updates persistent state in place (a KV cache, the MoE
// routing counter): it reads and writes memory, so it is never folded,
// merged or dropped as a pure op may be.
class KK_StatefulLaunchOp<string mnemonic, list<Trait> traits = [],
                          list<string> overrides = []>
    : KK_LaunchOp<mnemonic, traits, overrides,
                  [MemoryEffects<[MemRead, MemWrite]>]>;

def KK_GatherRowsOp : KK_LaunchOp<"gather_rows", [], ["getOperandValueRange", "getTokenRows"]> {
  let summary = "Row gather (embedding lookup); one program per row";
  let description = [{
    ```mlir
    %h = kiln_kernel.gather_rows %table, %ids {fused_ops = ["kiln.embedding"]}
        : (tensor<256x64xf32>, tensor<2x8xi32>) -> tensor<2x8x64xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$table, KK_Tensor:$ids, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = "$table `,` $ids attr-dict `:` functional-type(operands, results)";
}

def KK_LastTokenOp : KK_LaunchOp<"last_token", [],
    ["getLaunchScalars", "getNumKernelScalars", "getLaunchScalarRanges",
     "getTokenRows", "getTokenScalarSlots"]> {
  let summary = "Copies each batch row's last given position";
  let description = [{
    Input [batch, seq, width], result [batch, 1, width]; one program per
    input token, token-major, so the runtime runs only the tokens a request
    gives. Scalar 0 is the number of positions given per batch row (the
    runtime sets it; `seq` as compiled): the program of position `n - 1`
    copies its row, the others do nothing.

    ```mlir
    %l = kiln_kernel.last_token %h {fused_ops = ["kiln.last_token"]}
        : (tensor<2x8x64xf32>) -> tensor<2x1x64xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def KK_RMSNormOp : KK_StatefulLaunchOp<"rms_norm", [AttrSizedOperandSegments],
    ["getInPlaceOperand", "getOperandValueRange", "getTokenRows"]> {
  let summary = "RMSNorm; one program per row";
  let description = [{
    With `into(%cache at %start)`, row (b, s) is written to row
    `start[b] + s` of the cache (a state, [batch, capacity, width]) and the
    result is the updated cache (kiln-fuse-cache-writes).

    ```mlir
    %y = kiln_kernel.rms_norm %x, %w {epsilon = 1.0e-06 : f32, fused_ops = ["kiln.rms_norm"]}
        : (tensor<16x64xf32>, tensor<64xf32>) -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$weight,
                       Optional<KK_Tensor>:$cache, Optional<KK_Tensor>:$cache_start,
                       F32Attr:$epsilon,
                       DefaultValuedAttr<I64Attr, "0">:$input_stride,
                       DefaultValuedAttr<I64Attr, "0">:$input_offset,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`into` `(` $cache^ (`at` $cache_start^)? `)`)? attr-dict `:` functional-type(operands, results)
  }];
}

def KK_GemmOp : KK_LaunchOp<"gemm", [], ["getTokenRows"]> {
  let summary = "GEMM x W^T; one program per (row, tile of tile_n columns)";
  let description = [{
    `tile_n` is chosen by the tile heuristic (docs/kernels.md) when the op is
    created, and used as it is by every target's lowering. `addends` (same
    shape as the result; residuals) are added in the epilogue.

    ```mlir
    %y = kiln_kernel.gemm %x, %w {tile_n = 16 : i64, fused_ops = ["kiln.linear"]}
        : (tensor<16x64xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$weight,
                       Variadic<KK_Tensor>:$addends,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_n,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`add` `(` $addends^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
}

def KK_GemmSwiGLUOp : KK_LaunchOp<"gemm_swiglu", [], ["getTokenRows"]> {
  let summary = "Gate and up projections with the SwiGLU in the epilogue";
  let description = [{
    `silu(x W_gate^T) * (x W_up^T)` in one launch; one program per (row,
    tile of `tile_n` columns).

    ```mlir
    %a = kiln_kernel.gemm_swiglu %x, %wg, %wu {tile_n = 32 : i64, fused_ops = ["kiln.linear", "kiln.linear", "kiln.swiglu"]}
        : (tensor<16x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$w_gate, KK_Tensor:$w_up,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_n, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = "$input `,` $w_gate `,` $w_up attr-dict `:` functional-type(operands, results)";
}

def KK_GemmDualOp : KK_LaunchOp<"gemm_dual", [], ["getTokenRows"]> {
  let summary = "Two projections of the same input in one launch";
  let description = [{
    ```mlir
    %a, %b = kiln_kernel.gemm_dual %x, %w1, %w2 {tile_n = 64 : i64, fused_ops = ["kiln.linear", "kiln.linear"]}
        : (tensor<16x64xf32>, tensor<48x64xf32>, tensor<40x64xf32>) -> (tensor<16x48xf32>, tensor<16x40xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$w1, KK_Tensor:$w2,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_n, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result1, KK_Tensor:$result2);
  let assemblyFormat = "$input `,` $w1 `,` $w2 attr-dict `:` functional-type(operands, results)";
}

def KK_ElementwiseOp : KK_LaunchOp<"elementwise", [],
    ["getLaunchScalars", "getNumKernelScalars", "getLaunchScalarRanges", "getOperandValueRange",
     "getTokenRows"]> {
  let summary = "Element-wise binary op (add, mul, swiglu, bias_add) over blocks of elements";
  let description = [{
    `add`, `mul` and `swiglu` combine operands of the same size element by
    element; `bias_add` adds `rhs` ([n]) along the last dimension of `lhs`
    (element `i` reads `rhs[i mod n]`).

    ```mlir
    %y = kiln_kernel.elementwise "swiglu" %g, %u {block = 64 : i64, fused_ops = ["kiln.swiglu"]}
        : (tensor<16x128xf32>, tensor<16x128xf32>) -> tensor<16x128xf32>
    ```
  }];
  let arguments = (ins StrAttr:$kind, KK_Tensor:$lhs, KK_Tensor:$rhs,
                       ConfinedAttr<I64Attr, [IntPositive]>:$block,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = "$kind $lhs `,` $rhs attr-dict `:` functional-type(operands, results)";
}

def KK_SliceOp : KK_LaunchOp<"slice", [], ["getOperandValueRange", "getTokenRows"]> {
  let summary = "Copies a range of the last dimension; one program per row";
  let description = [{
    ```mlir
    %pe = kiln_kernel.slice %kv {offset = 32 : i64, fused_ops = ["kiln.slice"]}
        : (tensor<16x40xf32>) -> tensor<16x8xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, I64Attr:$offset, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def KK_RopeOp : KK_StatefulLaunchOp<"rope", [AttrSizedOperandSegments],
    ["getInPlaceOperand", "getOperandValueRange", "getTokenRows"]> {
  let summary = "Rotary embedding; one program per (batch, seq, head) row";
  let description = [{
    Attributes as `kiln.rope`. The optional `start` ([batch] integers) offsets
    positions for cached decoding. With `input_stride` > 0, row r of the
    input is read at `r * input_stride + input_offset` of the input buffer
    (a slice fused into the rope by `kiln-fuse-slices`); the result's shape
    gives [batch, seq, heads, head_dim]. With `into(%cache)`, row (b, s, h)
    is written to row (b, start[b] + s, h) of the cache and the result is the
    updated cache (kiln-fuse-cache-writes).

    ```mlir
    %r = kiln_kernel.rope %q {theta = 1.0e+04 : f32, rotary_dim = 16 : i64,
        interleaved = false, scaling_factor = 1.0 : f32, yarn_factor = 1.0 : f32,
        yarn_low = 0.0 : f32, yarn_high = 0.0 : f32, mscale = 1.0 : f32,
        fused_ops = ["kiln.rope"]} : (tensor<2x8x4x16xf32>) -> tensor<2x8x4x16xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, Optional<KK_Tensor>:$start,
                       Optional<KK_Tensor>:$cache,
                       F32Attr:$theta, I64Attr:$rotary_dim, BoolAttr:$interleaved,
                       F32Attr:$scaling_factor, F32Attr:$yarn_factor,
                       F32Attr:$yarn_low, F32Attr:$yarn_high, F32Attr:$mscale,
                       DefaultValuedAttr<I64Attr, "0">:$input_stride,
                       DefaultValuedAttr<I64Attr, "0">:$input_offset,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = [{
    $input (`start` `(` $start^ `)`)? (`into` `(` $cache^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
}

def KK_LatentCacheWriteOp : KK_StatefulLaunchOp<"latent_cache_write", [],
    ["getInPlaceOperandOf", "getOperandValueRange", "getTokenRows"]> {
  let summary = "MLA's compressed-KV rows into the two caches; one program per row";
  let description = [{
    Row r of `input` (kv_a_proj_with_mqa's output, rows of `input_stride`)
    holds the latent at `latent_offset` and the rope key at `rope_offset`.
    Each program RMS-normalizes its latent (weight `weight`, `epsilon`) into
    row start[b] + s of `latent_cache` [batch, capacity, rank], and rotates
    its rope key (`rotation`: the `rope` op's attributes) into the same row
    of `rope_cache` [batch, capacity, 1, rope_dim]. Both results are the
    updated caches (in place). Built by kiln-fuse-cache-writes from the two
    cache-writing launches that read the same rows.

    ```mlir
    %lat, %kr = kiln_kernel.latent_cache_write %kv, %w, %lc, %rc start(%st)
        {epsilon = 1.0e-06 : f32, input_stride = 40 : i64, latent_offset = 0 : i64,
         rope_offset = 32 : i64, rotation = {theta = 1.0e+04 : f32, rotary_dim = 8 : i64,
         interleaved = true, scaling_factor = 1.0 : f32, yarn_factor = 1.0 : f32,
         yarn_low = 0.0 : f32, yarn_high = 0.0 : f32, mscale = 1.0 : f32},
         fused_ops = ["kiln.rms_norm", "kiln.rope"]}
        : (tensor<1x2x40xf32>, tensor<32xf32>, tensor<1x16x32xf32>, tensor<1x16x1x8xf32>,
           tensor<1xi32>) -> (tensor<1x16x32xf32>, tensor<1x16x1x8xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$weight, KK_Tensor:$latent_cache,
                       KK_Tensor:$rope_cache, Optional<KK_Tensor>:$start,
                       F32Attr:$epsilon, ConfinedAttr<I64Attr, [IntPositive]>:$input_stride,
                       I64Attr:$latent_offset, I64Attr:$rope_offset,
                       DictionaryAttr:$rotation, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$latent, KK_Tensor:$rope);
  let assemblyFormat = [{
    $input `,` $weight `,` $latent_cache `,` $rope_cache (`start` `(` $start^ `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_AttentionOp : KK_LaunchOp<"attention", [], ["getOperandValueRange", "getTokenRows"]> {
  let summary = "Flash-style GQA attention; one program per (batch, seq, head)";
  let description = [{
    Online softmax over the keys each query sees (causal: keys up to
    `start + s`); the score matrix is never materialized. Each program
    stages its query row in `workspace` (head_dim floats), rotated when
    `q_rotation` carries the `rope` op's attributes (kiln-fuse-rope).

    ```mlir
    %o, %ws = kiln_kernel.attention %q, %k, %v {scale = 0.25 : f32, causal = true,
        fused_ops = ["kiln.attention"]}
        : (tensor<2x8x4x16xf32>, tensor<2x8x2x16xf32>, tensor<2x8x2x16xf32>)
        -> (tensor<2x8x4x16xf32>, tensor<64x16xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$q, KK_Tensor:$k, KK_Tensor:$v,
                       Optional<KK_Tensor>:$start, F32Attr:$scale,
                       BoolAttr:$causal, OptionalAttr<DictionaryAttr>:$q_rotation,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result, KK_Tensor:$workspace);
  let assemblyFormat = [{
    $q `,` $k `,` $v (`start` `(` $start^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
}

def KK_MLAAttentionOp : KK_LaunchOp<"mla_attention", [AttrSizedOperandSegments], ["getOperandValueRange", "getTokenRows"]> {
  let summary = "MLA in the absorbed form over the latent; one program per (batch, seq, head)";
  let description = [{
    W_UK (rows of `kv_b`) is folded into the query, attention runs over the
    latent and the shared rope key, W_UV is applied after. `workspace` holds
    2 x kv_lora_rank + rope_dim floats per program (the absorbed query, the
    latent accumulator and the staged q_rope row) and lives only during the
    launch. With `q_rope_stride` > 0, q_rope's row r is read at
    `r * q_rope_stride + q_rope_offset` of its buffer (q itself); with
    `q_rotation` (the `kiln_kernel.rope` attributes: theta, rotary_dim,
    interleaved, scaling_factor, yarn_factor, yarn_low, yarn_high, mscale)
    the kernel applies the rotary embedding to q_rope itself
    (kiln-fuse-rope). With `kv_latent_scale` ([batch, kv_len, tiles], f32,
    the tiles dividing the rank) the latent cache is e4m3, read as value x
    its tile's scale (the FP8 latent cache: one tile per token).

    ```mlir
    %o, %ws = kiln_kernel.mla_attention %qn, %qr, %c, %kr, %wkvb
        {scale = 0.1 : f32, causal = true, fused_ops = ["kiln.mla_attention"]}
        : (tensor<1x8x4x16xf32>, tensor<1x8x4x8xf32>, tensor<1x8x32xf32>,
           tensor<1x8x8xf32>, tensor<128x32xf32>)
        -> (tensor<1x8x4x16xf32>, tensor<32x72xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$q_nope, KK_Tensor:$q_rope, KK_Tensor:$kv_latent,
                       KK_Tensor:$k_rope, KK_Tensor:$kv_b, Optional<KK_Tensor>:$kv_b_scale,
                       Optional<KK_Tensor>:$kv_latent_scale, Optional<KK_Tensor>:$start,
                       DefaultValuedAttr<I64Attr, "0">:$q_nope_stride,
                       DefaultValuedAttr<I64Attr, "0">:$q_rope_stride,
                       DefaultValuedAttr<I64Attr, "0">:$q_rope_offset,
                       OptionalAttr<DictionaryAttr>:$q_rotation,
                       F32Attr:$scale, BoolAttr:$causal, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result, KK_Tensor:$workspace);
  let assemblyFormat = [{
    $q_nope `,` $q_rope `,` $kv_latent `,` $k_rope `,` $kv_b
    (`kv_b_scale` `(` $kv_b_scale^ `)`)?
    (`kv_latent_scale` `(` $kv_latent_scale^ `)`)? (`start` `(` $start^ `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_MLANaiveOp : KK_LaunchOp<"mla_naive", [], ["getOperandValueRange", "getTokenRows"]> {
  let summary = "MLA in the naive form over per-head keys and values; one program per (batch, seq, head)";
  let description = [{
    The prefill form of MLA: `kv` [batch, kv_len, heads, d_nope + d_v] is
    kv_b applied to the latent cache (a `gemm` before this launch); scores
    are q_nope . k_nope[h] + q_rope . k_rope (the shared rope key), the
    online softmax accumulates v[h] into the output row. For long prefills
    this costs fewer FLOPs than the absorbed form (`docs/kernels.md`).

    ```mlir
    %o, %ws = kiln_kernel.mla_naive %qn, %qr, %kv, %kr
        {scale = 0.1 : f32, causal = true, fused_ops = ["kiln.mla_attention"]}
        : (tensor<1x8x4x16xf32>, tensor<1x8x4x8xf32>, tensor<1x8x4x32xf32>,
           tensor<1x8x8xf32>) -> (tensor<1x8x4x16xf32>, tensor<32x8xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$q_nope, KK_Tensor:$q_rope, KK_Tensor:$kv,
                       KK_Tensor:$k_rope, Optional<KK_Tensor>:$start,
                       DefaultValuedAttr<I64Attr, "0">:$q_nope_stride,
                       DefaultValuedAttr<I64Attr, "0">:$q_rope_stride,
                       DefaultValuedAttr<I64Attr, "0">:$q_rope_offset,
                       OptionalAttr<DictionaryAttr>:$q_rotation,
                       F32Attr:$scale, BoolAttr:$causal, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result, KK_Tensor:$workspace);
  let assemblyFormat = [{
    $q_nope `,` $q_rope `,` $kv `,` $k_rope (`start` `(` $start^ `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_MLAAttentionQuantOp : KK_LaunchOp<"mla_attention_quant", [AttrSizedOperandSegments],
    ["getOperandValueRange", "getTokenRows"]> {
  let summary = "MLA (absorbed) fused with the quantization of its output";
  let description = [{
    As `mla_attention`, and each head's output row (a whole number of `act`
    tiles of o_proj's input row) is quantized in the same program: e4m3
    values and scales laid out as the [batch, seq, heads * v_head_dim] input
    of o_proj.
  }];
  let arguments = (ins KK_Tensor:$q_nope, KK_Tensor:$q_rope, KK_Tensor:$kv_latent,
                       KK_Tensor:$k_rope, KK_Tensor:$kv_b, Optional<KK_Tensor>:$kv_b_scale,
                       Optional<KK_Tensor>:$kv_latent_scale, Optional<KK_Tensor>:$start,
                       DefaultValuedAttr<I64Attr, "0">:$q_nope_stride,
                       DefaultValuedAttr<I64Attr, "0">:$q_rope_stride,
                       DefaultValuedAttr<I64Attr, "0">:$q_rope_offset,
                       OptionalAttr<DictionaryAttr>:$q_rotation,
                       F32Attr:$scale, BoolAttr:$causal,
                       ConfinedAttr<I64Attr, [IntPositive]>:$act, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result, KK_Tensor:$workspace, KK_Tensor:$quantized,
                      KK_Tensor:$quant_scale);
  let assemblyFormat = [{
    $q_nope `,` $q_rope `,` $kv_latent `,` $k_rope `,` $kv_b
    (`kv_b_scale` `(` $kv_b_scale^ `)`)?
    (`kv_latent_scale` `(` $kv_latent_scale^ `)`)? (`start` `(` $start^ `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_MoERouteOp : KK_StatefulLaunchOp<"moe_route", [],
    ["getLaunchScalars", "getNumKernelScalars", "getLaunchScalarRanges",
     "getOperandValueRange", "isStateOperand", "getTokenRows",
     "getTokenScalarSlots"]> {
  let summary = "Fused MoE routing and token permutation; one program per token";
  let description = [{
    Gate GEMM, scoring, correction bias (selection only), group-limited
    selection, top-k, normalization and scaling of each token, then the
    token permutation into the experts' contiguous layout, in one kernel.

    Each program routes its token (expert ids [tokens, top_k] i32, weights
    [tokens, top_k] f32, per-token workspace of 2 x experts + n_group floats
    followed by the permutation's counters). Then it increments `sync`, a
    one-element i32 counter in state memory (zero between launches); the
    program that brings it to `tokens` sees every token's choice and writes
    the permutation, then resets the counter:

    - every token has `top_k` routed slots and, with `shared_experts = s`,
      s more slots for the shared experts, numbered `experts .. experts+s-1`;
    - slots are grouped by expert in expert order, tokens in token order
      within a segment (deterministic), and each segment is padded to a
      multiple of `block_m` rows, so every block of `block_m` rows belongs
      to one expert and no token is dropped;
    - `sorted_token` [rows] gives the token of each row (-1 for padding),
      `block_expert` [rows / block_m] the expert of each block (-1 past the
      last segment), `slot_row` [tokens, top_k + s] the row of each slot.

    `rows` = tokens x (top_k + s) + min(experts + s, tokens x (top_k + s)) x
    (block_m - 1), rounded up to `block_m`: the worst case of the padding.

    Its run-time scalars are the tokens of the layout, the tokens a request
    gives (the programs that run), how many of each batch row's `seq_len`
    tokens it gives, and `seq_len` (tokens per batch row; the whole input
    when absent): only the given tokens are routed and permuted.

    ```mlir
    %ids, %w, %ws, %rows, %blocks, %slots = kiln_kernel.moe_route %x, %router
        sync(%sync) {top_k = 2 : i64, scoring = "softmax", n_group = 1 : i64,
        topk_group = 1 : i64, group_score = "top2_sum", norm_topk_prob = true,
        routed_scaling_factor = 1.0 : f32, block_m = 8 : i64,
        shared_experts = 0 : i64, fused_ops = ["kiln.moe"]}
        : (tensor<16x64xf32>, tensor<8x64xf32>, tensor<1xi32>)
        -> (tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x17xf32>,
            tensor<88xi32>, tensor<11xi32>, tensor<16x2xi32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$router,
                       Optional<KK_Tensor>:$correction_bias, KK_Tensor:$sync,
                       I64Attr:$top_k, StrAttr:$scoring, I64Attr:$n_group,
                       I64Attr:$topk_group, StrAttr:$group_score,
                       BoolAttr:$norm_topk_prob, F32Attr:$routed_scaling_factor,
                       ConfinedAttr<I64Attr, [IntPositive]>:$block_m,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$shared_experts,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$seq_len,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$ids, KK_Tensor:$weights, KK_Tensor:$workspace,
                      KK_Tensor:$sorted_token, KK_Tensor:$block_expert,
                      KK_Tensor:$slot_row);
  let extraClassDeclaration = [{
    /// The contiguous layout this routing writes.
    ::kiln::kernels::MoELayout getLayout();
  }];
  let assemblyFormat = [{
    $input `,` $router (`bias` `(` $correction_bias^ `)`)? `sync` `(` $sync `)`
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_MoEUpOp : KK_LaunchOp<"moe_up", [], ["getOperandValueRange"]> {
  let summary = "Grouped GEMM: the experts' gate and up projections with SwiGLU";
  let description = [{
    Over the contiguous layout of `moe_route`: row r of the result is
    silu(x[t] . w_gate[e]) * (x[t] . w_up[e]) with t = sorted_token[r] and e
    the expert of r's block; padding rows are not written. One program per
    (block of `block_m` rows, tile of `tile_f` columns): all the rows of a
    program use the same expert's weights. Expert weights are pointer
    tables (`kiln.weight_stack`), shared experts last.

    ```mlir
    %act = kiln_kernel.moe_up %x, %rows, %blocks, %wg, %wu
        {block_m = 8 : i64, tile_f = 32 : i64, fused_ops = ["kiln.moe"]}
        : (tensor<16x64xf32>, tensor<88xi32>, tensor<11xi32>,
           tensor<8x32x64xf32>, tensor<8x32x64xf32>) -> tensor<88x32xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$sorted_token,
                       KK_Tensor:$block_expert, KK_Tensor:$w_gate,
                       KK_Tensor:$w_up, ConfinedAttr<I64Attr, [IntPositive]>:$block_m,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_f,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = [{
    $input `,` $sorted_token `,` $block_expert `,` $w_gate `,` $w_up
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_MoEDownOp : KK_LaunchOp<"moe_down", [], ["getOperandValueRange"]> {
  let summary = "Grouped GEMM: the experts' down projection";
  let description = [{
    Row r of the result (f32, in the contiguous layout) is act[r] . w_down[e]
    for the expert e of r's block; padding rows are not written. One program
    per (block of `block_m` rows, tile of `tile_d` columns).

    ```mlir
    %ys = kiln_kernel.moe_down %act, %rows, %blocks, %wd
        {block_m = 8 : i64, tile_d = 32 : i64, fused_ops = ["kiln.moe"]}
        : (tensor<88x32xf32>, tensor<88xi32>, tensor<11xi32>, tensor<8x64x32xf32>)
        -> tensor<88x64xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$act, KK_Tensor:$sorted_token,
                       KK_Tensor:$block_expert, KK_Tensor:$w_down,
                       ConfinedAttr<I64Attr, [IntPositive]>:$block_m,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_d,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = [{
    $act `,` $sorted_token `,` $block_expert `,` $w_down attr-dict `:` functional-type(operands, results)
  }];
}

def KK_MoECombineOp : KK_LaunchOp<"moe_combine", [], ["getOperandValueRange", "getTokenRows"]> {
  let summary = "MoE combine: weighted sum of expert rows, shared experts, addends";
  let description = [{
    y[t, d] = sum_k weights[t, k] * rows[slot_row[t, k], d] over the routed
    slots, plus rows[slot_row[t, k], d] for the shared-expert slots (k >=
    top_k, weight 1), plus the `addends` (the residual, folded in by
    kiln-fuse-residual). One program per (token, tile of `tile_d` columns).

    ```mlir
    %y = kiln_kernel.moe_combine %ys, %slots, %w add(%res)
        {tile_d = 32 : i64, fused_ops = ["kiln.moe", "kiln.add"]}
        : (tensor<88x64xf32>, tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x64xf32>)
        -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$rows, KK_Tensor:$slot_row, KK_Tensor:$weights,
                       Variadic<KK_Tensor>:$addends,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_d,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = [{
    $rows `,` $slot_row `,` $weights (`add` `(` $addends^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
}

def KK_CacheWriteOp : KK_StatefulLaunchOp<"cache_write", [], ["getInPlaceOperand", "getOperandValueRange", "getTokenRows"]> {
  let summary = "Writes rows into a cache in place; one program per (batch, seq) row";
  let description = [{
    The result is the cache's buffer (updated in place).

    ```mlir
    %c2 = kiln_kernel.cache_write %c, %v start(%pos) {fused_ops = ["kiln.cache_update"]}
        : (tensor<1x16x32xf32>, tensor<1x1x32xf32>, tensor<1xi32>) -> tensor<1x16x32xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$cache, KK_Tensor:$values, Optional<KK_Tensor>:$start,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = [{
    $cache `,` $values (`start` `(` $start^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
}

//===----------------------------------------------------------------------===//
// FP8 block quantization
//===----------------------------------------------------------------------===//

def KK_QuantizeOp : KK_LaunchOp<"quantize", [], ["getTokenRows"]> {
  let summary = "Dynamic activation quantization, [1, act] tiles; one program per row";
  let description = [{
    `kiln.quantize`'s scales (`pow2_scale`: rounded up to a power of two;
    `flush_subnormals`: values that round to an e4m3 subnormal stored as 0).

    ```mlir
    %q, %s = kiln_kernel.quantize %x {act = 128 : i64, fused_ops = ["kiln.quantize"]}
        : (tensor<16x256xf32>) -> (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$input, ConfinedAttr<I64Attr, [IntPositive]>:$act,
                       StrArrayAttr:$fused_ops,
                       DefaultValuedAttr<BoolAttr, "false">:$pow2_scale,
                       DefaultValuedAttr<BoolAttr, "false">:$flush_subnormals);
  let results = (outs KK_Tensor:$result, KK_Tensor:$scale);
  let extraClassDeclaration = [{
    /// Whether either scale flag is set (the quantization the fusions fold
    /// into a producer has neither).
    bool hasScaleFlags() { return getPow2Scale() || getFlushSubnormals(); }
  }];
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def KK_DequantizeOp : KK_LaunchOp<"dequantize", [], ["getTokenRows"]> {
  let summary = "e4m3 x tile scale -> f32; one program per row";
  let description = [{
    ```mlir
    %x = kiln_kernel.dequantize %q, %s {act = 128 : i64, fused_ops = ["kiln.dequantize"]}
        : (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>) -> tensor<16x256xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$scale,
                       ConfinedAttr<I64Attr, [IntPositive]>:$act, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = "$input `,` $scale attr-dict `:` functional-type(operands, results)";
}

def KK_RMSNormQuantOp : KK_LaunchOp<"rms_norm_quant", [], ["getTokenRows"]> {
  let summary = "RMSNorm fused with activation quantization; one program per row";
  let description = [{
    Produces the normalized row (f32, for consumers that need it unquantized,
    such as the MoE router) and its e4m3 quantization with tile scales.

    ```mlir
    %y, %q, %s = kiln_kernel.rms_norm_quant %x, %w {epsilon = 1.0e-06 : f32, act = 128 : i64,
        fused_ops = ["kiln.rms_norm", "kiln.quantize"]}
        : (tensor<16x256xf32>, tensor<256xf32>)
        -> (tensor<16x256xf32>, tensor<16x256xf8E4M3FN>, tensor<16x2xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$weight, F32Attr:$epsilon,
                       ConfinedAttr<I64Attr, [IntPositive]>:$act, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result, KK_Tensor:$quantized, KK_Tensor:$scale);
  let assemblyFormat = "$input `,` $weight attr-dict `:` functional-type(operands, results)";
}

def KK_SwiGLUQuantOp : KK_LaunchOp<"swiglu_quant", [], ["getTokenRows"]> {
  let summary = "SwiGLU fused with activation quantization; one program per row";
  let description = [{
    ```mlir
    %q, %s = kiln_kernel.swiglu_quant %g, %u {act = 128 : i64,
        fused_ops = ["kiln.swiglu", "kiln.quantize"]}
        : (tensor<16x320xf32>, tensor<16x320xf32>) -> (tensor<16x320xf8E4M3FN>, tensor<16x3xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$gate, KK_Tensor:$up,
                       ConfinedAttr<I64Attr, [IntPositive]>:$act, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result, KK_Tensor:$scale);
  let assemblyFormat = "$gate `,` $up attr-dict `:` functional-type(operands, results)";
}

def KK_GemmFP8Op : KK_LaunchOp<"gemm_fp8", [], ["getTokenRows"]> {
  let summary = "Block-scaled FP8 GEMM; one program per (row, tile of tile_n columns)";
  let description = [{
    e4m3 products summed in fp32 per `act`-wide K block, then promoted with
    the activation scale and the weight's block scale.

    ```mlir
    %y = kiln_kernel.gemm_fp8 %xq, %w, %xs, %ws {tile_n = 64 : i64, act = 128 : i64,
        weight_block_n = 128 : i64, fused_ops = ["kiln.linear"]}
        : (tensor<16x256xf8E4M3FN>, tensor<512x256xf8E4M3FN>, tensor<16x2xf32>, tensor<4x2xf32>)
        -> tensor<16x512xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$weight, KK_Tensor:$input_scale,
                       KK_Tensor:$weight_scale, Variadic<KK_Tensor>:$addends,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_n,
                       ConfinedAttr<I64Attr, [IntPositive]>:$act,
                       ConfinedAttr<I64Attr, [IntPositive]>:$weight_block_n,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = [{
    $input `,` $weight `,` $input_scale `,` $weight_scale (`add` `(` $addends^ `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_GemmDualFP8Op : KK_LaunchOp<"gemm_dual_fp8", [], ["getTokenRows"]> {
  let summary = "Two block-scaled FP8 projections of one quantized input";
  let description = [{
    The FP8 form of `gemm_dual` (kiln-merge-projections): columns [0, n1) of
    the combined width come from `w1`, the rest from `w2`; both read the same
    e4m3 input and its tile scales once per program.

    ```mlir
    %a, %b = kiln_kernel.gemm_dual_fp8 %xq, %w1, %w2, %xs, %s1, %s2
        {tile_n = 16 : i64, act = 128 : i64, weight_block_n = 128 : i64,
         fused_ops = ["kiln.linear", "kiln.linear"]}
        : (tensor<16x256xf8E4M3FN>, tensor<200x256xf8E4M3FN>, tensor<64x256xf8E4M3FN>,
           tensor<16x2xf32>, tensor<2x2xf32>, tensor<1x2xf32>)
        -> (tensor<16x200xf32>, tensor<16x64xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$w1, KK_Tensor:$w2,
                       KK_Tensor:$input_scale, KK_Tensor:$w1_scale, KK_Tensor:$w2_scale,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_n,
                       ConfinedAttr<I64Attr, [IntPositive]>:$act,
                       ConfinedAttr<I64Attr, [IntPositive]>:$weight_block_n,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result1, KK_Tensor:$result2);
  let assemblyFormat = [{
    $input `,` $w1 `,` $w2 `,` $input_scale `,` $w1_scale `,` $w2_scale
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_GemmSwiGLUFP8Op : KK_LaunchOp<"gemm_swiglu_fp8", [], ["getTokenRows"]> {
  let summary = "FP8 gate and up GEMMs, SwiGLU and output quantization";
  let description = [{
    quantize(silu(x . w_gate) * (x . w_up)) with block-scaled e4m3 operands,
    in one launch (kiln-fuse-gated-mlp): the gate and up projections of an
    FP8 MLP and the quantization the down projection needs. One program per
    (row, `tile_n` columns); `tile_n` is a multiple of `act` (or the whole
    row) so a program quantizes whole tiles. Results: e4m3 values, their
    scales, and an f32 workspace for the SwiGLU output.

    ```mlir
    %q, %s, %ws = kiln_kernel.gemm_swiglu_fp8 %xq, %wg, %wu, %xs, %sg, %su
        {tile_n = 128 : i64, act = 128 : i64, weight_block_n = 128 : i64,
         fused_ops = ["kiln.linear", "kiln.linear", "kiln.swiglu", "kiln.quantize"]}
        : (tensor<16x256xf8E4M3FN>, tensor<256x256xf8E4M3FN>, tensor<256x256xf8E4M3FN>,
           tensor<16x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>)
        -> (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>, tensor<16x256xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$w_gate, KK_Tensor:$w_up,
                       KK_Tensor:$input_scale, KK_Tensor:$w_gate_scale,
                       KK_Tensor:$w_up_scale,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_n,
                       ConfinedAttr<I64Attr, [IntPositive]>:$act,
                       ConfinedAttr<I64Attr, [IntPositive]>:$weight_block_n,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result, KK_Tensor:$scale, KK_Tensor:$workspace);
  let assemblyFormat = [{
    $input `,` $w_gate `,` $w_up `,` $input_scale `,` $w_gate_scale `,` $w_up_scale
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_MoEUpFP8Op : KK_LaunchOp<"moe_up_fp8", [], ["getOperandValueRange"]> {
  let summary = "Grouped FP8 GEMM: gate and up projections, SwiGLU and quantization";
  let description = [{
    The block-scaled form of `moe_up` over the same contiguous layout. One
    program per (block of `block_m` rows, `tile_f` columns); `tile_f` is a
    multiple of `act` (or the whole row) so each program quantizes whole
    tiles of its SwiGLU output. Results: e4m3 activations [rows, ffn], their
    scales [rows, ffn / act], and an f32 workspace holding the SwiGLU output
    during the launch.

    ```mlir
    %q, %s, %ws = kiln_kernel.moe_up_fp8 %xq, %xs, %rows, %blocks, %wg, %wu, %wgs, %wus
        {block_m = 8 : i64, tile_f = 128 : i64, act = 128 : i64, fused_ops = ["kiln.moe"]}
        : (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>, tensor<88xi32>, tensor<11xi32>,
           tensor<8x320x256xf8E4M3FN>, tensor<8x320x256xf8E4M3FN>,
           tensor<8x3x2xf32>, tensor<8x3x2xf32>)
        -> (tensor<88x320xf8E4M3FN>, tensor<88x3xf32>, tensor<88x320xf32>)
    ```
  }];
  let arguments = (ins KK_Tensor:$input_q, KK_Tensor:$input_scale,
                       KK_Tensor:$sorted_token, KK_Tensor:$block_expert,
                       KK_Tensor:$w_gate, KK_Tensor:$w_up, KK_Tensor:$w_gate_scale,
                       KK_Tensor:$w_up_scale,
                       ConfinedAttr<I64Attr, [IntPositive]>:$block_m,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_f,
                       ConfinedAttr<I64Attr, [IntPositive]>:$act, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result, KK_Tensor:$scale, KK_Tensor:$workspace);
  let assemblyFormat = [{
    $input_q `,` $input_scale `,` $sorted_token `,` $block_expert `,` $w_gate `,` $w_up `,`
    $w_gate_scale `,` $w_up_scale attr-dict `:` functional-type(operands, results)
  }];
}

def KK_MoEDownFP8Op : KK_LaunchOp<"moe_down_fp8", [], ["getOperandValueRange"]> {
  let summary = "Grouped FP8 GEMM: the experts' down projection";
  let description = [{
    The block-scaled form of `moe_down`: f32 rows in the contiguous layout.

    ```mlir
    %ys = kiln_kernel.moe_down_fp8 %aq, %as, %rows, %blocks, %wd, %wds
        {block_m = 8 : i64, tile_d = 64 : i64, act = 128 : i64, fused_ops = ["kiln.moe"]}
        : (tensor<88x320xf8E4M3FN>, tensor<88x3xf32>, tensor<88xi32>, tensor<11xi32>,
           tensor<8x256x320xf8E4M3FN>, tensor<8x2x3xf32>) -> tensor<88x256xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$act_q, KK_Tensor:$act_scale,
                       KK_Tensor:$sorted_token, KK_Tensor:$block_expert,
                       KK_Tensor:$w_down, KK_Tensor:$w_down_scale,
                       ConfinedAttr<I64Attr, [IntPositive]>:$block_m,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_d,
                       ConfinedAttr<I64Attr, [IntPositive]>:$act, StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = [{
    $act_q `,` $act_scale `,` $sorted_token `,` $block_expert `,` $w_down `,` $w_down_scale
    attr-dict `:` functional-type(operands, results)
  }];
}

def KK_ViewOp : Op<KilnKernel_Dialect, "view", [Pure]> {
  let summary = "Reinterprets a buffer with another shape (no launch)";
  let description = [{
    The result aliases the operand's buffer: all of it, or a prefix (fewer
    elements: the first positions of a batch-1 cache).

    ```mlir
    %v = kiln_kernel.view %x : (tensor<2x8x64xf32>) -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

#endif // KILN_KERNEL_OPS_TD
