#ifndef KILN_KERNEL_DIALECT_TD
#define KILN_KERNEL_DIALECT_TD

include "mlir/IR/OpBase.td"

def KilnKernel_Dialect : Dialect {
  let name = "kiln_kernel";
  let cppNamespace = "::kiln::kernel";
  let summary = "Kiln's kernel dialect: one op per kernel launch.";
  let description = [{
    Below the graph, a model is a schedule of kernel launches. Each op of this
    dialect (except `kiln_kernel.view`, which aliases a buffer) is exactly one
    launch of a generated kernel; it carries its tile configuration and the
    graph ops it fused (`fused_ops`), and its location traces back to the
    model. Operands and results are value-semantic tensors; the plan's memory
    planner assigns each one a buffer in the arena.

    Every op implements `KernelOpInterface`, through which codegen emits the
    same program body for the CPU (an entry point looping over programs) and
    for CUDA (one program per GPU thread).
  }];
}

#endif // KILN_KERNEL_DIALECT_TD
