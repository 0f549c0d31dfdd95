// RUN: kiln-opt %s --kiln-lower-mla | FileCheck %s
// RUN: kiln-opt %s --kiln-lower-mla=form=absorbed | FileCheck %s --check-prefix=ABS
// RUN: kiln-opt %s --kiln-lower-mla=form=naive | FileCheck %s --check-prefix=NAIVE

// kiln.mla_attention: 16 queries over 16 keys take the naive form (a GEMM of
// kv_b over the latent cache, then mla_naive); one query over the same keys
// (decode) the absorbed form (preferNaiveMLA, docs/kernels.md).
// CHECK-LABEL: func.func @mla_forms
func.func @mla_forms(%qn: tensor<1x16x4x16xf32> {kiln.name = "qn"}, %qr: tensor<1x16x4x8xf32> {kiln.name = "qr"},
                     %qn1: tensor<1x1x4x16xf32> {kiln.name = "qn1"}, %qr1: tensor<1x1x4x8xf32> {kiln.name = "qr1"},
                     %c: tensor<1x16x32xf32> {kiln.name = "c"}, %kr: tensor<1x16x8xf32> {kiln.name = "kr"})
    -> (tensor<1x16x4x16xf32> {kiln.name = "o"}, tensor<1x1x4x16xf32> {kiln.name = "o1"}) {
  %w = kiln.weight "kv_b" : tensor<128x32xf32>
  // ABS-NOT: mla_naive
  // ABS-COUNT-2: kiln_kernel.mla_attention
  // NAIVE-COUNT-2: kiln_kernel.mla_naive
  // NAIVE-NOT: kiln_kernel.mla_attention
  // CHECK: %[[L:.+]] = kiln_kernel.view %{{.+}} : (tensor<1x16x32xf32>) -> tensor<16x32xf32>
  // CHECK: %[[KV:.+]] = kiln_kernel.gemm %[[L]], %{{.+}} {fused_ops = ["kiln.mla_attention"]
  // CHECK-SAME: -> tensor<16x128xf32>
  // CHECK: %[[KV4:.+]] = kiln_kernel.view %[[KV]] : (tensor<16x128xf32>) -> tensor<1x16x4x32xf32>
  // CHECK: kiln_kernel.mla_naive %{{.+}}, %{{.+}}, %[[KV4]], %{{.+}} {
  %o = kiln.mla_attention %qn, %qr, %c, %kr, %w {scale = 0.1 : f32} : (tensor<1x16x4x16xf32>, tensor<1x16x4x8xf32>, tensor<1x16x32xf32>, tensor<1x16x8xf32>, tensor<128x32xf32>) -> tensor<1x16x4x16xf32>
  // CHECK: kiln_kernel.mla_attention %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {
  %o1 = kiln.mla_attention %qn1, %qr1, %c, %kr, %w {scale = 0.1 : f32, causal = false} : (tensor<1x1x4x16xf32>, tensor<1x1x4x8xf32>, tensor<1x16x32xf32>, tensor<1x16x8xf32>, tensor<128x32xf32>) -> tensor<1x1x4x16xf32>
  return %o, %o1 : tensor<1x16x4x16xf32>, tensor<1x1x4x16xf32>
}
