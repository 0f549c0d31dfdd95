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

// A projection's bias is a broadcast add after the GEMM; the residual add
// after it is not a bias.
// CHECK-LABEL: func.func @bias
func.func @bias(%x: tensor<2x8x64xf32>) -> tensor<2x8x64xf32> {
  %w = kiln.weight "o_proj.weight" : tensor<64x64xf32>
  %b = kiln.weight "o_proj.bias" : tensor<64xf32>
  // CHECK: %[[G:.+]] = kiln_kernel.gemm
  %y = kiln.linear %x, %w : (tensor<2x8x64xf32>, tensor<64x64xf32>) -> tensor<2x8x64xf32>
  // CHECK: %[[B:.+]] = kiln_kernel.elementwise "bias_add" %[[G]], %{{.+}} {block = {{.+}}, fused_ops = ["kiln.bias_add"]} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %z = kiln.bias_add %y, %b : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  // CHECK: kiln_kernel.elementwise "add" %[[B]], %{{.+}}
  %h = kiln.add %z, %x : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  return %h : tensor<2x8x64xf32>
}
