#ifndef KILN_OPS_TD
#define KILN_OPS_TD

include "kiln/IR/KilnDialect.td"
include "kiln/IR/KilnAttrs.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"

//===----------------------------------------------------------------------===//
// Weights and data movement
//===----------------------------------------------------------------------===//

def Kiln_WeightOp : Kiln_Op<"weight"> {
  let summary = "A named model weight";
  let description = [{
    Refers to a tensor of the model's checkpoint by name. The compiler
    resolves the name (in the checkpoint named by the module's `kiln.weights`
    attribute, or the Hugging Face checkpoint being imported), checks dtype
    and shape, and either references the file from the plan or packs it.

    ```mlir
    %w = kiln.weight "model.layers.0.mlp.up_proj.weight" : tensor<128x64xf32>
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

def Kiln_EmbeddingOp : Kiln_Op<"embedding"> {
  let summary = "Gathers rows of an embedding table by token id";
  let description = [{
    `result[..., :] = table[tokens[...], :]`. The result has the tokens'
    shape with the table's row width appended. Token ids outside
    `[0, vocab)` produce zero rows.

    ```mlir
    %h = kiln.embedding %table, %tokens
        : (tensor<256x64xf32>, tensor<2x8xi32>) -> tensor<2x8x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$table, Kiln_IndexTensor:$tokens);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$table `,` $tokens attr-dict `:` functional-type(operands, results)";
}

def Kiln_ReshapeOp : Kiln_Op<"reshape"> {
  let summary = "Reinterprets a tensor with a new shape of the same size";
  let description = [{
    Row-major reshape; no data moves (the kernel level turns it into a view).

    ```mlir
    %q4 = kiln.reshape %q : (tensor<2x8x64xf32>) -> tensor<2x8x4x16xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$input);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_WeightStackOp : Kiln_Op<"weight_stack"> {
  let summary = "Named weights of equal shape, viewed as one stacked tensor";
  let description = [{
    Stacks checkpoint tensors (one per expert, as Hugging Face stores them)
    along a new leading dimension without copying them: the plan binds a
    table of pointers, one per tensor, mapped from the checkpoint.

    ```mlir
    %w = kiln.weight_stack ["experts.0.w1.weight", "experts.1.w1.weight"]
        : tensor<2x32x64xf32>
    ```
  }];
  let arguments = (ins StrArrayAttr:$names);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$names attr-dict `:` type($result)";
}

def Kiln_StateOp : Kiln_Op<"state"> {
  let summary = "The current value of a named persistent state (KV cache)";
  let description = [{
    State persists across calls of the plan's functions (prefill writes a
    KV cache, decode reads and extends it); every function that names the
    same state shares its buffer. States start zeroed. Besides KV caches,
    the lowering keeps kernels' self-resetting counters in state (the MoE
    routing's `sync`, i32).

    ```mlir
    %c = kiln.state "model.layers.0.self_attn.kv_cache" : tensor<1x16x32xf32>
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

def Kiln_CacheUpdateOp : Kiln_Op<"cache_update"> {
  let summary = "Writes new rows into a cache at a per-batch position";
  let description = [{
    `cache` is [batch, capacity, ...], `values` is [batch, seq, ...] with the
    same trailing dimensions; the result is `cache` with rows
    `start[b] + s` replaced by `values[b, s]` (rows past the capacity are
    dropped). `start` is optional ([batch] integers, 0 when absent). An
    e4m3 cache takes e4m3 values (a `kiln.quantize` result; its scales go
    to a second, f32 cache updated the same way). The
    update happens in place: `cache` must come from `kiln.state` and have no
    other use after this op.

    ```mlir
    %c2 = kiln.cache_update %c, %latent start(%pos)
        : (tensor<1x16x32xf32>, tensor<1x1x32xf32>, tensor<1xi32>) -> tensor<1x16x32xf32>
    ```
  }];
  let arguments = (ins Kiln_CacheTensor:$cache, Kiln_CacheTensor:$values,
                       Optional<Kiln_IndexTensor>:$start);
  let results = (outs Kiln_CacheTensor:$result);
  let assemblyFormat = [{
    $cache `,` $values (`start` `(` $start^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
}

def Kiln_CastOp : Kiln_Op<"cast"> {
  let summary = "Element type conversion";
  let description = [{
    Converts every element: floats round to nearest even; conversion to
    e4m3 (f8E4M3FN) saturates at +-448.

    ```mlir
    %q = kiln.cast %x : (tensor<4x128xf32>) -> tensor<4x128xf8E4M3FN>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$input);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_SliceOp : Kiln_Op<"slice"> {
  let summary = "A contiguous range of the last dimension";
  let description = [{
    `result[..., i] = input[..., offset + i]` for `i < size` (the result's
    last dimension).

    ```mlir
    %pe = kiln.slice %kv {offset = 32 : i64} : (tensor<2x8x40xf32>) -> tensor<2x8x8xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$input, I64Attr:$offset);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_LastTokenOp : Kiln_Op<"last_token"> {
  let summary = "Each batch row's last given position";
  let description = [{
    `result[b, 0, :] = input[b, n - 1, :]`, where `n` is the number of
    positions the request gives: the run-time size of the function's
    sequence dimension (`kiln.dims` symbol 1 of its token input), the
    compiled size when that dimension is static. Language models return the
    logits of this position only (`kiln-compile --logits=last`, the default).

    ```mlir
    %last = kiln.last_token %h : (tensor<2x8x64xf32>) -> tensor<2x1x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Normalization, projections, element-wise
//===----------------------------------------------------------------------===//

def Kiln_RMSNormOp : Kiln_Op<"rms_norm"> {
  let summary = "Root-mean-square normalization over the last dimension";
  let description = [{
    `y = x / sqrt(mean(x^2, axis=-1) + epsilon) * weight`, computed in fp32.

    ```mlir
    %y = kiln.rms_norm %x, %w {epsilon = 1.0e-06 : f32}
        : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, Kiln_FloatTensor:$weight,
                       DefaultValuedAttr<F32Attr, "1.0e-6">:$epsilon);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` functional-type(operands, results)";
}

def Kiln_LinearOp : Kiln_Op<"linear", [AttrSizedOperandSegments]> {
  let summary = "Projection by a [out, in] weight: y = x W^T";
  let description = [{
    `y[..., n] = sum_k x[..., k] * weight[n, k]` with fp32 accumulation; the
    weight has the Hugging Face / PyTorch `[out_features, in_features]` layout.

    Block-quantized form (`quant` set): `input` is e4m3 with `input_scale`
    ([..., ceil(K / act)]) from `kiln.quantize`, `weight` is e4m3 with
    `weight_scale` ([ceil(N / 128), ceil(K / 128)]); products accumulate in
    fp32 per K block, then both scales are applied (DeepSeek's promotion).

    ```mlir
    %y = kiln.linear %x, %w
        : (tensor<2x8x64xf32>, tensor<128x64xf32>) -> tensor<2x8x128xf32>
    %z = kiln.linear %xq, %wq scales(%xs, %ws)
        {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>}
        : (tensor<16x256xf8E4M3FN>, tensor<512x256xf8E4M3FN>, tensor<16x2xf32>,
           tensor<4x2xf32>) -> tensor<16x512xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$input, Kiln_AnyTensor:$weight,
                       Optional<Kiln_FloatTensor>:$input_scale,
                       Optional<Kiln_FloatTensor>:$weight_scale,
                       OptionalAttr<Kiln_BlockQuantAttr>:$quant);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`scales` `(` $input_scale^ `,` $weight_scale `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def Kiln_QuantizeOp : Kiln_Op<"quantize"> {
  let summary = "Dynamic activation quantization in [1, act] tiles along K";
  let description = [{
    Per row and per `act`-wide tile of the last dimension (the last tile may
    be partial): `s = max(amax, 1e-4) / 448`, `q = e4m3(x / s)` rounded to
    nearest-even and saturated at 448. With `pow2_scale` the scale is the
    smallest power of two at least that (an exponent only, UE8M0-style), so
    `q * s` is exact in bf16; with `flush_subnormals` a value that rounds to
    an e4m3 subnormal (|x / s| < 15 x 2^-10, below 2^-6 s) is stored as
    zero. Both: the FP8 MLA latent cache's form (whole rows, act = the
    rank). The compiler fuses it into the kernel that produces `input` where
    it can (RMSNorm, SwiGLU; not with either flag).

    ```mlir
    %q, %s = kiln.quantize %x {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>}
        : (tensor<16x256xf32>) -> (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>)
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, Kiln_BlockQuantAttr:$quant,
                       DefaultValuedAttr<BoolAttr, "false">:$pow2_scale,
                       DefaultValuedAttr<BoolAttr, "false">:$flush_subnormals);
  let results = (outs Kiln_AnyTensor:$result, Kiln_FloatTensor:$scale);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_DequantizeOp : Kiln_Op<"dequantize"> {
  let summary = "x = e4m3 value * its tile's scale";
  let description = [{
    The inverse of `kiln.quantize` (same tile layout).

    ```mlir
    %x = kiln.dequantize %q, %s {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>}
        : (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>) -> tensor<16x256xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$input, Kiln_FloatTensor:$scale,
                       Kiln_BlockQuantAttr:$quant);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$input `,` $scale attr-dict `:` functional-type(operands, results)";
}

def Kiln_SwiGLUOp : Kiln_Op<"swiglu"> {
  let summary = "SwiGLU gating: silu(gate) * up";
  let description = [{
    `y = gate * sigmoid(gate) * up`, element-wise over equal shapes.

    ```mlir
    %a = kiln.swiglu %g, %u
        : (tensor<2x8x128xf32>, tensor<2x8x128xf32>) -> tensor<2x8x128xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$gate, Kiln_FloatTensor:$up);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` functional-type(operands, results)";
}

def Kiln_AddOp : Kiln_Op<"add", [Commutative]> {
  let summary = "Element-wise sum of two tensors of the same shape";
  let description = [{
    Used for residual connections.

    ```mlir
    %h2 = kiln.add %h, %d : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$lhs, Kiln_FloatTensor:$rhs);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)";
}

def Kiln_BiasAddOp : Kiln_Op<"bias_add"> {
  let summary = "Adds a bias vector along the last dimension";
  let description = [{
    `result[..., n] = input[..., n] + bias[n]`: the bias of an `nn.Linear`
    (Hugging Face `X.bias`, `[out_features]`), applied after `kiln.linear`.
    The bias may be stored in any float type; the result has the input's
    type.

    ```mlir
    %y = kiln.bias_add %x, %b : (tensor<2x8x64xf32>, tensor<64xbf16>) -> tensor<2x8x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, Kiln_FloatTensor:$bias);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$input `,` $bias attr-dict `:` functional-type(operands, results)";
}

def Kiln_MulOp : Kiln_Op<"mul", [Commutative]> {
  let summary = "Element-wise product of two tensors of the same shape";
  let description = [{
    ```mlir
    %p = kiln.mul %a, %b : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$lhs, Kiln_FloatTensor:$rhs);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)";
}

//===----------------------------------------------------------------------===//
// Positional encoding and attention
//===----------------------------------------------------------------------===//

def Kiln_RopeOp : Kiln_Op<"rope"> {
  let summary = "Rotary position embedding over the first rotary_dim channels";
  let description = [{
    Rotates channel pairs of `input` ([batch, seq, heads, head_dim]) at
    position `p = start[b] + s` (`start` is optional, [batch] integers; 0
    when absent) by angle `p * inv_freq[i]`, with
    `inv_freq[i] = theta^(-2i / rotary_dim) / scaling_factor`.
    YaRN (`yarn_factor > 1`) blends interpolated and extrapolated
    frequencies with a linear ramp between correction dimensions
    `yarn_low` and `yarn_high`, and scales cos/sin by `mscale`.
    `interleaved = true` rotates channel pairs (2i, 2i+1) (DeepSeek: the
    Hugging Face implementation de-interleaves q and k alike, which leaves
    every q.k product unchanged); otherwise pairs (i, i + rotary_dim/2)
    (Llama's rotate_half).

    ```mlir
    %r = kiln.rope %q {theta = 10000.0 : f32, rotary_dim = 16 : i64}
        : (tensor<2x8x4x16xf32>) -> tensor<2x8x4x16xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, Optional<Kiln_IndexTensor>:$start,
                       F32Attr:$theta, I64Attr:$rotary_dim,
                       DefaultValuedAttr<BoolAttr, "false">:$interleaved,
                       DefaultValuedAttr<F32Attr, "1.0">:$scaling_factor,
                       DefaultValuedAttr<F32Attr, "1.0">:$yarn_factor,
                       DefaultValuedAttr<F32Attr, "0.0">:$yarn_low,
                       DefaultValuedAttr<F32Attr, "0.0">:$yarn_high,
                       DefaultValuedAttr<F32Attr, "1.0">:$mscale);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`start` `(` $start^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
}

def Kiln_AttentionOp : Kiln_Op<"attention"> {
  let summary = "Scaled dot-product attention with grouped KV heads (GQA)";
  let description = [{
    `q` is [batch, seq, q_heads, head_dim], `k` is [batch, kv_len, kv_heads,
    head_dim], `v` is [batch, kv_len, kv_heads, v_dim]; q_heads must be a
    multiple of kv_heads (query head h reads kv head h / (q_heads/kv_heads)).
    `softmax(q k^T * scale + causal mask) v`; with `causal`, query i attends
    to keys j <= start[b] + i (`start`, optional [batch] integers, is the
    position of the first query; 0 when absent, so that kv_len may exceed
    seq for a cache whose tail is unused).

    ```mlir
    %o = kiln.attention %q, %k, %v {scale = 0.25 : f32, causal = true}
        : (tensor<2x8x4x16xf32>, tensor<2x8x2x16xf32>, tensor<2x8x2x16xf32>)
        -> tensor<2x8x4x16xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$q, Kiln_FloatTensor:$k, Kiln_FloatTensor:$v,
                       Optional<Kiln_IndexTensor>:$start,
                       F32Attr:$scale, DefaultValuedAttr<BoolAttr, "true">:$causal);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v (`start` `(` $start^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
}

def Kiln_MLAAttentionOp : Kiln_Op<"mla_attention", [AttrSizedOperandSegments]> {
  let summary = "Multi-head Latent Attention over a compressed KV latent";
  let description = [{
    DeepSeek's MLA. Operands: `q_nope` [b, s, h, d_nope], `q_rope` [b, s, h,
    d_rope] (already rotated), `kv_latent` [b, t, c] (normalized compressed
    KV), `k_rope` [b, t, d_rope] (rotated, shared by all heads) and `kv_b`,
    the up-projection [h * (d_nope + d_v), c]. Per head, keys are
    `concat(W_UK c, k_rope)` and values `W_UV c`; the result is [b, s, h, d_v].
    The op is the unit that the compiler turns into the naive form for
    prefill or the absorbed form (W_UK folded into the query, attention over
    the latent) for decode. With `kv_b_scale`, `kv_b` is e4m3 in 128x128
    blocks and is dequantized as it is read. With `kv_latent_scale` [b, t,
    tiles] (f32, the tiles dividing c), `kv_latent` is e4m3, read as value x
    its tile's scale (the FP8 latent cache: `kiln.quantize` of whole rows
    with `pow2_scale` and `flush_subnormals`).

    ```mlir
    %o = kiln.mla_attention %qn, %qr, %c, %kr, %wkvb {scale = 0.1 : f32, causal = true}
        : (tensor<1x8x4x16xf32>, tensor<1x8x4x8xf32>, tensor<1x8x32xf32>,
           tensor<1x8x8xf32>, tensor<128x32xf32>) -> tensor<1x8x4x16xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$q_nope, Kiln_FloatTensor:$q_rope,
                       Kiln_CacheTensor:$kv_latent, Kiln_FloatTensor:$k_rope,
                       Kiln_AnyTensor:$kv_b, Optional<Kiln_FloatTensor>:$kv_b_scale,
                       Optional<Kiln_FloatTensor>:$kv_latent_scale,
                       Optional<Kiln_IndexTensor>:$start,
                       F32Attr:$scale, DefaultValuedAttr<BoolAttr, "true">:$causal);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $q_nope `,` $q_rope `,` $kv_latent `,` $k_rope `,` $kv_b
    (`kv_b_scale` `(` $kv_b_scale^ `)`)?
    (`kv_latent_scale` `(` $kv_latent_scale^ `)`)? (`start` `(` $start^ `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

def Kiln_MoEOp : Kiln_Op<"moe", [AttrSizedOperandSegments]> {
  let summary = "Routed mixture of SwiGLU experts";
  let description = [{
    `input` [..., d] is routed by `router` [e, d]: scores are
    `sigmoid` or `softmax` of the logits; `correction_bias` [e] (optional)
    is added for expert selection only; with `n_group > 1` experts are split
    into groups, a group's score is the sum of its top two (biased) scores
    (`group_score = "top2_sum"`) or its max (`"max"`), and only the best
    `topk_group` groups are eligible. The `top_k` selected weights are the
    unbiased scores, renormalized when `norm_topk_prob`, times
    `routed_scaling_factor`. Experts are SwiGLU MLPs with stacked weights
    `w_gate`, `w_up` [e + s, f, d] and `w_down` [e + s, d, f]; the last
    `shared_experts` (s, default 0) of them are shared experts, applied to
    every token with weight 1 and added to the result. The importer emits
    shared experts as separate ops; kiln-fold-shared-experts moves them in
    when their shapes match, so they ride in the routed experts' launches. In the block-quantized form (`quant`, `fp8(...)`)
    the expert weights are e4m3 with per-expert 128x128 block scales, the
    experts read the quantized input (`input_q`, `input_scale`, from
    `kiln.quantize` of `input`), and the SwiGLU output is quantized per
    128-tile before the down projection; routing uses `input` unquantized.

    ```mlir
    %y = kiln.moe %x, %router, %wg, %wu, %wd {top_k = 2 : i64, scoring = "softmax"}
        : (tensor<16x64xf32>, tensor<8x64xf32>, tensor<8x32x64xf32>,
           tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, Kiln_FloatTensor:$router,
                       Optional<Kiln_FloatTensor>:$correction_bias,
                       Kiln_AnyTensor:$w_gate, Kiln_AnyTensor:$w_up,
                       Kiln_AnyTensor:$w_down,
                       Optional<Kiln_AnyTensor>:$input_q,
                       Optional<Kiln_FloatTensor>:$input_scale,
                       Optional<Kiln_FloatTensor>:$w_gate_scale,
                       Optional<Kiln_FloatTensor>:$w_up_scale,
                       Optional<Kiln_FloatTensor>:$w_down_scale,
                       OptionalAttr<Kiln_BlockQuantAttr>:$quant,
                       I64Attr:$top_k, StrAttr:$scoring,
                       DefaultValuedAttr<I64Attr, "1">:$n_group,
                       DefaultValuedAttr<I64Attr, "1">:$topk_group,
                       DefaultValuedAttr<StrAttr, "\"top2_sum\"">:$group_score,
                       DefaultValuedAttr<BoolAttr, "true">:$norm_topk_prob,
                       DefaultValuedAttr<F32Attr, "1.0">:$routed_scaling_factor,
                       DefaultValuedAttr<I64Attr, "0">:$shared_experts);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $router (`bias` `(` $correction_bias^ `)`)? `,` $w_gate `,` $w_up `,` $w_down
    (`fp8` `(` $input_q^ `,` $input_scale `,` $w_gate_scale `,` $w_up_scale `,` $w_down_scale `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

#endif // KILN_OPS_TD
