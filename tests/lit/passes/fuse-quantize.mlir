// RUN: kiln-opt %s --kiln-fuse-quantize --split-input-file | FileCheck %s

// CHECK-LABEL: func.func @rms_norm
func.func @rms_norm(%x: tensor<4x256xf32>, %w: tensor<256xf32>) -> (tensor<4x256xf32>, tensor<4x256xf8E4M3FN>, tensor<4x2xf32>) {
  // CHECK: %[[Y:.+]], %[[Q:.+]], %[[S:.+]] = kiln_kernel.rms_norm_quant %{{.+}}, %{{.+}} {act = 128 : i64, epsilon = {{.+}}, fused_ops = ["kiln.rms_norm", "kiln.quantize"]}
  // CHECK-NOT: kiln_kernel.quantize
  // CHECK: return %[[Y]], %[[Q]], %[[S]]
  %y = kiln_kernel.rms_norm %x, %w {epsilon = 1.0e-06 : f32, fused_ops = ["kiln.rms_norm"]} : (tensor<4x256xf32>, tensor<256xf32>) -> tensor<4x256xf32>
  %q, %s = kiln_kernel.quantize %y {act = 128 : i64, fused_ops = ["kiln.quantize"]} : (tensor<4x256xf32>) -> (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>)
  return %y, %q, %s : tensor<4x256xf32>, tensor<4x256xf8E4M3FN>, tensor<4x2xf32>
}

// -----

// CHECK-LABEL: func.func @swiglu
func.func @swiglu(%g: tensor<4x320xf32>, %u: tensor<4x320xf32>) -> (tensor<4x320xf8E4M3FN>, tensor<4x3xf32>) {
  // CHECK: kiln_kernel.swiglu_quant %{{.+}}, %{{.+}} {act = 128 : i64, fused_ops = ["kiln.swiglu", "kiln.quantize"]}
  // CHECK-NOT: kiln_kernel.elementwise
  %a = kiln_kernel.elementwise "swiglu" %g, %u {block = 64 : i64, fused_ops = ["kiln.swiglu"]} : (tensor<4x320xf32>, tensor<4x320xf32>) -> tensor<4x320xf32>
  %q, %s = kiln_kernel.quantize %a {act = 128 : i64, fused_ops = ["kiln.quantize"]} : (tensor<4x320xf32>) -> (tensor<4x320xf8E4M3FN>, tensor<4x3xf32>)
  return %q, %s : tensor<4x320xf8E4M3FN>, tensor<4x3xf32>
}

// -----

// A SwiGLU output used elsewhere too is not fused (it would be computed twice).
// CHECK-LABEL: func.func @swiglu_shared
func.func @swiglu_shared(%g: tensor<4x128xf32>, %u: tensor<4x128xf32>) -> (tensor<4x128xf32>, tensor<4x128xf8E4M3FN>, tensor<4x1xf32>) {
  // CHECK: kiln_kernel.elementwise "swiglu"
  // CHECK: kiln_kernel.quantize
  %a = kiln_kernel.elementwise "swiglu" %g, %u {block = 64 : i64, fused_ops = ["kiln.swiglu"]} : (tensor<4x128xf32>, tensor<4x128xf32>) -> tensor<4x128xf32>
  %q, %s = kiln_kernel.quantize %a {act = 128 : i64, fused_ops = ["kiln.quantize"]} : (tensor<4x128xf32>) -> (tensor<4x128xf8E4M3FN>, tensor<4x1xf32>)
  return %a, %q, %s : tensor<4x128xf32>, tensor<4x128xf8E4M3FN>, tensor<4x1xf32>
}

// -----

// CHECK-LABEL: func.func @mla
func.func @mla(%qn: tensor<1x2x2x32xf32>, %qr: tensor<1x2x2x16xf32>, %c: tensor<1x2x64xf32>, %kr: tensor<1x2x16xf32>, %w: tensor<320x64xf32>) -> (tensor<1x2x256xf8E4M3FN>, tensor<1x2x2xf32>) {
  // CHECK: kiln_kernel.mla_attention_quant {{.*}}act = 128 : i64{{.*}}fused_ops = ["kiln.mla_attention", "kiln.quantize"]
  // CHECK-NOT: kiln_kernel.quantize
  %o, %ws = kiln_kernel.mla_attention %qn, %qr, %c, %kr, %w {scale = 0.1 : f32, causal = true, fused_ops = ["kiln.mla_attention"]} : (tensor<1x2x2x32xf32>, tensor<1x2x2x16xf32>, tensor<1x2x64xf32>, tensor<1x2x16xf32>, tensor<320x64xf32>) -> (tensor<1x2x2x128xf32>, tensor<4x144xf32>)
  %v = kiln_kernel.view %o : (tensor<1x2x2x128xf32>) -> tensor<1x2x256xf32>
  %q, %s = kiln_kernel.quantize %v {act = 128 : i64, fused_ops = ["kiln.quantize"]} : (tensor<1x2x256xf32>) -> (tensor<1x2x256xf8E4M3FN>, tensor<1x2x2xf32>)
  return %q, %s : tensor<1x2x256xf8E4M3FN>, tensor<1x2x2xf32>
}
