// RUN: kiln-opt %s --kiln-fuse-gated-mlp | FileCheck %s

// CHECK-LABEL: func.func @mlp
func.func @mlp(%x: tensor<16x64xf32>, %wg: tensor<128x64xf32>, %wu: tensor<128x64xf32>) -> tensor<16x128xf32> {
  // CHECK: %[[A:.+]] = kiln_kernel.gemm_swiglu %{{.+}}, %{{.+}}, %{{.+}} {fused_ops = ["kiln.linear", "kiln.linear", "kiln.swiglu"], tile_n = 32 : i64}
  // CHECK-NOT: kiln_kernel.gemm %
  // CHECK-NOT: kiln_kernel.elementwise
  // CHECK: return %[[A]]
  %g = kiln_kernel.gemm %x, %wg {tile_n = 32 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x64xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
  %u = kiln_kernel.gemm %x, %wu {tile_n = 32 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x64xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
  %a = kiln_kernel.elementwise "swiglu" %g, %u {block = 64 : i64, fused_ops = ["kiln.swiglu"]} : (tensor<16x128xf32>, tensor<16x128xf32>) -> tensor<16x128xf32>
  return %a : tensor<16x128xf32>
}
