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
    InterfaceMethod<[{The allowed range of each run-time scalar (inclusive),
      by default exactly the launch's values. A kernel whose memory accesses
      stay inside its bindings for other values too may widen them.}],
      "llvm::SmallVector<std::pair<int64_t, int64_t>>", "getLaunchScalarRanges",
      (ins), [{}], [{
        llvm::SmallVector<std::pair<int64_t, int64_t>> ranges;
        for (int64_t v : $_op.getLaunchScalars())
          ranges.push_back({v, v});
        return ranges;
      }]>,
    InterfaceMethod<[{What the kernel needs of the values of operand
      `operand`: any value (it reads the operand as data, or not at all), or
      an inclusive range when it indexes memory with them (a row id, a cache
      position). The plan emitter turns these into the value ranges of the
      integer inputs the runtime checks. By default an integer operand is
      assumed to index memory in a way the op does not describe, which the
      plan emitter refuses for an input: ops with integer operands say how
      they use them.}],
      "::kiln::kernel::OperandValueRange", "getOperandValueRange",
      (ins "unsigned":$operand), [{}], [{
        auto t = ::llvm::cast<::mlir::ShapedType>(
            $_op->getOperand(operand).getType());
        ::kiln::kernel::OperandValueRange r;
        if (::llvm::isa<::mlir::IntegerType>(t.getElementType()))
          r.kind = ::kiln::kernel::OperandValueRange::Kind::Unknown;
        return r;
      }]>,
    InterfaceMethod<[{Whether the kernel keeps persistent state in operand
      `operand`'s buffer, reading and writing it (the MoE routing counter):
      the plan must bind a state buffer there. Operands updated in place
      (getInPlaceOperandOf) are state without saying so here.}],
      "bool", "isStateOperand", (ins "unsigned":$operand), [{}],
      [{ return false; }]>,
    InterfaceMethod<[{The number of token rows this launch's programs walk in
      token-major order: program = row * P + j for row in [0, rows) of the
      [batch, seq] tokens (the function's), j in [0, P). 0 (the default):
      the programs are not token-major (expert blocks, element blocks), and
      every one of them runs whatever the request.}],
      "int64_t", "getTokenRows", (ins), [{}], [{ return 0; }]>,
    InterfaceMethod<[{Programs per token when the launch is token-major over
      `tokens` rows (the runtime then runs only the rows of the tokens a
      request gives), else 0.}],
      "int64_t", "getProgramsPerToken", (ins "int64_t":$tokens), [{}], [{
        int64_t rows = $_op.getTokenRows(), programs = $_op.getNumPrograms();
        if (tokens <= 0 || rows != tokens || programs % rows != 0)
          return 0;
        return programs / rows;
      }]>,
    InterfaceMethod<[{For a token-major launch, the indices of the run-time
      scalars the runtime sets from the request: the number of tokens given
      (batch rows x tokens per row) and the tokens per batch row; -1 for
      none. Their compiled values are the plan's maxima.}],
      "std::pair<int, int>", "getTokenScalarSlots", (ins), [{}],
      [{ return {-1, -1}; }]>,
  ];
}

#endif // KILN_KERNEL_INTERFACES_TD
