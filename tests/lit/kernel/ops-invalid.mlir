// RUN: kiln-opt %s --split-input-file --verify-diagnostics

func.func @bad_kind(%a: tensor<16xf32>) -> tensor<16xf32> {
  // expected-error @+1 {{unknown kind "sub" (expected add, mul or swiglu)}}
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

func.func @bad_view(%x: tensor<16x64xf32>) -> tensor<16x32xf32> {
  // expected-error @+1 {{a view keeps the element type and the element count}}
  %v = kiln_kernel.view %x : (tensor<16x64xf32>) -> tensor<16x32xf32>
  return %v : tensor<16x32xf32>
}
