#ifndef KILN_DIALECT_TD
#define KILN_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def Kiln_Dialect : Dialect {
  let name = "kiln";
  let cppNamespace = "::kiln::graph";
  let useDefaultAttributePrinterParser = 1;
  let summary = "Kiln's graph dialect: tensor-level ops of transformer models.";
  let description = [{
    The `kiln` dialect describes a model as a function over ranked tensors:
    embeddings, normalizations, projections, rotary embeddings, attention
    (standard GQA and DeepSeek's Multi-head Latent Attention), mixtures of
    experts and element-wise ops. Weights are named references (`kiln.weight`)
    resolved against a checkpoint at compile time, never inlined constants.

    A model is a `func.func @forward` whose arguments and results carry a
    `kiln.name` string attribute naming the plan's inputs and outputs.
    The module may carry `kiln.weights = "file.safetensors"`, the checkpoint
    (relative to the model file) that `kiln.weight` names are looked up in.

    Every op verifies shapes and element types; ops below the graph level
    (`kiln_kernel`) are produced by `kiln-lower-to-kernels`.
  }];
}

class Kiln_Op<string mnemonic, list<Trait> traits = []>
    : Op<Kiln_Dialect, mnemonic, !listconcat(traits, [Pure])> {
  let hasVerifier = 1;
}

// Floating-point activations and weights the graph accepts.
def Kiln_FloatTensor : RankedTensorOf<[F32, F16, BF16]>;
// Cache element types: e4m3 holds the MLA latent with per-tile scales
// (kiln.quantize's, in a second cache).
def Kiln_CacheTensor : RankedTensorOf<[F32, F16, BF16, F8E4M3FN]>;
def Kiln_IndexTensor : RankedTensorOf<[I32, I64]>;
def Kiln_AnyTensor : RankedTensorOf<[F32, F16, BF16, I32, I64, F8E4M3FN]>;

#endif // KILN_DIALECT_TD
