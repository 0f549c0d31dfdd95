// RUN: kiln-opt %s --kiln-fuse-slices --split-input-file | FileCheck %s

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

// -----

// CHECK-LABEL: func.func @rms_norm_of_slice
func.func @rms_norm_of_slice(%kv: tensor<2x8x40xf32>, %w: tensor<32xf32>) -> tensor<2x8x32xf32> {
  // CHECK: kiln_kernel.rms_norm %{{.+}}, %{{.+}} {epsilon = {{.+}}, fused_ops = ["kiln.slice", "kiln.rms_norm"], input_stride = 40 : i64}
  // CHECK-SAME: (tensor<2x8x40xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
  // CHECK-NOT: kiln_kernel.slice
  %c = kiln_kernel.slice %kv {offset = 0 : i64, fused_ops = ["kiln.slice"]} : (tensor<2x8x40xf32>) -> tensor<2x8x32xf32>
  %n = kiln_kernel.rms_norm %c, %w {epsilon = 1.0e-06 : f32, fused_ops = ["kiln.rms_norm"]} : (tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
  return %n : tensor<2x8x32xf32>
}

// -----

// CHECK-LABEL: func.func @mla_q_nope
func.func @mla_q_nope(%q: tensor<1x2x2x48xf32>, %qr: tensor<1x2x2x16xf32>, %c: tensor<1x2x64xf32>, %kr: tensor<1x2x16xf32>, %w: tensor<128x64xf32>) -> tensor<1x2x2x32xf32> {
  // CHECK: kiln_kernel.mla_attention %{{.+}}, {{.*}}q_nope_stride = 48 : i64
  // CHECK-SAME: (tensor<1x2x2x48xf32>,
  // CHECK-NOT: kiln_kernel.slice
  %qn = kiln_kernel.slice %q {offset = 0 : i64, fused_ops = ["kiln.slice"]} : (tensor<1x2x2x48xf32>) -> tensor<1x2x2x32xf32>
  %o, %ws = kiln_kernel.mla_attention %qn, %qr, %c, %kr, %w {scale = 0.1 : f32, causal = true, fused_ops = ["kiln.mla_attention"]} : (tensor<1x2x2x32xf32>, tensor<1x2x2x16xf32>, tensor<1x2x64xf32>, tensor<1x2x16xf32>, tensor<128x64xf32>) -> (tensor<1x2x2x32xf32>, tensor<4x144xf32>)
  return %o : tensor<1x2x2x32xf32>
}

// -----

// The naive form reads q_nope out of q the same way.
// CHECK-LABEL: func.func @mla_naive_q_nope
func.func @mla_naive_q_nope(%q: tensor<1x2x2x48xf32>, %qr: tensor<1x2x2x16xf32>, %kv: tensor<1x2x2x64xf32>, %kr: tensor<1x2x16xf32>) -> tensor<1x2x2x32xf32> {
  // CHECK: kiln_kernel.mla_naive %{{.+}}, {{.*}}q_nope_stride = 48 : i64
  // CHECK-SAME: (tensor<1x2x2x48xf32>,
  // CHECK-NOT: kiln_kernel.slice
  %qn = kiln_kernel.slice %q {offset = 0 : i64, fused_ops = ["kiln.slice"]} : (tensor<1x2x2x48xf32>) -> tensor<1x2x2x32xf32>
  %o, %ws = kiln_kernel.mla_naive %qn, %qr, %kv, %kr {scale = 0.1 : f32, causal = true, fused_ops = ["kiln.mla_attention"]} : (tensor<1x2x2x32xf32>, tensor<1x2x2x16xf32>, tensor<1x2x2x64xf32>, tensor<1x2x16xf32>) -> (tensor<1x2x2x32xf32>, tensor<4x16xf32>)
  return %o : tensor<1x2x2x32xf32>
}
