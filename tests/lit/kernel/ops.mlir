// RUN: kiln-opt %s --split-input-file | FileCheck %s

// CHECK-LABEL: func.func @launches
func.func @launches(%t: tensor<2x8xi32>, %x: tensor<16x64xf32>) -> tensor<16x128xf32> {
  %e = kiln.weight "e" : tensor<256x64xf32>
  // CHECK: kiln_kernel.gather_rows {{.*}}fused_ops = ["kiln.embedding"]
  %h = kiln_kernel.gather_rows %e, %t {fused_ops = ["kiln.embedding"]} : (tensor<256x64xf32>, tensor<2x8xi32>) -> tensor<2x8x64xf32>
  // CHECK: kiln_kernel.view
  %v = kiln_kernel.view %h : (tensor<2x8x64xf32>) -> tensor<16x64xf32>
  %w = kiln.weight "n" : tensor<64xf32>
  // CHECK: kiln_kernel.rms_norm
  %n = kiln_kernel.rms_norm %v, %w {epsilon = 1.0e-06 : f32, fused_ops = ["kiln.rms_norm"]} : (tensor<16x64xf32>, tensor<64xf32>) -> tensor<16x64xf32>
  %wg = kiln.weight "g" : tensor<128x64xf32>
  // CHECK: kiln_kernel.gemm {{.*}}tile_n = 16
  %g = kiln_kernel.gemm %n, %wg {tile_n = 16 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x64xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
  // CHECK: kiln_kernel.elementwise "swiglu"
  %a = kiln_kernel.elementwise "swiglu" %g, %g {block = 64 : i64, fused_ops = ["kiln.swiglu"]} : (tensor<16x128xf32>, tensor<16x128xf32>) -> tensor<16x128xf32>
  return %a : tensor<16x128xf32>
}

// -----

// CHECK-LABEL: func.func @bias_add
func.func @bias_add(%x: tensor<16x128xf32>, %b: tensor<128xbf16>) -> tensor<16x128xf32> {
  // CHECK: kiln_kernel.elementwise "bias_add" {{.*}} : (tensor<16x128xf32>, tensor<128xbf16>) -> tensor<16x128xf32>
  %y = kiln_kernel.elementwise "bias_add" %x, %b {block = 64 : i64, fused_ops = ["kiln.bias_add"]} : (tensor<16x128xf32>, tensor<128xbf16>) -> tensor<16x128xf32>
  return %y : tensor<16x128xf32>
}
