// RUN: kiln-opt %s --split-input-file --verify-diagnostics

func.func @scale_shape(%q: tensor<16x256xf8E4M3FN>, %s: tensor<16x2xf32>) -> tensor<16x200xf32> {
  %w = kiln.weight "w" : tensor<200x256xf8E4M3FN>
  %ws = kiln.weight "ws" : tensor<1x2xf32>
  // expected-error @+1 {{weight scale must have shape [2, 2], got [1, 2]}}
  %y = kiln.linear %q, %w scales(%s, %ws) {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<16x256xf8E4M3FN>, tensor<200x256xf8E4M3FN>, tensor<16x2xf32>, tensor<1x2xf32>) -> tensor<16x200xf32>
  return %y : tensor<16x200xf32>
}

// -----

func.func @unscaled_fp8(%x: tensor<16x256xf32>) -> tensor<16x200xf32> {
  %w = kiln.weight "w" : tensor<200x256xf8E4M3FN>
  // expected-error @+1 {{an FP8 weight needs the quant attribute and scales}}
  %y = kiln.linear %x, %w : (tensor<16x256xf32>, tensor<200x256xf8E4M3FN>) -> tensor<16x200xf32>
  return %y : tensor<16x200xf32>
}

// -----

func.func @act_scale(%x: tensor<16x300xf32>) -> (tensor<16x300xf8E4M3FN>, tensor<16x2xf32>) {
  // expected-error @+1 {{scale must have shape [16, 3], got [16, 2]}}
  %q, %s = kiln.quantize %x {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<16x300xf32>) -> (tensor<16x300xf8E4M3FN>, tensor<16x2xf32>)
  return %q, %s : tensor<16x300xf8E4M3FN>, tensor<16x2xf32>
}

// -----

func.func @cache_reuse(%x: tensor<1x1x8xf32>) -> (tensor<1x4x8xf32>, tensor<1x4x8xf32>) {
  %s = kiln.state "cache" : tensor<1x4x8xf32>
  // expected-error @+1 {{the cache is updated in place: the state value must have no other use}}
  %u = kiln.cache_update %s, %x : (tensor<1x4x8xf32>, tensor<1x1x8xf32>) -> tensor<1x4x8xf32>
  return %u, %s : tensor<1x4x8xf32>, tensor<1x4x8xf32>
}
