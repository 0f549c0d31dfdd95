// RUN: kiln-opt %s --kiln-fuse-residual --split-input-file | FileCheck %s

// CHECK-LABEL: func.func @residual
func.func @residual(%h: tensor<16x64xf32>, %x: tensor<16x128xf32>, %w: tensor<64x128xf32>) -> tensor<16x64xf32> {
  // CHECK: %[[Y:.+]] = kiln_kernel.gemm %{{.+}}, %{{.+}} add(%{{.+}}) {fused_ops = ["kiln.linear", "kiln.add"], tile_n = 16 : i64}
  // CHECK-NOT: kiln_kernel.elementwise
  // CHECK: return %[[Y]]
  %y = kiln_kernel.gemm %x, %w {tile_n = 16 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x128xf32>, tensor<64x128xf32>) -> tensor<16x64xf32>
  %r = kiln_kernel.elementwise "add" %h, %y {block = 64 : i64, fused_ops = ["kiln.add"]} : (tensor<16x64xf32>, tensor<16x64xf32>) -> tensor<16x64xf32>
  return %r : tensor<16x64xf32>
}

// -----

// The MoE combine: routed experts + shared expert (when it was not folded
// into the grouped experts) + residual in one kernel.
// CHECK-LABEL: func.func @combine
func.func @combine(%h: tensor<16x64xf32>, %shared: tensor<16x64xf32>, %rows: tensor<88x64xf32>, %slots: tensor<16x2xi32>, %wts: tensor<16x2xf32>) -> tensor<16x64xf32> {
  // CHECK: kiln_kernel.moe_combine %{{.+}}, %{{.+}}, %{{.+}} add(%{{.+}}, %{{.+}}) {fused_ops = ["kiln.moe", "kiln.add", "kiln.add"]
  // CHECK-NOT: kiln_kernel.elementwise
  %y = kiln_kernel.moe_combine %rows, %slots, %wts {tile_d = 32 : i64, fused_ops = ["kiln.moe"]} : (tensor<88x64xf32>, tensor<16x2xi32>, tensor<16x2xf32>) -> tensor<16x64xf32>
  %m = kiln_kernel.elementwise "add" %y, %shared {block = 64 : i64, fused_ops = ["kiln.add"]} : (tensor<16x64xf32>, tensor<16x64xf32>) -> tensor<16x64xf32>
  %r = kiln_kernel.elementwise "add" %h, %m {block = 64 : i64, fused_ops = ["kiln.add"]} : (tensor<16x64xf32>, tensor<16x64xf32>) -> tensor<16x64xf32>
  return %r : tensor<16x64xf32>
}

// -----

// A GEMM result with another use keeps its add.
// CHECK-LABEL: func.func @shared_result
func.func @shared_result(%h: tensor<16x64xf32>, %x: tensor<16x128xf32>, %w: tensor<64x128xf32>) -> (tensor<16x64xf32>, tensor<16x64xf32>) {
  // CHECK: kiln_kernel.gemm %{{.+}}, %{{.+}} {
  // CHECK: kiln_kernel.elementwise "add"
  %y = kiln_kernel.gemm %x, %w {tile_n = 16 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x128xf32>, tensor<64x128xf32>) -> tensor<16x64xf32>
  %r = kiln_kernel.elementwise "add" %h, %y {block = 64 : i64, fused_ops = ["kiln.add"]} : (tensor<16x64xf32>, tensor<16x64xf32>) -> tensor<16x64xf32>
  return %r, %y : tensor<16x64xf32>, tensor<16x64xf32>
}
