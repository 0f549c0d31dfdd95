// RUN: kiln-opt %s --split-input-file --verify-diagnostics

func.func @linear_k_mismatch(%x: tensor<2x64xf32>) -> tensor<2x128xf32> {
  %w = kiln.weight "w" : tensor<128x32xf32>
  // expected-error @+1 {{input's last dimension (64) must equal the weight's in_features}}
  %y = kiln.linear %x, %w : (tensor<2x64xf32>, tensor<128x32xf32>) -> tensor<2x128xf32>
  return %y : tensor<2x128xf32>
}

// -----

func.func @linear_bad_result(%x: tensor<2x64xf32>) -> tensor<2x64xf32> {
  %w = kiln.weight "w" : tensor<128x64xf32>
  // expected-error @+1 {{result must have shape [2, 128], got [2, 64]}}
  %y = kiln.linear %x, %w : (tensor<2x64xf32>, tensor<128x64xf32>) -> tensor<2x64xf32>
  return %y : tensor<2x64xf32>
}

// -----

func.func @rms_norm_width(%x: tensor<2x64xf32>) -> tensor<2x64xf32> {
  %w = kiln.weight "w" : tensor<32xf32>
  // expected-error @+1 {{weight must have shape [64], got [32]}}
  %y = kiln.rms_norm %x, %w : (tensor<2x64xf32>, tensor<32xf32>) -> tensor<2x64xf32>
  return %y : tensor<2x64xf32>
}

// -----

func.func @dynamic(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  // expected-error @+1 {{operand #0 must have a static shape, got [?, 64]}}
  %y = kiln.add %x, %x : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

func.func @add_shapes(%a: tensor<2x64xf32>, %b: tensor<2x32xf32>) -> tensor<2x64xf32> {
  // expected-error @+1 {{operands must have the same shape, got [2, 64] and [2, 32]}}
  %y = kiln.add %a, %b : (tensor<2x64xf32>, tensor<2x32xf32>) -> tensor<2x64xf32>
  return %y : tensor<2x64xf32>
}

// -----

func.func @embedding(%t: tensor<2x8xi32>) -> tensor<2x8x32xf32> {
  %e = kiln.weight "e" : tensor<256x64xf32>
  // expected-error @+1 {{result must have shape [2, 8, 64], got [2, 8, 32]}}
  %h = kiln.embedding %e, %t : (tensor<256x64xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  return %h : tensor<2x8x32xf32>
}

// -----

func.func @gqa(%q: tensor<2x8x3x16xf32>, %k: tensor<2x8x2x16xf32>) -> tensor<2x8x3x16xf32> {
  // expected-error @+1 {{q_heads (3) must be a multiple of kv_heads (2)}}
  %o = kiln.attention %q, %k, %k {scale = 0.25 : f32} : (tensor<2x8x3x16xf32>, tensor<2x8x2x16xf32>, tensor<2x8x2x16xf32>) -> tensor<2x8x3x16xf32>
  return %o : tensor<2x8x3x16xf32>
}

// -----

func.func @rope_dim(%q: tensor<2x8x4x16xf32>) -> tensor<2x8x4x16xf32> {
  // expected-error @+1 {{rotary_dim must be even and in (0, head_dim = 16], got 15}}
  %r = kiln.rope %q {theta = 10000.0 : f32, rotary_dim = 15 : i64} : (tensor<2x8x4x16xf32>) -> tensor<2x8x4x16xf32>
  return %r : tensor<2x8x4x16xf32>
}

// -----

func.func @mla_kvb(%qn: tensor<1x8x4x16xf32>, %qr: tensor<1x8x4x8xf32>, %c: tensor<1x8x32xf32>, %kr: tensor<1x8x8xf32>) -> tensor<1x8x4x16xf32> {
  %wkvb = kiln.weight "kv_b_proj" : tensor<100x32xf32>
  // expected-error @+1 {{kv_b must have shape [128, 32], got [100, 32]}}
  %o = kiln.mla_attention %qn, %qr, %c, %kr, %wkvb {scale = 0.1 : f32} : (tensor<1x8x4x16xf32>, tensor<1x8x4x8xf32>, tensor<1x8x32xf32>, tensor<1x8x8xf32>, tensor<100x32xf32>) -> tensor<1x8x4x16xf32>
  return %o : tensor<1x8x4x16xf32>
}

// -----

func.func @mla_fp8_latent_no_scale(%qn: tensor<1x8x4x16xf32>, %qr: tensor<1x8x4x8xf32>, %c: tensor<1x8x32xf8E4M3FN>, %kr: tensor<1x8x8xf32>) -> tensor<1x8x4x16xf32> {
  %wkvb = kiln.weight "kv_b_proj" : tensor<128x32xf32>
  // expected-error @+1 {{an e4m3 kv_latent needs kv_latent_scale}}
  %o = kiln.mla_attention %qn, %qr, %c, %kr, %wkvb {scale = 0.1 : f32} : (tensor<1x8x4x16xf32>, tensor<1x8x4x8xf32>, tensor<1x8x32xf8E4M3FN>, tensor<1x8x8xf32>, tensor<128x32xf32>) -> tensor<1x8x4x16xf32>
  return %o : tensor<1x8x4x16xf32>
}

// -----

func.func @mla_fp8_latent_scale_tiles(%qn: tensor<1x8x4x16xf32>, %qr: tensor<1x8x4x8xf32>, %c: tensor<1x8x32xf8E4M3FN>, %cs: tensor<1x8x3xf32>, %kr: tensor<1x8x8xf32>) -> tensor<1x8x4x16xf32> {
  %wkvb = kiln.weight "kv_b_proj" : tensor<128x32xf32>
  // expected-error @+1 {{kv_latent_scale must be [batch, kv_len, tiles], the tiles dividing kv_lora_rank}}
  %o = kiln.mla_attention %qn, %qr, %c, %kr, %wkvb kv_latent_scale(%cs) {scale = 0.1 : f32} : (tensor<1x8x4x16xf32>, tensor<1x8x4x8xf32>, tensor<1x8x32xf8E4M3FN>, tensor<1x8x8xf32>, tensor<128x32xf32>, tensor<1x8x3xf32>) -> tensor<1x8x4x16xf32>
  return %o : tensor<1x8x4x16xf32>
}

// -----

func.func @cache_e4m3_float_values(%v: tensor<1x2x32xf32>) -> tensor<1x8x32xf8E4M3FN> {
  %c = kiln.state "c" : tensor<1x8x32xf8E4M3FN>
  // expected-error @+1 {{an e4m3 cache takes e4m3 values}}
  %u = kiln.cache_update %c, %v : (tensor<1x8x32xf8E4M3FN>, tensor<1x2x32xf32>) -> tensor<1x8x32xf8E4M3FN>
  return %u : tensor<1x8x32xf8E4M3FN>
}

// -----

func.func @moe_groups(%x: tensor<16x64xf32>) -> tensor<16x64xf32> {
  %r = kiln.weight "gate" : tensor<8x64xf32>
  %wg = kiln.weight "w1" : tensor<8x32x64xf32>
  %wd = kiln.weight "w2" : tensor<8x64x32xf32>
  // expected-error @+1 {{n_group (3) must divide the number of experts (8)}}
  %y = kiln.moe %x, %r, %wg, %wg, %wd {top_k = 2 : i64, scoring = "softmax", n_group = 3 : i64} : (tensor<16x64xf32>, tensor<8x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}

// -----

func.func @moe_scoring(%x: tensor<16x64xf32>) -> tensor<16x64xf32> {
  %r = kiln.weight "gate" : tensor<8x64xf32>
  %wg = kiln.weight "w1" : tensor<8x32x64xf32>
  %wd = kiln.weight "w2" : tensor<8x64x32xf32>
  // expected-error @+1 {{scoring must be "sigmoid" or "softmax", got "relu"}}
  %y = kiln.moe %x, %r, %wg, %wg, %wd {top_k = 2 : i64, scoring = "relu"} : (tensor<16x64xf32>, tensor<8x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}

// -----

func.func @weight_name() -> tensor<4xf32> {
  // expected-error @+1 {{weight name must not be empty}}
  %w = kiln.weight "" : tensor<4xf32>
  return %w : tensor<4xf32>
}

// -----

func.func @bias_width(%x: tensor<2x64xf32>, %b: tensor<32xf32>) -> tensor<2x64xf32> {
  // expected-error @+1 {{bias must have shape [64], got [32]}}
  %y = kiln.bias_add %x, %b : (tensor<2x64xf32>, tensor<32xf32>) -> tensor<2x64xf32>
  return %y : tensor<2x64xf32>
}

// -----

func.func @bias_result(%x: tensor<2x64xf32>, %b: tensor<64xf32>) -> tensor<64xf32> {
  // expected-error @+1 {{result must have shape [2, 64], got [64]}}
  %y = kiln.bias_add %x, %b : (tensor<2x64xf32>, tensor<64xf32>) -> tensor<64xf32>
  return %y : tensor<64xf32>
}
