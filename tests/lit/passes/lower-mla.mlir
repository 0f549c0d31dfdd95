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
  // One position per row: the workspace is twice 2 x rank + rope floats per
  // (batch, seq, head) (the optimized emitter's three-phase decode).
  // CHECK: kiln_kernel.mla_attention %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {
  // CHECK-SAME: -> (tensor<1x1x4x16xf32>, tensor<4x144xf32>)
  %o1 = kiln.mla_attention %qn1, %qr1, %c, %kr, %w {scale = 0.1 : f32, causal = false} : (tensor<1x1x4x16xf32>, tensor<1x1x4x8xf32>, tensor<1x16x32xf32>, tensor<1x16x8xf32>, tensor<128x32xf32>) -> tensor<1x1x4x16xf32>
  return %o, %o1 : tensor<1x16x4x16xf32>, tensor<1x1x4x16xf32>
}

// A block-quantized kv_b: the naive form is DeepSeek's, the latent quantized
// per 1 x 128 and kv_b a gemm_fp8; the absorbed form dequantizes it.
// CHECK-LABEL: func.func @mla_fp8
// ABS-LABEL: func.func @mla_fp8
// NAIVE-LABEL: func.func @mla_fp8
func.func @mla_fp8(%qn: tensor<1x16x4x16xf32> {kiln.name = "qn"}, %qr: tensor<1x16x4x8xf32> {kiln.name = "qr"},
                   %c: tensor<1x16x256xf32> {kiln.name = "c"}, %kr: tensor<1x16x8xf32> {kiln.name = "kr"})
    -> (tensor<1x16x4x16xf32> {kiln.name = "o"}) {
  %w = kiln.weight "kv_b" : tensor<128x256xf8E4M3FN>
  %ws = kiln.weight "kv_b_scale" : tensor<1x2xf32>
  // CHECK: %[[L:.+]] = kiln_kernel.view %{{.+}} : (tensor<1x16x256xf32>) -> tensor<16x256xf32>
  // CHECK: %[[Q:.+]], %[[S:.+]] = kiln_kernel.quantize %[[L]] {act = 128 : i64
  // CHECK-SAME: (tensor<16x256xf32>) -> (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>)
  // CHECK: %[[KV:.+]] = kiln_kernel.gemm_fp8 %[[Q]], %{{.+}}, %[[S]], %{{.+}} {act = 128 : i64
  // CHECK-SAME: weight_block_n = 128 : i64
  // CHECK-SAME: -> tensor<16x128xf32>
  // CHECK: %[[KV4:.+]] = kiln_kernel.view %[[KV]] : (tensor<16x128xf32>) -> tensor<1x16x4x32xf32>
  // CHECK: kiln_kernel.mla_naive %{{.+}}, %{{.+}}, %[[KV4]], %{{.+}} {
  // NAIVE: kiln_kernel.gemm_fp8
  // ABS-NOT: kiln_kernel.quantize
  // ABS: kiln_kernel.mla_attention {{.*}} kv_b_scale(
  %o = kiln.mla_attention %qn, %qr, %c, %kr, %w kv_b_scale(%ws) {scale = 0.1 : f32} : (tensor<1x16x4x16xf32>, tensor<1x16x4x8xf32>, tensor<1x16x256xf32>, tensor<1x16x8xf32>, tensor<128x256xf8E4M3FN>, tensor<1x2xf32>) -> tensor<1x16x4x16xf32>
  return %o : tensor<1x16x4x16xf32>
}

// The FP8 latent cache (e4m3, one scale per token): the absorbed form reads
// it with its scales; the naive form dequantizes it first (then, before a
// block-quantized kv_b, quantizes per 1 x 128 for the gemm_fp8).
// CHECK-LABEL: func.func @mla_fp8_cache
// ABS-LABEL: func.func @mla_fp8_cache
// NAIVE-LABEL: func.func @mla_fp8_cache
func.func @mla_fp8_cache(%qn: tensor<1x16x4x16xf32> {kiln.name = "qn"}, %qr: tensor<1x16x4x8xf32> {kiln.name = "qr"},
                         %c: tensor<1x16x256xf8E4M3FN> {kiln.name = "c"}, %cs: tensor<1x16x1xf32> {kiln.name = "cs"},
                         %kr: tensor<1x16x8xbf16> {kiln.name = "kr"})
    -> (tensor<1x16x4x16xf32> {kiln.name = "o"}, tensor<1x16x4x16xf32> {kiln.name = "o2"}) {
  %w = kiln.weight "kv_b" : tensor<128x256xf8E4M3FN>
  %ws = kiln.weight "kv_b_scale" : tensor<1x2xf32>
  %wf = kiln.weight "kv_b_f32" : tensor<128x256xf32>
  // CHECK: %[[L:.+]] = kiln_kernel.view %{{.+}} : (tensor<1x16x256xf8E4M3FN>) -> tensor<16x256xf8E4M3FN>
  // CHECK: %[[LS:.+]] = kiln_kernel.view %{{.+}} : (tensor<1x16x1xf32>) -> tensor<16x1xf32>
  // CHECK: %[[D:.+]] = kiln_kernel.dequantize %[[L]], %[[LS]] {act = 256 : i64
  // CHECK: %[[Q:.+]], %[[S:.+]] = kiln_kernel.quantize %[[D]] {act = 128 : i64
  // CHECK: kiln_kernel.gemm_fp8 %[[Q]], %{{.+}}, %[[S]], %{{.+}} {act = 128 : i64
  // CHECK: kiln_kernel.mla_naive
  // CHECK: %[[D2:.+]] = kiln_kernel.dequantize
  // CHECK-NEXT: kiln_kernel.gemm %[[D2]], %{{.+}} {fused_ops
  // CHECK: kiln_kernel.mla_naive
  // ABS-NOT: kiln_kernel.dequantize
  // ABS: kiln_kernel.mla_attention {{.*}} kv_b_scale(%{{[0-9a-z_]+}}) kv_latent_scale(%{{[0-9a-z_]+}})
  // ABS-SAME: tensor<1x16x256xf8E4M3FN>, tensor<1x16x8xbf16>, tensor<128x256xf8E4M3FN>, tensor<1x2xf32>, tensor<1x16x1xf32>
  // ABS: kiln_kernel.mla_attention {{.*}} kv_latent_scale(%{{[0-9a-z_]+}})
  %o = kiln.mla_attention %qn, %qr, %c, %kr, %w kv_b_scale(%ws) kv_latent_scale(%cs) {scale = 0.1 : f32} : (tensor<1x16x4x16xf32>, tensor<1x16x4x8xf32>, tensor<1x16x256xf8E4M3FN>, tensor<1x16x8xbf16>, tensor<128x256xf8E4M3FN>, tensor<1x2xf32>, tensor<1x16x1xf32>) -> tensor<1x16x4x16xf32>
  %o2 = kiln.mla_attention %qn, %qr, %c, %kr, %wf kv_latent_scale(%cs) {scale = 0.1 : f32} : (tensor<1x16x4x16xf32>, tensor<1x16x4x8xf32>, tensor<1x16x256xf8E4M3FN>, tensor<1x16x8xbf16>, tensor<128x256xf32>, tensor<1x16x1xf32>) -> tensor<1x16x4x16xf32>
  return %o, %o2 : tensor<1x16x4x16xf32>, tensor<1x16x4x16xf32>
}
