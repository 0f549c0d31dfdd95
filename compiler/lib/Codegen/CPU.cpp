//===- CPU.cpp - Native code for the CPU from kernel programs -------------===//
//
// Each distinct kernel becomes a C-ABI entry point
//   void name(void **buffers, const int64_t *scalars, int64_t begin,
//             int64_t end)
// that runs programs [begin, end) of a launch. The module is lowered to the
// LLVM dialect, translated to LLVM IR, optimized at O3 for the host CPU
// (vectorizing the reassociable reductions), compiled to an object and linked
// into a shared object that the plan carries.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Codegen.h"
#include "kiln/Compiler/StageDumper.h"

#include "kernel/IR/KernelDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/TargetParser/SubtargetFeature.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

using namespace mlir;

namespace kiln {

namespace {

OwningOpRef<ModuleOp> buildCpuProgramModule(MLIRContext &ctx,
                                            const KernelTable &table) {
  OpBuilder b(&ctx);
  OwningOpRef<ModuleOp> module = ModuleOp::create(b.getUnknownLoc());
  module->setName("kiln_cpu");
  b.setInsertionPointToEnd(module->getBody());
  auto ptr = LLVM::LLVMPointerType::get(&ctx);
  auto i64 = b.getI64Type();
  for (const KernelRecord &k : table.kernels) {
    auto op = cast<kernel::KernelOpInterface>(k.representative);
    Location loc = NameLoc::get(b.getStringAttr(k.name), op->getLoc());
    auto fn = func::FuncOp::create(b, loc, k.name,
                                   b.getFunctionType({ptr, ptr, i64, i64}, {}));
    Block *entry = fn.addEntryBlock();
    OpBuilder fb = OpBuilder::atBlockBegin(entry);
    kernels::ProgramArgs args{loc, {}, {}, Value()};
    for (unsigned i = 0; i < k.numBuffers; ++i) {
      Value idx = arith::ConstantIntOp::create(fb, loc, i64, i);
      Value slot = LLVM::GEPOp::create(fb, loc, ptr, ptr, entry->getArgument(0),
                                       ValueRange{idx});
      args.buffers.push_back(LLVM::LoadOp::create(fb, loc, ptr, slot));
    }
    for (unsigned i = 0; i < k.numScalars; ++i) {
      Value idx = arith::ConstantIntOp::create(fb, loc, i64, i);
      Value slot = LLVM::GEPOp::create(fb, loc, ptr, i64, entry->getArgument(1),
                                       ValueRange{idx});
      args.scalars.push_back(LLVM::LoadOp::create(fb, loc, i64, slot));
    }
    Value one = arith::ConstantIntOp::create(fb, loc, i64, 1);
    auto loop = scf::ForOp::create(fb, loc, entry->getArgument(2),
                                   entry->getArgument(3), one);
    {
      OpBuilder::InsertionGuard g(fb);
      fb.setInsertionPoint(loop.getBody()->getTerminator());
      args.pid = loop.getInductionVar();
      op.emitProgram(fb, args);
    }
    func::ReturnOp::create(fb, loc);
  }
  return module;
}


} // namespace

FailureOr<CpuExecutable> buildCpuExecutable(MLIRContext &ctx,
                                            const KernelTable &table,
                                            StageDumper &dumper) {
  OwningOpRef<ModuleOp> module = buildCpuProgramModule(ctx, table);
  if (failed(module->verify()))
    return failure();
  if (failed(dumper.dump("cpu-programs", *module)))
    return failure();
  if (failed(runCodegenPipeline(
          *module,
          "convert-scf-to-cf,convert-math-to-llvm,convert-arith-to-llvm,"
          "convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts")))
    return failure();
  if (failed(dumper.dump("cpu-llvm", *module)))
    return failure();

  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::LLVMContext llvmCtx;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(*module, llvmCtx, "kiln_cpu");
  if (!llvmModule) {
    module->emitError("translation of CPU kernels to LLVM IR failed");
    return failure();
  }
  std::string tripleStr = llvm::sys::getProcessTriple();
  llvm::Triple triple(tripleStr);
  std::string err;
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, err);
  if (!target) {
    module->emitError() << "no LLVM target for " << tripleStr << ": " << err;
    return failure();
  }
  // Plans are compiled for the CPU they are built on: the host's features.
  std::string cpu = llvm::sys::getHostCPUName().str();
  llvm::SubtargetFeatures features;
  for (auto &f : llvm::sys::getHostCPUFeatures())
    features.AddFeature(f.first(), f.second);
  llvm::TargetOptions opts;
  std::unique_ptr<llvm::TargetMachine> tm(target->createTargetMachine(
      triple, cpu, features.getString(), opts, llvm::Reloc::PIC_,
      std::nullopt, llvm::CodeGenOptLevel::Aggressive));
  llvmModule->setDataLayout(tm->createDataLayout());
  llvmModule->setTargetTriple(triple);
  auto optimize = makeOptimizingTransformer(3, 0, tm.get());
  if (llvm::Error e = optimize(llvmModule.get())) {
    module->emitError() << "LLVM optimization failed: "
                        << llvm::toString(std::move(e));
    return failure();
  }
  if (dumper.enabled()) {
    std::string ir;
    llvm::raw_string_ostream os(ir);
    llvmModule->print(os, nullptr);
    if (failed(dumper.dumpText("cpu.ll", ir)))
      return failure();
  }
  llvm::SmallVector<char, 0> object;
  {
    llvm::raw_svector_ostream os(object);
    llvm::legacy::PassManager codegen;
    if (tm->addPassesToEmitFile(codegen, os, nullptr,
                                llvm::CodeGenFileType::ObjectFile)) {
      module->emitError("the host target cannot emit object files");
      return failure();
    }
    codegen.run(*llvmModule);
  }

  // Link the object into a shared object.
  llvm::SmallString<128> objPath, soPath;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("kiln-cpu", "o", fd, objPath) ||
      llvm::sys::fs::createTemporaryFile("kiln-cpu", "so", soPath)) {
    module->emitError("cannot create temporary files for linking");
    return failure();
  }
  llvm::scope_exit cleanup([&] {
    llvm::sys::fs::remove(objPath);
    llvm::sys::fs::remove(soPath);
  });
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os.write(object.data(), object.size());
    os.close();
    if (os.has_error()) {
      std::error_code ec = os.error();
      os.clear_error(); // an unhandled stream error aborts in the destructor
      module->emitError() << "cannot write the CPU kernels' object file "
                          << objPath << ": " << ec.message();
      return failure();
    }
  }
  std::string linker;
  std::vector<std::string> argv;
  if (auto lld = llvm::sys::findProgramByName(
          "ld.lld", {KILN_LLVM_TOOLS_DIR})) {
    linker = *lld;
    argv = {linker, "-shared", "--no-undefined-version", "-o",
            soPath.str().str(), objPath.str().str()};
  } else if (auto cc = llvm::sys::findProgramByName("cc")) {
    linker = *cc;
    argv = {linker, "-shared", "-o", soPath.str().str(), objPath.str().str()};
  } else {
    module->emitError("no linker found for CPU kernels (ld.lld or cc)");
    return failure();
  }
  llvm::SmallVector<llvm::StringRef> args(argv.begin(), argv.end());
  std::string execErr;
  int rc = llvm::sys::ExecuteAndWait(linker, args, std::nullopt, {}, 0, 0,
                                     &execErr);
  if (rc != 0) {
    module->emitError() << "linking CPU kernels with " << linker
                        << " failed (exit " << rc << ") " << execErr;
    return failure();
  }
  auto so = llvm::MemoryBuffer::getFile(soPath);
  if (!so) {
    module->emitError("cannot read the linked CPU kernels");
    return failure();
  }
  CpuExecutable exe;
  exe.arch = triple.getArchName().str() + "-" + cpu;
  exe.sharedObject.assign((*so)->getBufferStart(), (*so)->getBufferEnd());
  return exe;
}

} // namespace kiln
