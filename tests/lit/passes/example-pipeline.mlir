// The bundled example through the graph and kernel pipelines: 9 launches
// (gate, up and SwiGLU in one; the residual adds in the down projections),
// each tracing back to the checkpoint prefix it came from.
// RUN: kiln-opt %models/example/tiny_mlp.mlir --kiln-graph-pipeline --kiln-kernel-pipeline --mlir-print-debuginfo --mlir-print-local-scope | FileCheck %s

// CHECK-LABEL: func.func @forward
// CHECK: kiln_kernel.gather_rows {{.*}}loc("model.embed_tokens")
// CHECK: kiln_kernel.rms_norm {{.*}}loc("model.layers.0.post_attention_layernorm")
// CHECK: kiln_kernel.gemm_swiglu {{.*}}fused_ops = ["kiln.linear", "kiln.linear", "kiln.swiglu"]{{.*}}loc(fused["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.act_fn"])
// CHECK: kiln_kernel.gemm {{.*}} add({{.*}}fused_ops = ["kiln.linear", "kiln.add"]{{.*}}loc(fused["model.layers.0.mlp.down_proj", "model.layers.0.residual"])
// CHECK-NOT: kiln_kernel.elementwise "add"
// CHECK: kiln_kernel.gemm {{.*}}loc(fused["model.layers.1.mlp.down_proj", "model.layers.1.residual"])
// CHECK: kiln_kernel.rms_norm {{.*}}loc("model.norm")
// CHECK: kiln_kernel.gemm {{.*}}loc("lm_head")
// CHECK-NOT: kiln.linear
