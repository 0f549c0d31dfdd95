// RUN: kiln-opt %s --kiln-fuse-rope --split-input-file | FileCheck %s

// The rope of q_rope (read in place out of q: stride 24, offset 16) moves
// into the absorbed MLA: q_rope becomes q, with its layout and the rotation.
// CHECK-LABEL: func.func @absorbed
func.func @absorbed(%q: tensor<1x2x2x24xf32>, %qn: tensor<1x2x2x16xf32>, %c: tensor<1x4x32xf32>, %kr: tensor<1x4x8xf32>, %w: tensor<128x32xf32>, %st: tensor<1xi32>) -> tensor<1x2x2x16xf32> {
  // CHECK-NOT: kiln_kernel.rope
  // CHECK: kiln_kernel.mla_attention %{{.+}}, %arg0, {{.*}} start(%arg5) {causal = true, fused_ops = ["kiln.slice", "kiln.rope", "kiln.mla_attention"], q_rope_offset = 16 : i64, q_rope_stride = 24 : i64, q_rotation = {interleaved = true, mscale = 1.000000e+00 : f32, rotary_dim = 8 : i64, scaling_factor = 1.000000e+00 : f32, theta = 1.000000e+04 : f32, yarn_factor = 4.000000e+00 : f32, yarn_high = 3.000000e+00 : f32, yarn_low = 0.000000e+00 : f32}
  // CHECK-SAME: (tensor<1x2x2x16xf32>, tensor<1x2x2x24xf32>,
  %qr = kiln_kernel.rope %q start(%st) {theta = 1.0e+04 : f32, rotary_dim = 8 : i64, interleaved = true, scaling_factor = 1.0 : f32, yarn_factor = 4.0 : f32, yarn_low = 0.0 : f32, yarn_high = 3.0 : f32, mscale = 1.0 : f32, input_stride = 24 : i64, input_offset = 16 : i64, fused_ops = ["kiln.slice", "kiln.rope"]} : (tensor<1x2x2x24xf32>, tensor<1xi32>) -> tensor<1x2x2x8xf32>
  %o, %ws = kiln_kernel.mla_attention %qn, %qr, %c, %kr, %w start(%st) {scale = 0.1 : f32, causal = true, fused_ops = ["kiln.mla_attention"]} : (tensor<1x2x2x16xf32>, tensor<1x2x2x8xf32>, tensor<1x4x32xf32>, tensor<1x4x8xf32>, tensor<128x32xf32>, tensor<1xi32>) -> (tensor<1x2x2x16xf32>, tensor<4x72xf32>)
  return %o : tensor<1x2x2x16xf32>
}

// -----

// The naive form takes it the same way.
// CHECK-LABEL: func.func @naive
func.func @naive(%q: tensor<1x2x2x24xf32>, %qn: tensor<1x2x2x16xf32>, %kv: tensor<1x4x2x32xf32>, %kr: tensor<1x4x8xf32>) -> tensor<1x2x2x16xf32> {
  // CHECK-NOT: kiln_kernel.rope
  // CHECK: kiln_kernel.mla_naive %{{.+}}, %arg0, {{.*}}q_rope_offset = 16 : i64, q_rope_stride = 24 : i64, q_rotation = {
  %qr = kiln_kernel.rope %q {theta = 1.0e+04 : f32, rotary_dim = 8 : i64, interleaved = false, scaling_factor = 1.0 : f32, yarn_factor = 1.0 : f32, yarn_low = 0.0 : f32, yarn_high = 0.0 : f32, mscale = 1.0 : f32, input_stride = 24 : i64, input_offset = 16 : i64, fused_ops = ["kiln.rope"]} : (tensor<1x2x2x24xf32>) -> tensor<1x2x2x8xf32>
  %o, %ws = kiln_kernel.mla_naive %qn, %qr, %kv, %kr {scale = 0.1 : f32, causal = true, fused_ops = ["kiln.mla_attention"]} : (tensor<1x2x2x16xf32>, tensor<1x2x2x8xf32>, tensor<1x4x2x32xf32>, tensor<1x4x8xf32>) -> (tensor<1x2x2x16xf32>, tensor<4x8xf32>)
  return %o : tensor<1x2x2x16xf32>
}

// -----

// A rope with another use (or another start) stays.
// CHECK-LABEL: func.func @shared_rope
func.func @shared_rope(%q: tensor<1x2x2x24xf32>, %qn: tensor<1x2x2x16xf32>, %kv: tensor<1x4x2x32xf32>, %kr: tensor<1x4x8xf32>) -> (tensor<1x2x2x16xf32>, tensor<1x2x2x8xf32>) {
  // CHECK: kiln_kernel.rope
  // CHECK: kiln_kernel.mla_naive
  // CHECK-NOT: q_rotation
  %qr = kiln_kernel.rope %q {theta = 1.0e+04 : f32, rotary_dim = 8 : i64, interleaved = false, scaling_factor = 1.0 : f32, yarn_factor = 1.0 : f32, yarn_low = 0.0 : f32, yarn_high = 0.0 : f32, mscale = 1.0 : f32, input_stride = 24 : i64, input_offset = 16 : i64, fused_ops = ["kiln.rope"]} : (tensor<1x2x2x24xf32>) -> tensor<1x2x2x8xf32>
  %o, %ws = kiln_kernel.mla_naive %qn, %qr, %kv, %kr {scale = 0.1 : f32, causal = true, fused_ops = ["kiln.mla_attention"]} : (tensor<1x2x2x16xf32>, tensor<1x2x2x8xf32>, tensor<1x4x2x32xf32>, tensor<1x4x8xf32>) -> (tensor<1x2x2x16xf32>, tensor<4x8xf32>)
  return %o, %qr : tensor<1x2x2x16xf32>, tensor<1x2x2x8xf32>
}

// -----

// GQA: the attention stages its whole query row, rotated.
// CHECK-LABEL: func.func @gqa
func.func @gqa(%q: tensor<2x8x4x16xf32>, %k: tensor<2x8x2x16xf32>, %v: tensor<2x8x2x16xf32>) -> tensor<2x8x4x16xf32> {
  // CHECK-NOT: kiln_kernel.rope
  // CHECK: kiln_kernel.attention %arg0, %arg1, %arg2 {causal = true, fused_ops = ["kiln.rope", "kiln.attention"], q_rotation = {interleaved = false, {{.*}}rotary_dim = 16 : i64
  %qr = kiln_kernel.rope %q {theta = 1.0e+04 : f32, rotary_dim = 16 : i64, interleaved = false, scaling_factor = 1.0 : f32, yarn_factor = 1.0 : f32, yarn_low = 0.0 : f32, yarn_high = 0.0 : f32, mscale = 1.0 : f32, fused_ops = ["kiln.rope"]} : (tensor<2x8x4x16xf32>) -> tensor<2x8x4x16xf32>
  %o, %ws = kiln_kernel.attention %qr, %k, %v {scale = 0.25 : f32, causal = true, fused_ops = ["kiln.attention"]} : (tensor<2x8x4x16xf32>, tensor<2x8x2x16xf32>, tensor<2x8x2x16xf32>) -> (tensor<2x8x4x16xf32>, tensor<64x16xf32>)
  return %o : tensor<2x8x4x16xf32>
}
