// RUN: kiln-opt %s --split-input-file | FileCheck %s
// RUN: kiln-opt %s --split-input-file --kiln-lower-to-kernels | FileCheck %s --check-prefix=KERNEL

// CHECK-LABEL: func.func @linear_fp8
// KERNEL-LABEL: func.func @linear_fp8
func.func @linear_fp8(%x: tensor<16x256xf32>) -> tensor<16x200xf32> {
  // CHECK: kiln.quantize %{{.+}} {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>}
  // KERNEL: kiln_kernel.quantize %{{.+}} {act = 128 : i64
  %q, %s = kiln.quantize %x {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<16x256xf32>) -> (tensor<16x256xf8E4M3FN>, tensor<16x2xf32>)
  %w = kiln.weight "w.weight" : tensor<200x256xf8E4M3FN>
  %ws = kiln.weight "w.weight_scale_inv" : tensor<2x2xf32>
  // CHECK: kiln.linear %{{.+}}, %{{.+}} scales(%{{.+}}, %{{.+}}) {quant = #kiln.block_quant
  // KERNEL: kiln_kernel.gemm_fp8 {{.*}}act = 128 : i64{{.*}}weight_block_n = 128 : i64
  %y = kiln.linear %q, %w scales(%s, %ws) {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<16x256xf8E4M3FN>, tensor<200x256xf8E4M3FN>, tensor<16x2xf32>, tensor<2x2xf32>) -> tensor<16x200xf32>
  return %y : tensor<16x200xf32>
}

// -----

// CHECK-LABEL: func.func @cast_and_state
func.func @cast_and_state(%x: tensor<1x1x8xf32>, %p: tensor<1xi32>) -> (tensor<1x1x8xf8E4M3FN>, tensor<1x4x8xf32>) {
  // CHECK: kiln.cast
  %c = kiln.cast %x : (tensor<1x1x8xf32>) -> tensor<1x1x8xf8E4M3FN>
  // CHECK: kiln.state "cache"
  %s = kiln.state "cache" : tensor<1x4x8xf32>
  // CHECK: kiln.cache_update %{{.+}}, %{{.+}} start(%{{.+}})
  // KERNEL: kiln_kernel.cache_write
  %u = kiln.cache_update %s, %x start(%p) : (tensor<1x4x8xf32>, tensor<1x1x8xf32>, tensor<1xi32>) -> tensor<1x4x8xf32>
  return %c, %u : tensor<1x1x8xf8E4M3FN>, tensor<1x4x8xf32>
}
