//===- VerifyModel.cpp - Is this module a compilable Kiln model? ----------===//
#include "kiln/Compiler/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringSet.h"

namespace kiln {
#define GEN_PASS_DEF_KILNVERIFYMODEL
#include "kiln/Compiler/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

struct KilnVerifyModelPass
    : kiln::impl::KilnVerifyModelBase<KilnVerifyModelPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    bool hasForward = false;
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.getSymName() == "forward")
        hasForward = true;
      if (fn.getSymName() != "forward" && fn.getSymName() != "extend" &&
          fn.getSymName() != "decode") {
        fn.emitError() << "unexpected function '" << fn.getSymName()
                       << "': a Kiln model has @forward and optionally "
                          "@extend and @decode";
        return signalPassFailure();
      }
    }
    if (!hasForward) {
      module.emitError("a Kiln model needs a func.func @forward");
      return signalPassFailure();
    }
    for (auto fn : module.getOps<func::FuncOp>())
      if (failed(verifyEntry(fn)))
        return signalPassFailure();
  }

  LogicalResult verifyEntry(func::FuncOp forward) {
    if (forward.isExternal())
      return forward.emitError() << "@" << forward.getSymName()
                                 << " has no body";
    llvm::StringSet<> names;
    auto check = [&](Type type, DictionaryAttr attrs, StringRef what,
                     unsigned i) -> bool {
      auto name = attrs ? attrs.getAs<StringAttr>("kiln.name") : StringAttr();
      if (!name || name.getValue().empty()) {
        forward.emitError() << what << " #" << i << " of @"
                            << forward.getSymName()
                            << " needs a kiln.name attribute";
        return false;
      }
      if (!names.insert(name.getValue()).second) {
        forward.emitError() << what << " #" << i << ": the name '"
                            << name.getValue() << "' is used twice";
        return false;
      }
      auto t = dyn_cast<RankedTensorType>(type);
      if (!t || !t.hasStaticShape()) {
        forward.emitError() << what << " '" << name.getValue()
                            << "' must be a statically shaped tensor";
        return false;
      }
      return true;
    };
    for (unsigned i = 0; i < forward.getNumArguments(); ++i)
      if (!check(forward.getArgument(i).getType(), forward.getArgAttrDict(i),
                 "argument", i))
        return failure();
    for (unsigned i = 0; i < forward.getNumResults(); ++i)
      if (!check(forward.getResultTypes()[i], forward.getResultAttrDict(i),
                 "result", i))
        return failure();
    return success();
  }
};

} // namespace
