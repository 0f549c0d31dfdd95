// RUN: kiln-opt %s --kiln-lower-moe --split-input-file | FileCheck %s
// RUN: kiln-opt %s --kiln-lower-moe=block-m=32 --split-input-file | FileCheck %s --check-prefix=BM32

// kiln.moe: routing with the token permutation, grouped gate+up (SwiGLU),
// grouped down and the combine. 16 tokens x 2 slots over 8 experts: about 4
// rows per expert, so block_m = 8, and the layout has 32 + 8 x 7 = 88 rows
// in 11 blocks. The routing's counter is a state.
// CHECK-LABEL: func.func @moe
func.func @moe(%x: tensor<16x64xf32> {kiln.name = "x"}) -> (tensor<16x64xf32> {kiln.name = "y"}) {
  %r = kiln.weight "router" : tensor<8x64xf32>
  %wg = kiln.weight_stack ["g0", "g1", "g2", "g3", "g4", "g5", "g6", "g7"] : tensor<8x32x64xf32>
  %wu = kiln.weight_stack ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"] : tensor<8x32x64xf32>
  %wd = kiln.weight_stack ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"] : tensor<8x64x32xf32>
  // CHECK: %[[SYNC:.+]] = kiln.state "kiln.moe_route.sync" : tensor<1xi32>
  // With block-m=32: 32 + 8 x 31 = 280 rows, rounded up to 288 in 9 blocks.
  // BM32: kiln_kernel.moe_route {{.+}}block_m = 32 : i64
  // BM32-SAME: tensor<288xi32>, tensor<9xi32>
  // CHECK: %{{.+}}, %[[W:.+]], %{{.+}}, %[[ROWS:.+]], %[[BLOCKS:.+]], %[[SLOTS:.+]] = kiln_kernel.moe_route %{{.+}}, %{{.+}} sync(%[[SYNC]]) {block_m = 8 : i64
  // CHECK-SAME: shared_experts = 0 : i64
  // CHECK-SAME: -> (tensor<16x2xi32>, tensor<16x2xf32>, tensor<280xf32>, tensor<88xi32>, tensor<11xi32>, tensor<16x2xi32>)
  // CHECK: %[[ACT:.+]] = kiln_kernel.moe_up %{{.+}}, %[[ROWS]], %[[BLOCKS]], {{.+}} {block_m = 8 : i64
  // CHECK-SAME: -> tensor<88x32xf32>
  // CHECK: %[[Y:.+]] = kiln_kernel.moe_down %[[ACT]], %[[ROWS]], %[[BLOCKS]], {{.+}} -> tensor<88x64xf32>
  // CHECK: kiln_kernel.moe_combine %[[Y]], %[[SLOTS]], %[[W]] {
  %y = kiln.moe %x, %r, %wg, %wu, %wd {top_k = 2 : i64, scoring = "softmax"} : (tensor<16x64xf32>, tensor<8x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}

