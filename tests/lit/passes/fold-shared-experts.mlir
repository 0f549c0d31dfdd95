// RUN: kiln-opt %s --kiln-fold-shared-experts --split-input-file | FileCheck %s

// The shared expert's weights join the expert stacks; the MLP and the add
// are gone.
// CHECK-LABEL: func.func @shared
func.func @shared(%x: tensor<16x64xf32>) -> tensor<16x64xf32> {
  %r = kiln.weight "router" : tensor<4x64xf32>
  %wg = kiln.weight_stack ["g0", "g1", "g2", "g3"] : tensor<4x32x64xf32>
  %wu = kiln.weight_stack ["u0", "u1", "u2", "u3"] : tensor<4x32x64xf32>
  %wd = kiln.weight_stack ["d0", "d1", "d2", "d3"] : tensor<4x64x32xf32>
  // CHECK-DAG: %[[G:.+]] = kiln.weight_stack ["g0", "g1", "g2", "g3", "shared.gate"] : tensor<5x32x64xf32>
  // CHECK-DAG: %[[U:.+]] = kiln.weight_stack ["u0", "u1", "u2", "u3", "shared.up"] : tensor<5x32x64xf32>
  // CHECK-DAG: %[[D:.+]] = kiln.weight_stack ["d0", "d1", "d2", "d3", "shared.down"] : tensor<5x64x32xf32>
  // CHECK: %[[Y:.+]] = kiln.moe %{{.+}}, %{{.+}}, %[[G]], %[[U]], %[[D]] {{{.*}}shared_experts = 1 : i64
  // CHECK-NOT: kiln.linear
  // CHECK-NOT: kiln.add
  // CHECK: return %[[Y]]
  %m = kiln.moe %x, %r, %wg, %wu, %wd {top_k = 2 : i64, scoring = "softmax"} : (tensor<16x64xf32>, tensor<4x64xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<16x64xf32>
  %sg = kiln.weight "shared.gate" : tensor<32x64xf32>
  %su = kiln.weight "shared.up" : tensor<32x64xf32>
  %sd = kiln.weight "shared.down" : tensor<64x32xf32>
  %g = kiln.linear %x, %sg : (tensor<16x64xf32>, tensor<32x64xf32>) -> tensor<16x32xf32>
  %u = kiln.linear %x, %su : (tensor<16x64xf32>, tensor<32x64xf32>) -> tensor<16x32xf32>
  %a = kiln.swiglu %g, %u : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x32xf32>
  %s = kiln.linear %a, %sd : (tensor<16x32xf32>, tensor<64x32xf32>) -> tensor<16x64xf32>
  %y = kiln.add %s, %m : (tensor<16x64xf32>, tensor<16x64xf32>) -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}

// -----

// FP8: the shared linears read kiln.quantize results; the block scales join
// the scale stacks.
// CHECK-LABEL: func.func @shared_fp8
func.func @shared_fp8(%x: tensor<4x256xf32>) -> tensor<4x256xf32> {
  %r = kiln.weight "router" : tensor<2x256xf32>
  %wg = kiln.weight_stack ["g0", "g1"] : tensor<2x128x256xf8E4M3FN>
  %wu = kiln.weight_stack ["u0", "u1"] : tensor<2x128x256xf8E4M3FN>
  %wd = kiln.weight_stack ["d0", "d1"] : tensor<2x256x128xf8E4M3FN>
  %wgs = kiln.weight_stack ["g0s", "g1s"] : tensor<2x1x2xf32>
  %wus = kiln.weight_stack ["u0s", "u1s"] : tensor<2x1x2xf32>
  %wds = kiln.weight_stack ["d0s", "d1s"] : tensor<2x2x1xf32>
  %xq, %xs = kiln.quantize %x {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<4x256xf32>) -> (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>)
  // CHECK-DAG: kiln.weight_stack ["g0s", "g1s", "sgs"] : tensor<3x1x2xf32>
  // CHECK-DAG: kiln.weight_stack ["d0", "d1", "sd"] : tensor<3x256x128xf8E4M3FN>
  // CHECK: kiln.moe {{.+}} fp8({{.+}}) {{{.*}}shared_experts = 1 : i64
  // CHECK-NOT: kiln.linear
  %m = kiln.moe %x, %r, %wg, %wu, %wd fp8(%xq, %xs, %wgs, %wus, %wds) {top_k = 1 : i64, scoring = "softmax", quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<4x256xf32>, tensor<2x256xf32>, tensor<2x128x256xf8E4M3FN>, tensor<2x128x256xf8E4M3FN>, tensor<2x256x128xf8E4M3FN>, tensor<4x256xf8E4M3FN>, tensor<4x2xf32>, tensor<2x1x2xf32>, tensor<2x1x2xf32>, tensor<2x2x1xf32>) -> tensor<4x256xf32>
  %sg = kiln.weight "sg" : tensor<128x256xf8E4M3FN>
  %su = kiln.weight "su" : tensor<128x256xf8E4M3FN>
  %sd = kiln.weight "sd" : tensor<256x128xf8E4M3FN>
  %sgs = kiln.weight "sgs" : tensor<1x2xf32>
  %sus = kiln.weight "sus" : tensor<1x2xf32>
  %sds = kiln.weight "sds" : tensor<2x1xf32>
  %g = kiln.linear %xq, %sg scales(%xs, %sgs) {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<4x256xf8E4M3FN>, tensor<128x256xf8E4M3FN>, tensor<4x2xf32>, tensor<1x2xf32>) -> tensor<4x128xf32>
  %u = kiln.linear %xq, %su scales(%xs, %sus) {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<4x256xf8E4M3FN>, tensor<128x256xf8E4M3FN>, tensor<4x2xf32>, tensor<1x2xf32>) -> tensor<4x128xf32>
  %a = kiln.swiglu %g, %u : (tensor<4x128xf32>, tensor<4x128xf32>) -> tensor<4x128xf32>
  %aq, %as = kiln.quantize %a {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<4x128xf32>) -> (tensor<4x128xf8E4M3FN>, tensor<4x1xf32>)
  %s = kiln.linear %aq, %sd scales(%as, %sds) {quant = #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>} : (tensor<4x128xf8E4M3FN>, tensor<256x128xf8E4M3FN>, tensor<4x1xf32>, tensor<2x1xf32>) -> tensor<4x256xf32>
  %y = kiln.add %m, %s : (tensor<4x256xf32>, tensor<4x256xf32>) -> tensor<4x256xf32>
  return %y : tensor<4x256xf32>
}

// -----

// A shared MLP twice the experts' width (DeepSeek-V2 concatenates its two
// shared experts) stays separate.
// CHECK-LABEL: func.func @wider
func.func @wider(%x: tensor<16x64xf32>) -> tensor<16x64xf32> {
  %r = kiln.weight "router" : tensor<4x64xf32>
  %wg = kiln.weight_stack ["g0", "g1", "g2", "g3"] : tensor<4x32x64xf32>
  %wd = kiln.weight_stack ["d0", "d1", "d2", "d3"] : tensor<4x64x32xf32>
  // CHECK-NOT: kiln.weight_stack {{.*}}shared
  // CHECK: kiln.moe
  // CHECK-NOT: shared_experts
  // CHECK: kiln.add
  %m = kiln.moe %x, %r, %wg, %wg, %wd {top_k = 2 : i64, scoring = "softmax"} : (tensor<16x64xf32>, tensor<4x64xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<16x64xf32>
  %sg = kiln.weight "shared.gate" : tensor<64x64xf32>
  %su = kiln.weight "shared.up" : tensor<64x64xf32>
  %sd = kiln.weight "shared.down" : tensor<64x64xf32>
  %g = kiln.linear %x, %sg : (tensor<16x64xf32>, tensor<64x64xf32>) -> tensor<16x64xf32>
  %u = kiln.linear %x, %su : (tensor<16x64xf32>, tensor<64x64xf32>) -> tensor<16x64xf32>
  %a = kiln.swiglu %g, %u : (tensor<16x64xf32>, tensor<16x64xf32>) -> tensor<16x64xf32>
  %s = kiln.linear %a, %sd : (tensor<16x64xf32>, tensor<64x64xf32>) -> tensor<16x64xf32>
  %y = kiln.add %m, %s : (tensor<16x64xf32>, tensor<16x64xf32>) -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}
