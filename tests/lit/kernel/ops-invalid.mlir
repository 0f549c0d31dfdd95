// RUN: kiln-opt %s --split-input-file --verify-diagnostics

func.func @bad_kind(%a: tensor<16xf32>) -> tensor<16xf32> {
  // expected-error @+1 {{unknown kind "sub" (expected add, mul, swiglu or bias_add)}}
  %y = kiln_kernel.elementwise "sub" %a, %a {block = 64 : i64, fused_ops = []} : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  return %y : tensor<16xf32>
}

// -----

func.func @bad_tile(%x: tensor<16x64xf32>, %w: tensor<128x64xf32>) -> tensor<16x128xf32> {
  // expected-error @+1 {{attribute 'tile_n' failed to satisfy constraint}}
  %g = kiln_kernel.gemm %x, %w {tile_n = 0 : i64, fused_ops = []} : (tensor<16x64xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
  return %g : tensor<16x128xf32>
}

// -----

func.func @bad_gemm(%x: tensor<16x32xf32>, %w: tensor<128x64xf32>) -> tensor<16x128xf32> {
  // expected-error @+1 {{weight must be [N, K] with K the input's row width}}
  %g = kiln_kernel.gemm %x, %w {tile_n = 16 : i64, fused_ops = []} : (tensor<16x32xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
  return %g : tensor<16x128xf32>
}

// -----

func.func @bad_view(%x: tensor<16x32xf32>) -> tensor<16x64xf32> {
  // expected-error @+1 {{a view keeps the element type and at most the element count}}
  %v = kiln_kernel.view %x : (tensor<16x32xf32>) -> tensor<16x64xf32>
  return %v : tensor<16x64xf32>
}

// -----

func.func @bad_view_type(%x: tensor<16x64xf32>) -> tensor<16x64xbf16> {
  // expected-error @+1 {{a view keeps the element type and at most the element count}}
  %v = kiln_kernel.view %x : (tensor<16x64xf32>) -> tensor<16x64xbf16>
  return %v : tensor<16x64xbf16>
}

// -----

func.func @moe_route_layout(%x: tensor<16x64xf32>, %r: tensor<8x64xf32>, %s: tensor<1xi32>) {
  // expected-error @+1 {{layout results must be sorted_token [88], block_expert [11] and slot_row [16, 2]}}
  %a:6 = kiln_kernel.moe_route %x, %r sync(%s) {top_k = 2 : i64, scoring = "softmax", n_group = 1 : i64, topk_group = 1 : i64, group_score = "top2_sum", norm_topk_prob = true, routed_scaling_factor = 1.0 : f32, block_m = 8 : i64, shared_experts = 0 : i64, fused_ops = ["kiln.moe"]} : (tensor<16x64xf32>, tensor<8x64xf32>, tensor<1xi32>) -> (tensor<16x2xi32>, tensor<16x2xf32>, tensor<280xf32>, tensor<64xi32>, tensor<8xi32>, tensor<16x2xi32>)
  return
}

// -----

func.func @moe_up_layout(%x: tensor<16x64xf32>, %rows: tensor<88xi32>, %blocks: tensor<10xi32>, %wg: tensor<8x32x64xf32>) {
  // expected-error @+1 {{the contiguous layout must have 88 rows in blocks of 8}}
  %a = kiln_kernel.moe_up %x, %rows, %blocks, %wg, %wg {block_m = 8 : i64, tile_f = 32 : i64, fused_ops = ["kiln.moe"]} : (tensor<16x64xf32>, tensor<88xi32>, tensor<10xi32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>) -> tensor<88x32xf32>
  return
}

// -----

func.func @mla_bad_rotation(%qn: tensor<1x2x2x16xf32>, %qr: tensor<1x2x2x8xf32>, %kv: tensor<1x4x2x32xf32>, %kr: tensor<1x4x8xf32>) {
  // expected-error @+1 {{q_rotation needs theta, rotary_dim (even, at most the rope width)}}
  %o, %ws = kiln_kernel.mla_naive %qn, %qr, %kv, %kr {scale = 0.1 : f32, causal = true, q_rotation = {theta = 1.0e+04 : f32, rotary_dim = 16 : i64}, fused_ops = []} : (tensor<1x2x2x16xf32>, tensor<1x2x2x8xf32>, tensor<1x4x2x32xf32>, tensor<1x4x8xf32>) -> (tensor<1x2x2x16xf32>, tensor<4x8xf32>)
  return
}

// -----

func.func @bias_add_width(%x: tensor<16x128xf32>, %b: tensor<64xf32>) -> tensor<16x128xf32> {
  // expected-error @+1 {{bias_add: rhs must have as many elements as the last dimension of lhs}}
  %y = kiln_kernel.elementwise "bias_add" %x, %b {block = 64 : i64, fused_ops = []} : (tensor<16x128xf32>, tensor<64xf32>) -> tensor<16x128xf32>
  return %y : tensor<16x128xf32>
}
