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
    func::FuncOp forward;
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.getSymName() != "forward") {
        fn.emitError() << "unexpected function '" << fn.getSymName()
                       << "': a Kiln model has exactly one function, @forward";
        return signalPassFailure();
      }
      forward = fn;
    }
    if (!forward) {
      module.emitError("a Kiln model needs a func.func @forward");
      return signalPassFailure();
    }
    if (forward.isExternal()) {
      forward.emitError("@forward has no body");
      return signalPassFailure();
    }
    llvm::StringSet<> names;
    auto check = [&](Type type, DictionaryAttr attrs, StringRef what,
                     unsigned i) -> bool {
      auto name = attrs ? attrs.getAs<StringAttr>("kiln.name") : StringAttr();
      if (!name || name.getValue().empty()) {
        forward.emitError() << what << " #" << i
                            << " of @forward needs a kiln.name attribute";
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
        return signalPassFailure();
    for (unsigned i = 0; i < forward.getNumResults(); ++i)
      if (!check(forward.getResultTypes()[i], forward.getResultAttrDict(i),
                 "result", i))
        return signalPassFailure();
  }
};

} // namespace
