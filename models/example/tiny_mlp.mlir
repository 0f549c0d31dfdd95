// The bundled example model: token embedding, two residual SwiGLU MLP
// blocks with RMSNorm, a final RMSNorm and the LM head.
//   h = embed[tokens]
//   for each layer: h = h + W_down(silu(W_gate n) * (W_up n)), n = rms_norm(h)
//   logits = lm_head(rms_norm(h))
// Weights: tiny_mlp.safetensors (python3 models/example/make_weights.py).
// Locations name the checkpoint prefix of each op.
module attributes {kiln.weights = "tiny_mlp.safetensors"} {
  func.func @forward(%tokens: tensor<2x8xi32> {kiln.name = "tokens"})
      -> (tensor<2x8x256xf32> {kiln.name = "logits"}) {
    %emb = kiln.weight "model.embed_tokens.weight" : tensor<256x64xf32> loc("model.embed_tokens")
    %h0 = kiln.embedding %emb, %tokens : (tensor<256x64xf32>, tensor<2x8xi32>) -> tensor<2x8x64xf32> loc("model.embed_tokens")
    // layer 0
    %norm0_w = kiln.weight "model.layers.0.post_attention_layernorm.weight" : tensor<64xf32> loc("model.layers.0.post_attention_layernorm")
    %n0 = kiln.rms_norm %h0, %norm0_w {epsilon = 1.0e-06 : f32} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32> loc("model.layers.0.post_attention_layernorm")
    %gate0_w = kiln.weight "model.layers.0.mlp.gate_proj.weight" : tensor<128x64xf32> loc("model.layers.0.mlp.gate_proj")
    %up0_w = kiln.weight "model.layers.0.mlp.up_proj.weight" : tensor<128x64xf32> loc("model.layers.0.mlp.up_proj")
    %down0_w = kiln.weight "model.layers.0.mlp.down_proj.weight" : tensor<64x128xf32> loc("model.layers.0.mlp.down_proj")
    %g0 = kiln.linear %n0, %gate0_w : (tensor<2x8x64xf32>, tensor<128x64xf32>) -> tensor<2x8x128xf32> loc("model.layers.0.mlp.gate_proj")
    %u0 = kiln.linear %n0, %up0_w : (tensor<2x8x64xf32>, tensor<128x64xf32>) -> tensor<2x8x128xf32> loc("model.layers.0.mlp.up_proj")
    %a0 = kiln.swiglu %g0, %u0 : (tensor<2x8x128xf32>, tensor<2x8x128xf32>) -> tensor<2x8x128xf32> loc("model.layers.0.mlp.act_fn")
    %d0 = kiln.linear %a0, %down0_w : (tensor<2x8x128xf32>, tensor<64x128xf32>) -> tensor<2x8x64xf32> loc("model.layers.0.mlp.down_proj")
    %h1 = kiln.add %h0, %d0 : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32> loc("model.layers.0.residual")
    // layer 1
    %norm1_w = kiln.weight "model.layers.1.post_attention_layernorm.weight" : tensor<64xf32> loc("model.layers.1.post_attention_layernorm")
    %n1 = kiln.rms_norm %h1, %norm1_w {epsilon = 1.0e-06 : f32} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32> loc("model.layers.1.post_attention_layernorm")
    %gate1_w = kiln.weight "model.layers.1.mlp.gate_proj.weight" : tensor<128x64xf32> loc("model.layers.1.mlp.gate_proj")
    %up1_w = kiln.weight "model.layers.1.mlp.up_proj.weight" : tensor<128x64xf32> loc("model.layers.1.mlp.up_proj")
    %down1_w = kiln.weight "model.layers.1.mlp.down_proj.weight" : tensor<64x128xf32> loc("model.layers.1.mlp.down_proj")
    %g1 = kiln.linear %n1, %gate1_w : (tensor<2x8x64xf32>, tensor<128x64xf32>) -> tensor<2x8x128xf32> loc("model.layers.1.mlp.gate_proj")
    %u1 = kiln.linear %n1, %up1_w : (tensor<2x8x64xf32>, tensor<128x64xf32>) -> tensor<2x8x128xf32> loc("model.layers.1.mlp.up_proj")
    %a1 = kiln.swiglu %g1, %u1 : (tensor<2x8x128xf32>, tensor<2x8x128xf32>) -> tensor<2x8x128xf32> loc("model.layers.1.mlp.act_fn")
    %d1 = kiln.linear %a1, %down1_w : (tensor<2x8x128xf32>, tensor<64x128xf32>) -> tensor<2x8x64xf32> loc("model.layers.1.mlp.down_proj")
    %h2 = kiln.add %h1, %d1 : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32> loc("model.layers.1.residual")
    %fnorm_w = kiln.weight "model.norm.weight" : tensor<64xf32> loc("model.norm")
    %out = kiln.rms_norm %h2, %fnorm_w {epsilon = 1.0e-06 : f32} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32> loc("model.norm")
    %head_w = kiln.weight "lm_head.weight" : tensor<256x64xf32> loc("lm_head")
    %logits = kiln.linear %out, %head_w : (tensor<2x8x64xf32>, tensor<256x64xf32>) -> tensor<2x8x256xf32> loc("lm_head")
    return %logits : tensor<2x8x256xf32>
  }
}
