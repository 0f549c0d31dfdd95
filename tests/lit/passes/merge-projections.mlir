// RUN: kiln-opt %s --kiln-merge-projections | FileCheck %s

// q_a and kv_a read the same normalized input; the kv_a weight is hoisted so
// the merged launch takes q_a's place (q_a's users come before kv_a).
// CHECK-LABEL: func.func @mla_inputs
func.func @mla_inputs(%x: tensor<16x64xf32>, %n: tensor<48xf32>) -> (tensor<16x48xf32>, tensor<16x40xf32>) {
  // CHECK: %[[WKV:.+]] = kiln.weight "kv_a"
  // CHECK: %[[QA:.+]], %[[KV:.+]] = kiln_kernel.gemm_dual %{{.+}}, %{{.+}}, %[[WKV]] {fused_ops = ["kiln.linear", "kiln.linear"], tile_n = {{[0-9]+}} : i64}
  // CHECK-SAME: -> (tensor<16x48xf32>, tensor<16x40xf32>)
  // CHECK: kiln_kernel.rms_norm %[[QA]]
  // CHECK-NOT: kiln_kernel.gemm %
  %wq = kiln.weight "q_a" : tensor<48x64xf32>
  %qa = kiln_kernel.gemm %x, %wq {tile_n = 16 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x64xf32>, tensor<48x64xf32>) -> tensor<16x48xf32>
  %qn = kiln_kernel.rms_norm %qa, %n {epsilon = 1.0e-06 : f32, fused_ops = ["kiln.rms_norm"]} : (tensor<16x48xf32>, tensor<48xf32>) -> tensor<16x48xf32>
  %wkv = kiln.weight "kv_a" : tensor<40x64xf32>
  %kv = kiln_kernel.gemm %x, %wkv {tile_n = 8 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x64xf32>, tensor<40x64xf32>) -> tensor<16x40xf32>
  return %qn, %kv : tensor<16x48xf32>, tensor<16x40xf32>
}

// FP8: two block-scaled GEMMs of the same quantized input and scales.
// CHECK-LABEL: func.func @fp8_inputs
func.func @fp8_inputs(%q: tensor<16x256xf8E4M3FN>, %s: tensor<16x2xf32>) -> (tensor<16x200xf32>, tensor<16x64xf32>) {
  // CHECK: kiln_kernel.gemm_dual_fp8 %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {act = 128 : i64, fused_ops = ["kiln.linear", "kiln.linear"], tile_n = {{[0-9]+}} : i64, weight_block_n = 128 : i64}
  // CHECK-SAME: -> (tensor<16x200xf32>, tensor<16x64xf32>)
  // CHECK-NOT: kiln_kernel.gemm_fp8
  %w1 = kiln.weight "w1" : tensor<200x256xf8E4M3FN>
  %s1 = kiln.weight "s1" : tensor<2x2xf32>
  %w2 = kiln.weight "w2" : tensor<64x256xf8E4M3FN>
  %s2 = kiln.weight "s2" : tensor<1x2xf32>
  %a = kiln_kernel.gemm_fp8 %q, %w1, %s, %s1 {tile_n = 8 : i64, act = 128 : i64, weight_block_n = 128 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x256xf8E4M3FN>, tensor<200x256xf8E4M3FN>, tensor<16x2xf32>, tensor<2x2xf32>) -> tensor<16x200xf32>
  %b = kiln_kernel.gemm_fp8 %q, %w2, %s, %s2 {tile_n = 8 : i64, act = 128 : i64, weight_block_n = 128 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x256xf8E4M3FN>, tensor<64x256xf8E4M3FN>, tensor<16x2xf32>, tensor<1x2xf32>) -> tensor<16x64xf32>
  return %a, %b : tensor<16x200xf32>, tensor<16x64xf32>
}
