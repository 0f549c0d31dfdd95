// RUN: kiln-opt %s --kiln-fuse-rope | FileCheck %s

// CHECK-LABEL: func.func @rope_of_slice
func.func @rope_of_slice(%kv: tensor<2x8x40xf32>) -> tensor<2x8x1x8xf32> {
  // CHECK: %[[R:.+]] = kiln_kernel.rope %{{.+}} {fused_ops = ["kiln.slice", "kiln.rope"], input_offset = 32 : i64, input_stride = 40 : i64
  // CHECK-SAME: (tensor<2x8x40xf32>) -> tensor<2x8x1x8xf32>
  // CHECK-NOT: kiln_kernel.slice
  // CHECK: return %[[R]]
  %pe = kiln_kernel.slice %kv {offset = 32 : i64, fused_ops = ["kiln.slice"]} : (tensor<2x8x40xf32>) -> tensor<2x8x8xf32>
  %v = kiln_kernel.view %pe : (tensor<2x8x8xf32>) -> tensor<2x8x1x8xf32>
  %r = kiln_kernel.rope %v {theta = 1.0e+04 : f32, rotary_dim = 8 : i64, interleaved = true, scaling_factor = 1.0 : f32, yarn_factor = 1.0 : f32, yarn_low = 0.0 : f32, yarn_high = 0.0 : f32, mscale = 1.0 : f32, fused_ops = ["kiln.rope"]} : (tensor<2x8x1x8xf32>) -> tensor<2x8x1x8xf32>
  return %r : tensor<2x8x1x8xf32>
}
