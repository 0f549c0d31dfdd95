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
