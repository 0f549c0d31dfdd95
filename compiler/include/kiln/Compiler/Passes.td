#ifndef KILN_COMPILER_PASSES_TD
#define KILN_COMPILER_PASSES_TD

include "mlir/Pass/PassBase.td"

def KilnLowerToKernels : Pass<"kiln-lower-to-kernels", "mlir::ModuleOp"> {
  let summary = "Lower the kiln graph to kiln_kernel launches";
  let description = [{
    Replaces every graph op by the kernel launch(es) that compute it, choosing
    each kernel's tile configuration with the heuristics of
    `kiln/Kernels/Heuristics.h`. `kiln.reshape` becomes `kiln_kernel.view`.
    `kiln.weight` stays: weights are resolved when the plan is emitted. Each
    launch records the graph ops it came from in `fused_ops` and keeps their
    location. A graph op without a kernel lowering is an error naming it.
  }];
  let dependentDialects = ["kiln::kernel::KilnKernelDialect"];
  let options = [
    Option<"minGemmPrograms", "min-gemm-programs", "int64_t", /*default=*/"64",
           "Smallest grid the GEMM tile heuristic aims for">,
  ];
}

def KilnLowerMoE : Pass<"kiln-lower-moe", "mlir::ModuleOp"> {
  let summary = "Lower kiln.moe: routing + permutation, grouped experts, combine";
  let description = [{
    `kiln.moe` becomes four launches: `moe_route` (gate GEMM, scoring,
    correction bias, group-limited top-k, normalization, scaling, and the
    token permutation into the experts' contiguous layout, each segment
    padded to `block_m`), the grouped `moe_up` (gate + up + SwiGLU, and the
    activation quantization in FP8) and `moe_down` GEMMs over that layout,
    and `moe_combine`. kiln-lower-to-kernels applies the same lowering with
    the defaults.
  }];
  let dependentDialects = ["kiln::kernel::KilnKernelDialect"];
  let options = [
    Option<"minGemmPrograms", "min-gemm-programs", "int64_t", /*default=*/"64",
           "Smallest grid the GEMM tile heuristic aims for">,
    Option<"blockM", "block-m", "int64_t", /*default=*/"0",
           "Rows per block of the experts' layout (0: chooseMoEBlockM)">,
  ];
}

def KilnLowerMLA : Pass<"kiln-lower-mla", "mlir::ModuleOp"> {
  let summary = "Lower kiln.mla_attention to the absorbed or the naive form";
  let description = [{
    The absorbed form is one `mla_attention` launch (W_UK folded into the
    query, attention over the latent, W_UV after); the naive form is a
    `gemm` of kv_b over the cached latent and `mla_naive`. `form=auto`
    compares their multiply-adds (preferNaiveMLA): decode is absorbed, long
    prefills naive. Calls whose keys reach past their own tokens (a start
    position: decode, extend) or a multi-row cache prefix keep the absorbed
    form under `auto`; the naive one would apply kv_b to every cache
    position. With a block-quantized kv_b the naive form's GEMM is
    `gemm_fp8` over the latent quantized per 1 x 128 (`quantize`),
    DeepSeek's naive attention.
    kiln-lower-to-kernels applies the same lowering with `form=auto`.
  }];
  let dependentDialects = ["kiln::kernel::KilnKernelDialect"];
  let options = [
    Option<"minGemmPrograms", "min-gemm-programs", "int64_t", /*default=*/"64",
           "Smallest grid the GEMM tile heuristic aims for">,
    Option<"form", "form", "std::string", /*default=*/"\"auto\"",
           "auto, absorbed or naive">,
  ];
}

def KilnFuseQuantize : Pass<"kiln-fuse-quantize", "mlir::ModuleOp"> {
  let summary = "Fuse activation quantization into the kernel producing it";
  let description = [{
    `kiln_kernel.quantize` of an RMSNorm output becomes one `rms_norm_quant`
    launch; of a SwiGLU output (used only there), one `swiglu_quant`; of an
    MLA output whose heads are whole activation tiles, one
    `mla_attention_quant`.
  }];
}

def KilnFuseResidual : Pass<"kiln-fuse-residual", "mlir::ModuleOp"> {
  let summary = "Fold residual adds and the MoE combine into GEMM epilogues";
  let description = [{
    `kiln_kernel.elementwise "add"` of a GEMM or expert down-projection
    result (used only there) becomes an epilogue addend of that launch (at
    most two per launch). With the shared expert computed first, the routed
    experts' down projection sums the weighted expert outputs, the shared
    expert and the residual in one kernel.
  }];
}

def KilnFuseSlices : Pass<"kiln-fuse-slices", "mlir::ModuleOp"> {
  let summary = "Read sliced rows in place in the kernels that consume them";
  let description = [{
    A slice (possibly viewed) feeding a rope or an RMSNorm becomes the
    kernel's `input_stride`/`input_offset`; q_nope sliced out of q feeding
    MLA becomes its `q_nope_stride`.
  }];
}

def KilnFoldSharedExperts : Pass<"kiln-fold-shared-experts", "mlir::ModuleOp"> {
  let summary = "Run shared experts as extra experts of the grouped MoE GEMMs";
  let description = [{
    A graph-level fusion: `add(moe(x), mlp(x))`, where the MLP (SwiGLU,
    plain or FP8) has the routed experts' shape, becomes one `kiln.moe` with
    the MLP's weights appended to the expert stacks and `shared_experts`
    incremented. Every token then gets one more row in the grouped GEMMs
    (weight 1), which saves the shared expert's launches. An MLP of another
    shape (DeepSeek-V2's shared experts, concatenated) is left as it is.
  }];
}

def KilnFuseRope : Pass<"kiln-fuse-rope", "mlir::ModuleOp"> {
  let summary = "Rotate MLA's query inside the attention kernel";
  let description = [{
    `mla_attention`/`mla_naive` whose q_rope is a `rope` launch used only
    there (no cache, same start) read q_rope from the rope's input (q, with
    its row stride and offset) and rotate it themselves (`q_rotation`): one
    launch and one tensor less per layer. Run after kiln-fuse-slices.
  }];
}

def KilnFuseGatedMLP : Pass<"kiln-fuse-gated-mlp", "mlir::ModuleOp"> {
  let summary = "Gate and up GEMMs with the SwiGLU in one launch";
  let description = [{
    `swiglu(gemm(x, W_gate), gemm(x, W_up))` becomes one `gemm_swiglu`; in
    FP8, `quantize(swiglu(gemm_fp8(xq, W_gate), gemm_fp8(xq, W_up)))` becomes
    one `gemm_swiglu_fp8` that also quantizes its output.
  }];
}

def KilnMergeProjections : Pass<"kiln-merge-projections", "mlir::ModuleOp"> {
  let summary = "Merge GEMMs that share their input into one launch";
  let description = [{
    Pairs of GEMMs of the same input (q_a_proj and kv_a_proj_with_mqa)
    become one `gemm_dual`, or `gemm_dual_fp8` for block-scaled GEMMs of the
    same quantized input and scales; the tile is chosen for the combined
    width.
  }];
  let options = [
    Option<"minGemmPrograms", "min-gemm-programs", "int64_t", /*default=*/"64",
           "Smallest grid the GEMM tile heuristic aims for">,
  ];
}

def KilnFuseCacheWrites : Pass<"kiln-fuse-cache-writes", "mlir::ModuleOp"> {
  let summary = "Producers write their rows straight into the KV cache";
  let description = [{
    A `cache_write` of an RMSNorm or rope output (used only there) becomes
    that launch writing at `start + s` of the cache (`into(...)`).
  }];
}

def KilnVerifyModel : Pass<"kiln-verify-model", "mlir::ModuleOp"> {
  let summary = "Check that a module is a compilable Kiln model";
  let description = [{
    Requires one `func.func @forward` whose arguments and results all carry a
    unique `kiln.name` string attribute, statically shaped tensor types and
    no other functions; reports the first violation at its location.
  }];
}

#endif // KILN_COMPILER_PASSES_TD
