// RUN: kiln-opt %s --split-input-file | FileCheck %s
// Round trip of every graph op through the printer and parser.

// CHECK-LABEL: func.func @mlp
func.func @mlp(%x: tensor<2x8x64xf32>) -> tensor<2x8x64xf32> {
  // CHECK: %[[W:.+]] = kiln.weight "norm" : tensor<64xf32>
  %w = kiln.weight "norm" : tensor<64xf32>
  // CHECK: kiln.rms_norm %{{.+}}, %[[W]] : (tensor<2x8x64xf32>, tensor<64xf32>)
  %n = kiln.rms_norm %x, %w {epsilon = 1.0e-06 : f32} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %wg = kiln.weight "gate" : tensor<128x64xf32>
  // CHECK: %[[G:.+]] = kiln.linear
  %g = kiln.linear %n, %wg : (tensor<2x8x64xf32>, tensor<128x64xf32>) -> tensor<2x8x128xf32>
  // CHECK: %[[A:.+]] = kiln.swiglu %[[G]], %[[G]]
  %a = kiln.swiglu %g, %g : (tensor<2x8x128xf32>, tensor<2x8x128xf32>) -> tensor<2x8x128xf32>
  %wd = kiln.weight "down" : tensor<64x128xf32>
  %d = kiln.linear %a, %wd : (tensor<2x8x128xf32>, tensor<64x128xf32>) -> tensor<2x8x64xf32>
  // CHECK: kiln.add
  %h = kiln.add %x, %d : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  // CHECK: kiln.mul
  %m = kiln.mul %h, %h : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  return %m : tensor<2x8x64xf32>
}

// -----

// CHECK-LABEL: func.func @attention
func.func @attention(%s: tensor<2xi32>, %q: tensor<2x8x4x16xf32>, %k: tensor<2x8x2x16xf32>, %v: tensor<2x8x2x16xf32>) -> tensor<2x8x4x16xf32> {
  // CHECK: kiln.rope {{.*}}interleaved = true
  %r = kiln.rope %q start(%s) {theta = 10000.0 : f32, rotary_dim = 16 : i64, interleaved = true} : (tensor<2x8x4x16xf32>, tensor<2xi32>) -> tensor<2x8x4x16xf32>
  // CHECK: kiln.attention {{.*}}{scale = 2.500000e-01 : f32}
  %o = kiln.attention %r, %k, %v {scale = 0.25 : f32, causal = true} : (tensor<2x8x4x16xf32>, tensor<2x8x2x16xf32>, tensor<2x8x2x16xf32>) -> tensor<2x8x4x16xf32>
  return %o : tensor<2x8x4x16xf32>
}

// -----

// CHECK-LABEL: func.func @mla
func.func @mla(%qn: tensor<1x8x4x16xf32>, %qr: tensor<1x8x4x8xf32>, %c: tensor<1x8x32xf32>, %kr: tensor<1x8x8xf32>) -> tensor<1x8x4x16xf32> {
  %wkvb = kiln.weight "kv_b_proj" : tensor<128x32xf32>
  // CHECK: kiln.mla_attention
  %o = kiln.mla_attention %qn, %qr, %c, %kr, %wkvb {scale = 0.1 : f32} : (tensor<1x8x4x16xf32>, tensor<1x8x4x8xf32>, tensor<1x8x32xf32>, tensor<1x8x8xf32>, tensor<128x32xf32>) -> tensor<1x8x4x16xf32>
  return %o : tensor<1x8x4x16xf32>
}

// -----

// CHECK-LABEL: func.func @moe
func.func @moe(%x: tensor<16x64xf32>) -> tensor<16x64xf32> {
  %r = kiln.weight "gate" : tensor<8x64xf32>
  %b = kiln.weight "bias" : tensor<8xf32>
  %wg = kiln.weight "w1" : tensor<8x32x64xf32>
  %wu = kiln.weight "w3" : tensor<8x32x64xf32>
  %wd = kiln.weight "w2" : tensor<8x64x32xf32>
  // CHECK: kiln.moe %{{.+}}, %{{.+}} bias(%{{.+}}), %{{.+}}, %{{.+}}, %{{.+}} {{{.*}}n_group = 2 : i64{{.*}}scoring = "sigmoid"
  %y = kiln.moe %x, %r bias(%b), %wg, %wu, %wd {top_k = 2 : i64, scoring = "sigmoid", n_group = 2 : i64, topk_group = 1 : i64} : (tensor<16x64xf32>, tensor<8x64xf32>, tensor<8xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<16x64xf32>
  // CHECK: kiln.reshape
  %z = kiln.reshape %y : (tensor<16x64xf32>) -> tensor<2x8x64xf32>
  %z2 = kiln.reshape %z : (tensor<2x8x64xf32>) -> tensor<16x64xf32>
  return %z2 : tensor<16x64xf32>
}

// -----

// CHECK-LABEL: func.func @bias
func.func @bias(%x: tensor<2x8x64xf32>) -> tensor<2x8x128xf32> {
  %w = kiln.weight "q_proj.weight" : tensor<128x64xbf16>
  %b = kiln.weight "q_proj.bias" : tensor<128xbf16>
  %y = kiln.linear %x, %w : (tensor<2x8x64xf32>, tensor<128x64xbf16>) -> tensor<2x8x128xf32>
  // CHECK: kiln.bias_add %{{.+}}, %{{.+}} : (tensor<2x8x128xf32>, tensor<128xbf16>) -> tensor<2x8x128xf32>
  %z = kiln.bias_add %y, %b : (tensor<2x8x128xf32>, tensor<128xbf16>) -> tensor<2x8x128xf32>
  return %z : tensor<2x8x128xf32>
}
