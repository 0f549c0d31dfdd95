//===- CPU.cpp - Native code for the CPU from kernel programs -------------===//
//
// Each distinct kernel becomes a C-ABI entry point
//   void name(void **buffers, const int64_t *scalars, int64_t begin,
//             int64_t end)
// that runs programs [begin, end) of a launch, written by the kernel's CPU
// emitter (Emitter.h: the reference loop over its scalar program, or an
// optimized emitter such as the GEMM family's). The module is lowered to the
// LLVM dialect, translated to LLVM IR, optimized at O3 for the CPU named by
// --cpu (the host by default; vectorizing the reassociable reductions),
// compiled to an object and linked into a shared object that the plan
// carries with the CPU's name and the instruction-set features it needs.
//
//===----------------------------------------------------------------------===//
#include "Emitter.h"

#include "kiln/Compiler/Codegen.h"
#include "kiln/Compiler/StageDumper.h"

#include "kernel/IR/KernelDialect.h"

#include "cpu_features.h" // runtime/src: the features the runtime checks
#include "plan_support.h" // runtime/schema: entry point phase symbols

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/TargetParser/SubtargetFeature.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/MCSubtargetInfo.h"
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

/// One entry point per kernel, written by the kernel's emitter. The entry
/// loads its buffer pointers and scalars, then hands them to the emitter.
OwningOpRef<ModuleOp>
buildCpuModule(MLIRContext &ctx, const KernelTable &table,
               ArrayRef<std::unique_ptr<cpu::CpuEmitter>> emitters) {
  OpBuilder b(&ctx);
  OwningOpRef<ModuleOp> module = ModuleOp::create(b.getUnknownLoc());
  module->setName("kiln_cpu");
  b.setInsertionPointToEnd(module->getBody());
  auto ptr = LLVM::LLVMPointerType::get(&ctx);
  auto i64 = b.getI64Type();
  for (auto [k, emitter] : llvm::zip_equal(table.kernels, emitters)) {
    for (unsigned phase = 0; phase < emitter->phases(); ++phase) {
      auto op = cast<kernel::KernelOpInterface>(k.representative);
      Location loc = NameLoc::get(b.getStringAttr(k.name), op->getLoc());
      auto fn =
          func::FuncOp::create(b, loc, plan::EntryPhaseSymbol(k.name, phase),
                               b.getFunctionType({ptr, ptr, i64, i64}, {}));
      Block *entry = fn.addEntryBlock();
      OpBuilder fb = OpBuilder::atBlockBegin(entry);
      cpu::EntryArgs args{
          loc, {}, {}, entry->getArgument(2), entry->getArgument(3), phase};
      for (unsigned i = 0; i < k.numBuffers; ++i) {
        Value idx = arith::ConstantIntOp::create(fb, loc, i64, i);
        Value slot = LLVM::GEPOp::create(
            fb, loc, ptr, ptr, entry->getArgument(0), ValueRange{idx});
        args.buffers.push_back(LLVM::LoadOp::create(fb, loc, ptr, slot));
      }
      for (unsigned i = 0; i < k.numScalars; ++i) {
        Value idx = arith::ConstantIntOp::create(fb, loc, i64, i);
        Value slot = LLVM::GEPOp::create(
            fb, loc, ptr, i64, entry->getArgument(1), ValueRange{idx});
        args.scalars.push_back(LLVM::LoadOp::create(fb, loc, i64, slot));
      }
      emitter->emitEntry(fb, *module, k, args);
      func::ReturnOp::create(fb, loc);
      // Helper functions an emitter added go after their entry.
      b.setInsertionPointToEnd(module->getBody());
    }
  }
  return module;
}

struct ResolvedCpu {
  std::string name;     ///< LLVM's CPU name (scheduling model, implied ISA)
  std::string features; ///< explicit features on top ("" for a named CPU)
};

/// The checkable features `sti` enables: what the plan records as required.
std::vector<std::string> checkedFeatures(const llvm::MCSubtargetInfo &sti) {
  std::vector<std::string> out;
  for (const std::string &f : CheckableCpuFeatures())
    if (sti.checkFeatures("+" + f))
      out.push_back(f);
  return out;
}

/// `--cpu`: "host", or a CPU LLVM knows. For the host, the features are read
/// from the CPU (CPUID through LLVM, which does see AVX-512 and AMX), never
/// inferred from its model name: virtual machines report model numbers that
/// LLVM maps to older parts (a Sapphire Rapids guest here reads as
/// "rocketlake", which has neither AMX nor AVX-512-BF16). The name, which
/// only selects the scheduling model, is the newest of a few server and
/// generic CPUs whose features the host has.
FailureOr<ResolvedCpu> resolveCpu(const llvm::Target &target,
                                  const llvm::Triple &triple,
                                  StringRef name) {
  auto subtarget = [&](StringRef cpu, StringRef features) {
    return std::unique_ptr<llvm::MCSubtargetInfo>(
        target.createMCSubtargetInfo(triple, cpu, features));
  };
  if (name != "host") {
    auto sti = subtarget("generic", "");
    if (!sti || !sti->isCPUStringValid(name))
      return failure();
    return ResolvedCpu{name.str(), ""};
  }
  llvm::SubtargetFeatures features;
  for (auto &f : llvm::sys::getHostCPUFeatures())
    features.AddFeature(f.first(), f.second);
  std::string featureString = features.getString();
  std::string hostName = llvm::sys::getHostCPUName().str();
  if (!triple.isX86())
    return ResolvedCpu{hostName, featureString};
  auto host = subtarget("generic", featureString);
  for (StringRef candidate :
       {"graniterapids", "sapphirerapids", "znver5", "znver4", "icelake-server",
        "cascadelake", "skylake-avx512", "znver3", "alderlake", "x86-64-v4",
        "x86-64-v3", "x86-64-v2"}) {
    auto sti = subtarget(candidate, "");
    if (!sti || !sti->isCPUStringValid(candidate))
      continue;
    std::vector<std::string> needs = checkedFeatures(*sti);
    if (llvm::all_of(needs, [&](const std::string &f) {
          return host->checkFeatures("+" + f);
        }))
      return ResolvedCpu{candidate.str(), featureString};
  }
  return ResolvedCpu{"x86-64", featureString};
}

/// The ISA the emitters may use, as the target machine sees it.
cpu::CpuTarget cpuTargetOf(const llvm::MCSubtargetInfo &sti) {
  cpu::CpuTarget t;
  t.avx512 = sti.checkFeatures("+avx512f,+avx512bw,+avx512vl");
  t.avx512bf16 = t.avx512 && sti.checkFeatures("+avx512bf16");
  t.avx512vbmi = t.avx512 && sti.checkFeatures("+avx512vbmi");
  t.amxBF16 = sti.checkFeatures("+amx-tile,+amx-bf16");
  t.avx2fma = sti.checkFeatures("+avx2,+fma");
  t.zen = sti.getCPU().starts_with("znver");
  return t;
}

} // namespace

FailureOr<CpuExecutable> buildCpuExecutable(MLIRContext &ctx,
                                            KernelTable &table,
                                            const CpuCodegenOptions &options,
                                            StageDumper &dumper) {
  // The target machine first: --cpu decides which emitters apply.
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  std::string tripleStr = llvm::sys::getProcessTriple();
  llvm::Triple triple(tripleStr);
  std::string err;
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, err);
  if (!target)
    return emitError(UnknownLoc::get(&ctx))
           << "no LLVM target for " << tripleStr << ": " << err;
  auto cpu = resolveCpu(*target, triple, options.cpu);
  if (failed(cpu))
    return emitError(UnknownLoc::get(&ctx))
           << "unknown --cpu=" << options.cpu
           << " (expected host, x86-64, x86-64-v2, x86-64-v3, "
              "x86-64-v4 or an LLVM CPU name such as "
              "sapphirerapids)";
  llvm::TargetOptions opts;
  std::unique_ptr<llvm::TargetMachine> tm(target->createTargetMachine(
      triple, cpu->name, cpu->features, opts, llvm::Reloc::PIC_,
      std::nullopt, llvm::CodeGenOptLevel::Aggressive));
  cpu::CpuTarget isa = cpuTargetOf(*tm->getMCSubtargetInfo());

  std::vector<std::unique_ptr<cpu::CpuEmitter>> emitters;
  for (KernelRecord &k : table.kernels) {
    emitters.push_back(cpu::chooseCpuEmitter(k, options, isa));
    std::string what = emitters.back()->describe();
    if (!what.empty())
      k.config += "; cpu=" + what;
  }

  OwningOpRef<ModuleOp> module = buildCpuModule(ctx, table, emitters);
  if (failed(module->verify()))
    return failure();
  if (failed(dumper.dump("cpu-programs", *module)))
    return failure();
  // Without avx512bf16 LLVM lowers f32 -> bf16 to __truncsfbf2, a
  // compiler-rt call the plan's shared object does not carry (it would not
  // load): such targets get the conversion as integer arithmetic (nearest
  // even, NaN to 0x7FC0), as the hardware instruction rounds.
  if (!isa.avx512bf16) {
    RewritePatternSet bf16(&ctx);
    arith::populateExpandBFloat16Patterns(bf16);
    if (failed(applyPatternsGreedily(*module, std::move(bf16))))
      return failure();
  }
  if (failed(runCodegenPipeline(
          *module,
          "convert-scf-to-cf,convert-vector-to-llvm,convert-math-to-llvm,"
          "convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,"
          "reconcile-unrealized-casts")))
    return failure();
  if (failed(dumper.dump("cpu-llvm", *module)))
    return failure();

  llvm::LLVMContext llvmCtx;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(*module, llvmCtx, "kiln_cpu");
  if (!llvmModule) {
    module->emitError("translation of CPU kernels to LLVM IR failed");
    return failure();
  }
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
  exe.arch = triple.getArchName().str();
  exe.cpu = cpu->name;
  exe.features = checkedFeatures(*tm->getMCSubtargetInfo());
  exe.sharedObject.assign((*so)->getBufferStart(), (*so)->getBufferEnd());
  for (const auto &e : emitters)
    exe.phases.push_back(e->phases());
  return exe;
}

} // namespace kiln
