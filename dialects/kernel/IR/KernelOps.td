#ifndef KILN_KERNEL_OPS_TD
#define KILN_KERNEL_OPS_TD

include "kernel/IR/KernelDialect.td"
include "kernel/IR/KernelInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/CommonAttrConstraints.td"

def KK_Tensor : RankedTensorOf<[F32, F16, BF16, I32, I64]>;

class KK_LaunchOp<string mnemonic, list<Trait> traits = []>
    : Op<KilnKernel_Dialect, mnemonic,
         !listconcat(traits, [Pure, DeclareOpInterfaceMethods<KilnKernel_KernelOpInterface>])> {
  let hasVerifier = 1;
}

def KK_GatherRowsOp : KK_LaunchOp<"gather_rows"> {
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

def KK_RMSNormOp : KK_LaunchOp<"rms_norm"> {
  let summary = "RMSNorm; one program per row";
  let description = [{
    ```mlir
    %y = kiln_kernel.rms_norm %x, %w {epsilon = 1.0e-06 : f32, fused_ops = ["kiln.rms_norm"]}
        : (tensor<16x64xf32>, tensor<64xf32>) -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$weight, F32Attr:$epsilon,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` functional-type(operands, results)";
}

def KK_GemmOp : KK_LaunchOp<"gemm"> {
  let summary = "GEMM x W^T; one program per (row, tile of tile_n columns)";
  let description = [{
    `tile_n` is chosen by the tile heuristic (docs/kernels.md) when the op is
    created, and used as it is by every target's lowering.

    ```mlir
    %y = kiln_kernel.gemm %x, %w {tile_n = 16 : i64, fused_ops = ["kiln.linear"]}
        : (tensor<16x64xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
    ```
  }];
  let arguments = (ins KK_Tensor:$input, KK_Tensor:$weight,
                       ConfinedAttr<I64Attr, [IntPositive]>:$tile_n,
                       StrArrayAttr:$fused_ops);
  let results = (outs KK_Tensor:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` functional-type(operands, results)";
}

def KK_ElementwiseOp : KK_LaunchOp<"elementwise"> {
  let summary = "Element-wise binary op (add, mul, swiglu) over blocks of elements";
  let description = [{
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

def KK_ViewOp : Op<KilnKernel_Dialect, "view", [Pure]> {
  let summary = "Reinterprets a buffer with another shape (no launch)";
  let description = [{
    The result aliases the operand's buffer.

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
