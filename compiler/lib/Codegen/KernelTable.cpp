//===- KernelTable.cpp - Distinct kernels of a schedule -------------------===//
#include "kiln/Compiler/Codegen.h"

#include "kernel/IR/KernelDialect.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;

namespace kiln {

std::string locationToString(Location loc) {
  if (auto fused = dyn_cast<FusedLoc>(loc)) {
    std::string s;
    for (Location l : fused.getLocations()) {
      if (!s.empty())
        s += " + ";
      s += locationToString(l);
    }
    return s;
  }
  if (auto name = dyn_cast<NameLoc>(loc)) {
    std::string child = locationToString(name.getChildLoc());
    std::string s = name.getName().str();
    if (!child.empty() && !isa<UnknownLoc>(name.getChildLoc()))
      s += " (" + child + ")";
    return s;
  }
  if (auto file = dyn_cast<FileLineColLoc>(loc))
    return (file.getFilename().str() + ":" + std::to_string(file.getLine()) +
            ":" + std::to_string(file.getColumn()));
  if (auto cs = dyn_cast<CallSiteLoc>(loc))
    return locationToString(cs.getCallee());
  if (isa<UnknownLoc>(loc))
    return "";
  std::string s;
  llvm::raw_string_ostream os(s);
  loc.print(os);
  return s;
}

KernelTable collectKernels(ModuleOp forward) {
  KernelTable table;
  llvm::StringMap<unsigned> byName;
  forward.walk([&](kernel::KernelOpInterface op) {
    std::string name = op.getKernelName();
    auto [it, inserted] = byName.try_emplace(name, table.kernels.size());
    if (inserted) {
      KernelRecord rec;
      rec.name = name;
      rec.config = op.getTileConfig();
      rec.numBuffers = op->getNumOperands() + op->getNumResults();
      rec.numScalars = op.getNumKernelScalars();
      rec.representative = op;
      if (auto fused = op->getAttrOfType<ArrayAttr>("fused_ops"))
        for (Attribute a : fused)
          rec.fusedOps.push_back(cast<StringAttr>(a).getValue().str());
      table.kernels.push_back(std::move(rec));
    }
    KernelRecord &rec = table.kernels[it->second];
    rec.maxPrograms = std::max(rec.maxPrograms, op.getNumPrograms());
    std::string loc = locationToString(op->getLoc());
    if (!loc.empty())
      rec.locations.push_back(loc);
    table.launchKernel[op] = it->second;
  });
  return table;
}

LogicalResult runCodegenPipeline(ModuleOp module, StringRef pipeline) {
  PassManager pm(module->getContext());
  if (failed(applyPassManagerCLOptions(pm)))
    return failure();
  if (failed(parsePassPipeline(pipeline, pm))) {
    module.emitError() << "invalid codegen pipeline: " << pipeline;
    return failure();
  }
  return pm.run(module);
}

} // namespace kiln
