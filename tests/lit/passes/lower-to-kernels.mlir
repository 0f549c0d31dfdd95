// RUN: kiln-opt %s --kiln-lower-to-kernels --split-input-file --verify-diagnostics | FileCheck %s

// CHECK-LABEL: func.func @forward
func.func @forward(%tokens: tensor<2x8xi32> {kiln.name = "tokens"}) -> (tensor<2x8x128xf32> {kiln.name = "y"}) {
  %e = kiln.weight "embed" : tensor<256x64xf32>
  // CHECK: %[[H:.+]] = kiln_kernel.gather_rows %{{.+}}, %{{.+}} {fused_ops = ["kiln.embedding"]}
  %h = kiln.embedding %e, %tokens : (tensor<256x64xf32>, tensor<2x8xi32>) -> tensor<2x8x64xf32>
  %nw = kiln.weight "norm" : tensor<64xf32>
  // CHECK: %[[N:.+]] = kiln_kernel.rms_norm %[[H]], %{{.+}} {epsilon = {{.+}}, fused_ops = ["kiln.rms_norm"]}
  %n = kiln.rms_norm %h, %nw {epsilon = 1.0e-05 : f32} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %wg = kiln.weight "gate" : tensor<128x64xf32>
  %wu = kiln.weight "up" : tensor<128x64xf32>
  // 16 rows x 128 columns: the heuristic keeps >= 64 programs, tile_n = 32.
  // CHECK: %[[G:.+]] = kiln_kernel.gemm %[[N]], %{{.+}} {fused_ops = ["kiln.linear"], tile_n = 32 : i64}
  %g = kiln.linear %n, %wg : (tensor<2x8x64xf32>, tensor<128x64xf32>) -> tensor<2x8x128xf32>
  // CHECK: %[[U:.+]] = kiln_kernel.gemm %[[N]]
  %u = kiln.linear %n, %wu : (tensor<2x8x64xf32>, tensor<128x64xf32>) -> tensor<2x8x128xf32>
  // CHECK: %[[A:.+]] = kiln_kernel.elementwise "swiglu" %[[G]], %[[U]] {block = 64 : i64, fused_ops = ["kiln.swiglu"]}
  %a = kiln.swiglu %g, %u : (tensor<2x8x128xf32>, tensor<2x8x128xf32>) -> tensor<2x8x128xf32>
  // CHECK: %[[M:.+]] = kiln_kernel.elementwise "mul" %[[A]], %[[A]]
  %m = kiln.mul %a, %a : (tensor<2x8x128xf32>, tensor<2x8x128xf32>) -> tensor<2x8x128xf32>
  // CHECK: %[[S:.+]] = kiln_kernel.elementwise "add" %[[M]], %[[A]]
  %s = kiln.add %m, %a : (tensor<2x8x128xf32>, tensor<2x8x128xf32>) -> tensor<2x8x128xf32>
  // CHECK: %[[V:.+]] = kiln_kernel.view %[[S]] : (tensor<2x8x128xf32>) -> tensor<16x128xf32>
  %r = kiln.reshape %s : (tensor<2x8x128xf32>) -> tensor<16x128xf32>
  %r2 = kiln.reshape %r : (tensor<16x128xf32>) -> tensor<2x8x128xf32>
  // CHECK-NOT: kiln.linear
  // CHECK-NOT: kiln.rms_norm
  return %r2 : tensor<2x8x128xf32>
}

// -----

func.func @attention(%q: tensor<2x8x4x16xf32>, %k: tensor<2x8x2x16xf32>) -> tensor<2x8x4x16xf32> {
  // CHECK-LABEL: func.func @attention
  // CHECK: kiln_kernel.attention %{{.+}}, %{{.+}}, %{{.+}} {causal = true, fused_ops = ["kiln.attention"], scale = 2.500000e-01 : f32}
  %o = kiln.attention %q, %k, %k {scale = 0.25 : f32} : (tensor<2x8x4x16xf32>, tensor<2x8x2x16xf32>, tensor<2x8x2x16xf32>) -> tensor<2x8x4x16xf32>
  return %o : tensor<2x8x4x16xf32>
}

// -----

// kiln.moe: routing with the token permutation, grouped gate+up (SwiGLU),
// grouped down and the combine. 16 tokens x 2 slots over 8 experts: about 4
// rows per expert, so block_m = 8, and the layout has 32 + 8 x 7 = 88 rows
// in 11 blocks. The routing's counter is a state.
// CHECK-LABEL: func.func @moe
func.func @moe(%x: tensor<16x64xf32> {kiln.name = "x"}) -> (tensor<16x64xf32> {kiln.name = "y"}) {
  %r = kiln.weight "router" : tensor<8x64xf32>
  %wg = kiln.weight_stack ["g0", "g1", "g2", "g3", "g4", "g5", "g6", "g7"] : tensor<8x32x64xf32>
  %wu = kiln.weight_stack ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"] : tensor<8x32x64xf32>
  %wd = kiln.weight_stack ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"] : tensor<8x64x32xf32>
  // CHECK: %[[SYNC:.+]] = kiln.state "kiln.moe_route.sync" : tensor<1xi32>
  // CHECK: %{{.+}}, %[[W:.+]], %{{.+}}, %[[ROWS:.+]], %[[BLOCKS:.+]], %[[SLOTS:.+]] = kiln_kernel.moe_route %{{.+}}, %{{.+}} sync(%[[SYNC]]) {block_m = 8 : i64
  // CHECK-SAME: shared_experts = 0 : i64
  // CHECK-SAME: -> (tensor<16x2xi32>, tensor<16x2xf32>, tensor<280xf32>, tensor<88xi32>, tensor<11xi32>, tensor<16x2xi32>)
  // CHECK: %[[ACT:.+]] = kiln_kernel.moe_up %{{.+}}, %[[ROWS]], %[[BLOCKS]], {{.+}} {block_m = 8 : i64
  // CHECK-SAME: -> tensor<88x32xf32>
  // CHECK: %[[Y:.+]] = kiln_kernel.moe_down %[[ACT]], %[[ROWS]], %[[BLOCKS]], {{.+}} -> tensor<88x64xf32>
  // CHECK: kiln_kernel.moe_combine %[[Y]], %[[SLOTS]], %[[W]] {
  %y = kiln.moe %x, %r, %wg, %wu, %wd {top_k = 2 : i64, scoring = "softmax"} : (tensor<16x64xf32>, tensor<8x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}

// -----

// kiln.mla_attention: 16 queries over 16 keys take the naive form (a GEMM of
// kv_b over the latent cache, then mla_naive); one query over the same keys
// (decode) the absorbed form (preferNaiveMLA, docs/kernels.md).
// CHECK-LABEL: func.func @mla_forms
func.func @mla_forms(%qn: tensor<1x16x4x16xf32> {kiln.name = "qn"}, %qr: tensor<1x16x4x8xf32> {kiln.name = "qr"},
                     %qn1: tensor<1x1x4x16xf32> {kiln.name = "qn1"}, %qr1: tensor<1x1x4x8xf32> {kiln.name = "qr1"},
                     %c: tensor<1x16x32xf32> {kiln.name = "c"}, %kr: tensor<1x16x8xf32> {kiln.name = "kr"})
    -> (tensor<1x16x4x16xf32> {kiln.name = "o"}, tensor<1x1x4x16xf32> {kiln.name = "o1"}) {
  %w = kiln.weight "kv_b" : tensor<128x32xf32>
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
