// RUN: kiln-opt %s --kiln-fuse-cache-writes --split-input-file | FileCheck %s

// MLA's latent and rope key go straight into their caches.
// CHECK-LABEL: func.func @decode_step
func.func @decode_step(%kv: tensor<1x1x40xf32>, %w: tensor<32xf32>, %pos: tensor<1xi32>) -> (tensor<1x8x32xf32>, tensor<1x8x8xf32>) {
  // CHECK: kiln.state "latent"
  // CHECK: %[[L:.+]] = kiln_kernel.rms_norm %{{.+}}, %{{.+}} into(%{{.+}} at %{{.+}}) {{.*}}fused_ops = ["kiln.rms_norm", "kiln.cache_update"]
  // CHECK-SAME: -> tensor<1x8x32xf32>
  // CHECK: kiln_kernel.rope %{{.+}} start(%{{.+}}) into(%{{.+}}) {{.*}}fused_ops = ["kiln.rope", "kiln.cache_update"]
  // CHECK-NOT: kiln_kernel.cache_write
  %c = kiln_kernel.slice %kv {offset = 0 : i64, fused_ops = ["kiln.slice"]} : (tensor<1x1x40xf32>) -> tensor<1x1x32xf32>
  %n = kiln_kernel.rms_norm %c, %w {epsilon = 1.0e-06 : f32, fused_ops = ["kiln.rms_norm"]} : (tensor<1x1x32xf32>, tensor<32xf32>) -> tensor<1x1x32xf32>
  %s1 = kiln.state "latent" : tensor<1x8x32xf32>
  %u1 = kiln_kernel.cache_write %s1, %n start(%pos) {fused_ops = ["kiln.cache_update"]} : (tensor<1x8x32xf32>, tensor<1x1x32xf32>, tensor<1xi32>) -> tensor<1x8x32xf32>
  %pe = kiln_kernel.slice %kv {offset = 32 : i64, fused_ops = ["kiln.slice"]} : (tensor<1x1x40xf32>) -> tensor<1x1x8xf32>
  %pv = kiln_kernel.view %pe : (tensor<1x1x8xf32>) -> tensor<1x1x1x8xf32>
  %r = kiln_kernel.rope %pv start(%pos) {theta = 1.0e+04 : f32, rotary_dim = 8 : i64, interleaved = true, scaling_factor = 1.0 : f32, yarn_factor = 1.0 : f32, yarn_low = 0.0 : f32, yarn_high = 0.0 : f32, mscale = 1.0 : f32, fused_ops = ["kiln.rope"]} : (tensor<1x1x1x8xf32>, tensor<1xi32>) -> tensor<1x1x1x8xf32>
  %rv = kiln_kernel.view %r : (tensor<1x1x1x8xf32>) -> tensor<1x1x8xf32>
  %s2 = kiln.state "k_rope" : tensor<1x8x8xf32>
  %u2 = kiln_kernel.cache_write %s2, %rv start(%pos) {fused_ops = ["kiln.cache_update"]} : (tensor<1x8x8xf32>, tensor<1x1x8xf32>, tensor<1xi32>) -> tensor<1x8x8xf32>
  return %u1, %u2 : tensor<1x8x32xf32>, tensor<1x8x8xf32>
}

// -----

// With the slices read in place (kiln-fuse-slices), the latent RMSNorm and
// the key rope read the same rows of kv_a's output: after both write their
// caches, they merge into one latent_cache_write.
// CHECK-LABEL: func.func @merged
func.func @merged(%kv: tensor<1x2x40xf32>, %w: tensor<32xf32>, %pos: tensor<1xi32>) -> (tensor<1x8x32xf32>, tensor<1x8x8xf32>) {
  // CHECK: %[[L:.+]], %[[R:.+]] = kiln_kernel.latent_cache_write %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} start(%{{.+}}) {epsilon = {{.+}}, fused_ops = ["kiln.rms_norm", "kiln.cache_update", "kiln.rope", "kiln.cache_update"], input_stride = 40 : i64, latent_offset = 0 : i64, rope_offset = 32 : i64, rotation = {interleaved = true
  // CHECK-SAME: -> (tensor<1x8x32xf32>, tensor<1x8x1x8xf32>)
  // CHECK-NOT: kiln_kernel.rms_norm
  // CHECK-NOT: kiln_kernel.rope
  // CHECK: %[[RV:.+]] = kiln_kernel.view %[[R]]
  // CHECK: return %[[L]], %[[RV]]
  %n = kiln_kernel.rms_norm %kv, %w {epsilon = 1.0e-06 : f32, input_stride = 40 : i64, input_offset = 0 : i64, fused_ops = ["kiln.rms_norm"]} : (tensor<1x2x40xf32>, tensor<32xf32>) -> tensor<1x2x32xf32>
  %s1 = kiln.state "latent" : tensor<1x8x32xf32>
  %u1 = kiln_kernel.cache_write %s1, %n start(%pos) {fused_ops = ["kiln.cache_update"]} : (tensor<1x8x32xf32>, tensor<1x2x32xf32>, tensor<1xi32>) -> tensor<1x8x32xf32>
  %r = kiln_kernel.rope %kv start(%pos) {theta = 1.0e+04 : f32, rotary_dim = 8 : i64, interleaved = true, scaling_factor = 1.0 : f32, yarn_factor = 1.0 : f32, yarn_low = 0.0 : f32, yarn_high = 0.0 : f32, mscale = 1.0 : f32, input_stride = 40 : i64, input_offset = 32 : i64, fused_ops = ["kiln.rope"]} : (tensor<1x2x40xf32>, tensor<1xi32>) -> tensor<1x2x1x8xf32>
  %rv = kiln_kernel.view %r : (tensor<1x2x1x8xf32>) -> tensor<1x2x8xf32>
  %s2 = kiln.state "k_rope" : tensor<1x8x8xf32>
  %u2 = kiln_kernel.cache_write %s2, %rv start(%pos) {fused_ops = ["kiln.cache_update"]} : (tensor<1x8x8xf32>, tensor<1x2x8xf32>, tensor<1xi32>) -> tensor<1x8x8xf32>
  return %u1, %u2 : tensor<1x8x32xf32>, tensor<1x8x8xf32>
}
