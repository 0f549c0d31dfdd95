// RUN: kiln-opt %s --kiln-fuse-gated-mlp | FileCheck %s

// CHECK-LABEL: func.func @mlp
func.func @mlp(%x: tensor<16x64xf32>, %wg: tensor<128x64xf32>, %wu: tensor<128x64xf32>) -> tensor<16x128xf32> {
  // CHECK: %[[A:.+]] = kiln_kernel.gemm_swiglu %{{.+}}, %{{.+}}, %{{.+}} {fused_ops = ["kiln.linear", "kiln.linear", "kiln.swiglu"], tile_n = 32 : i64}
  // CHECK-NOT: kiln_kernel.gemm %
  // CHECK-NOT: kiln_kernel.elementwise
  // CHECK: return %[[A]]
  %g = kiln_kernel.gemm %x, %wg {tile_n = 32 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x64xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
  %u = kiln_kernel.gemm %x, %wu {tile_n = 32 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x64xf32>, tensor<128x64xf32>) -> tensor<16x128xf32>
  %a = kiln_kernel.elementwise "swiglu" %g, %u {block = 64 : i64, fused_ops = ["kiln.swiglu"]} : (tensor<16x128xf32>, tensor<16x128xf32>) -> tensor<16x128xf32>
  return %a : tensor<16x128xf32>
}

// FP8: gate and up block-scaled GEMMs, the SwiGLU and the quantization of its
// output become one gemm_swiglu_fp8 (tile_n = act, whole tiles per program).
// CHECK-LABEL: func.func @fp8
func.func @fp8(%q: tensor<16x256xf8E4M3FN>, %s: tensor<16x2xf32>, %wg: tensor<256x256xf8E4M3FN>, %wu: tensor<256x256xf8E4M3FN>, %sg: tensor<2x2xf32>, %su: tensor<2x2xf32>) -> (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>) {
  // CHECK: %[[Q:.+]], %[[S:.+]], %{{.+}} = kiln_kernel.gemm_swiglu_fp8 %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {act = 128 : i64, fused_ops = ["kiln.linear", "kiln.linear", "kiln.swiglu", "kiln.quantize"], tile_n = 128 : i64, weight_block_n = 128 : i64}
  // CHECK-NOT: kiln_kernel.elementwise
  // CHECK: return %[[Q]], %[[S]]
  %g = kiln_kernel.gemm_fp8 %q, %wg, %s, %sg {tile_n = 8 : i64, act = 128 : i64, weight_block_n = 128 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x256xf8E4M3FN>, tensor<256x256xf8E4M3FN>, tensor<16x2xf32>, tensor<2x2xf32>) -> tensor<16x256xf32>
  %u = kiln_kernel.gemm_fp8 %q, %wu, %s, %su {tile_n = 8 : i64, act = 128 : i64, weight_block_n = 128 : i64, fused_ops = ["kiln.linear"]} : (tensor<16x256xf8E4M3FN>, tensor<256x256xf8E4M3FN>, tensor<16x2xf32>, tensor<2x2xf32>) -> tensor<16x256xf32>
  %a = kiln_kernel.elementwise "swiglu" %g, %u {block = 64 : i64, fused_ops = ["kiln.swiglu"]} : (tensor<16x256xf32>, tensor<16x256xf32>) -> tensor<16x256xf32>
  %aq, %as = kiln_kernel.quantize %a {act = 128 : i64, fused_ops = ["kiln.quantize"]} : (tensor<16x256xf32>) -> (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>)
  return %aq, %as : tensor<16x256xf8E4M3FN>, tensor<16x2xf32>
}
