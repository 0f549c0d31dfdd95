#ifndef KILN_KERNEL_INTERFACES_TD
#define KILN_KERNEL_INTERFACES_TD

include "mlir/IR/OpBase.td"

def KilnKernel_KernelOpInterface : OpInterface<"KernelOpInterface"> {
  let cppNamespace = "::kiln::kernel";
  let description = [{
    An op that is one kernel launch. Its operands and results are the
    launch's buffers, in binding order (operands first). Two ops with the same
    kernel name run the same code, so codegen emits it once.
  }];
  let methods = [
    InterfaceMethod<"Name of the distinct kernel: equal names mean equal code.",
      "std::string", "getKernelName">,
    InterfaceMethod<"The tile configuration, as readable text.",
      "std::string", "getTileConfig">,
    InterfaceMethod<"Number of programs (the grid) of this launch.",
      "int64_t", "getNumPrograms">,
    InterfaceMethod<"Run-time scalars of this launch (none by default).",
      "llvm::SmallVector<int64_t>", "getLaunchScalars", (ins), [{}],
      [{ return {}; }]>,
    InterfaceMethod<"Number of run-time scalars the kernel takes.",
      "unsigned", "getNumKernelScalars", (ins), [{}], [{ return 0; }]>,
    InterfaceMethod<[{Index of the operand whose buffer the (single) result
      updates in place (a KV cache), if any.}],
      "std::optional<unsigned>", "getInPlaceOperand", (ins), [{}],
      [{ return std::nullopt; }]>,
    InterfaceMethod<[{Index of the operand whose buffer result `result`
      updates in place, if any (by default: getInPlaceOperand() for result
      0). Kernels that write two caches override it.}],
      "std::optional<unsigned>", "getInPlaceOperandOf", (ins "unsigned":$result),
      [{}], [{
        if (result != 0)
          return std::nullopt;
        return $_op.getInPlaceOperand();
      }]>,
    InterfaceMethod<"Emits one program of the kernel.",
      "void", "emitProgram",
      (ins "mlir::OpBuilder &":$builder,
           "const ::kiln::kernels::ProgramArgs &":$args)>,
  ];
}

#endif // KILN_KERNEL_INTERFACES_TD
