//===- CUDA.cpp - PTX and cubin for Hopper from kernel programs -----------===//
//
// Each distinct kernel becomes a gpu.func whose parameters are the bound
// buffers (device pointers), the run-time scalars (i64) and a program range
// [begin, end) (the whole grid, or a range of a token-major launch's given
// tokens); thread t of block b runs program begin + b * blockDim + t, if it
// is below end. The gpu.module is
// lowered through NVVM to PTX (gpu-module-to-binary, format=isa) for the
// chip with PTX ISA 8.0, then assembled by ptxas into a cubin, whose resource
// report (registers, spills, shared memory) is kept per kernel.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Codegen.h"
#include "kiln/Compiler/StageDumper.h"

#include "kernel/IR/KernelDialect.h"
#include "kiln/Kernels/Heuristics.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/Regex.h"

using namespace mlir;

namespace kiln {

std::string findPtxas() {
  if (auto env = llvm::sys::Process::GetEnv("KILN_PTXAS"))
    return llvm::sys::fs::can_execute(*env) ? *env : std::string();
  if (auto p = llvm::sys::findProgramByName("ptxas"))
    return *p;
  std::vector<std::string> dirs;
  if (auto home = llvm::sys::Process::GetEnv("CUDA_HOME"))
    dirs.push_back(*home + "/bin");
  dirs.push_back("/usr/local/cuda/bin");
  for (const std::string &d : dirs) {
    std::string p = d + "/ptxas";
    if (llvm::sys::fs::can_execute(p))
      return p;
  }
  return "";
}

namespace {

OwningOpRef<ModuleOp> buildGpuProgramModule(MLIRContext &ctx,
                                            const KernelTable &table,
                                            StringRef chip,
                                            std::vector<CudaEntry> &entries) {
  OpBuilder b(&ctx);
  Location unknown = b.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(unknown);
  (*module)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                     b.getUnitAttr());
  b.setInsertionPointToEnd(module->getBody());
  std::string targetText =
      ("#nvvm.target<O = 3, chip = \"" + chip + "\", features = \"+ptx80\">")
          .str();
  Attribute target = parseAttribute(targetText, &ctx);
  auto gpuModule = gpu::GPUModuleOp::create(
      b, unknown, ("kiln_" + chip).str(), b.getArrayAttr({target}));
  b.setInsertionPointToStart(gpuModule.getBody());
  auto ptr = LLVM::LLVMPointerType::get(&ctx);
  auto i64 = b.getI64Type();
  for (const KernelRecord &k : table.kernels) {
    auto op = cast<kernel::KernelOpInterface>(k.representative);
    Location loc = NameLoc::get(b.getStringAttr(k.name), op->getLoc());
    SmallVector<Type> params(k.numBuffers, ptr);
    params.append(k.numScalars + 2, i64); // scalars, begin, end
    auto fn = gpu::GPUFuncOp::create(b, loc, k.name,
                                     b.getFunctionType(params, {}));
    fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
    Block &entry = fn.getBody().front();
    OpBuilder fb = OpBuilder::atBlockBegin(&entry);
    kernels::ProgramArgs args{loc, {}, {}, Value()};
    for (unsigned i = 0; i < k.numBuffers; ++i)
      args.buffers.push_back(entry.getArgument(i));
    for (unsigned i = 0; i < k.numScalars; ++i)
      args.scalars.push_back(entry.getArgument(k.numBuffers + i));
    // Programs [begin, end): a launch's whole grid, or one range of the
    // tokens a request gives (token-major launches).
    Value begin = entry.getArgument(k.numBuffers + k.numScalars);
    Value end = entry.getArgument(k.numBuffers + k.numScalars + 1);
    Value bid = gpu::BlockIdOp::create(fb, loc, gpu::Dimension::x);
    Value bdim = gpu::BlockDimOp::create(fb, loc, gpu::Dimension::x);
    Value tid = gpu::ThreadIdOp::create(fb, loc, gpu::Dimension::x);
    Value lin = arith::AddIOp::create(
        fb, loc, arith::MulIOp::create(fb, loc, bid, bdim), tid);
    Value pid = arith::AddIOp::create(
        fb, loc, begin, arith::IndexCastOp::create(fb, loc, i64, lin));
    Value inGrid = arith::CmpIOp::create(fb, loc, arith::CmpIPredicate::slt,
                                         pid, end);
    auto ifOp = scf::IfOp::create(fb, loc, inGrid, /*withElseRegion=*/false);
    {
      OpBuilder::InsertionGuard g(fb);
      fb.setInsertionPoint(ifOp.thenBlock()->getTerminator());
      args.pid = pid;
      if (failed(emitReferenceProgram(op, fb, args)))
        return nullptr;
    }
    gpu::ReturnOp::create(fb, loc);
    CudaEntry e;
    e.name = k.name;
    e.blockX = static_cast<unsigned>(kernels::chooseGpuBlockSize(k.maxPrograms));
    entries.push_back(e);
  }
  return module;
}


// Parses ptxas -v output into per-entry resources.
void parsePtxasReport(StringRef log, std::vector<CudaEntry> &entries) {
  llvm::Regex fnRe("Compiling entry function '([A-Za-z0-9_$.]+)'");
  llvm::Regex spillRe("([0-9]+) bytes spill stores, ([0-9]+) bytes spill loads");
  llvm::Regex regRe("Used ([0-9]+) registers");
  llvm::Regex smemRe("([0-9]+) bytes smem");
  llvm::Regex cmemRe("([0-9]+) bytes cmem\\[0\\]");
  CudaEntry *cur = nullptr;
  SmallVector<StringRef> lines;
  log.split(lines, '\n');
  for (StringRef line : lines) {
    SmallVector<StringRef> m;
    if (fnRe.match(line, &m)) {
      cur = nullptr;
      for (CudaEntry &e : entries)
        if (e.name == m[1])
          cur = &e;
      continue;
    }
    if (!cur)
      continue;
    if (spillRe.match(line, &m)) {
      m[1].getAsInteger(10, cur->spillStores);
      m[2].getAsInteger(10, cur->spillLoads);
    }
    if (regRe.match(line, &m)) {
      cur->hasResources = true;
      m[1].getAsInteger(10, cur->registers);
      if (smemRe.match(line, &m))
        m[1].getAsInteger(10, cur->sharedBytes);
      if (cmemRe.match(line, &m))
        m[1].getAsInteger(10, cur->constBytes);
    }
  }
}

} // namespace

FailureOr<CudaExecutable> buildCudaExecutable(MLIRContext &ctx,
                                              const KernelTable &table,
                                              StringRef chip,
                                              StageDumper &dumper) {
  CudaExecutable exe;
  exe.arch = chip.str();
  OwningOpRef<ModuleOp> module =
      buildGpuProgramModule(ctx, table, chip, exe.entries);
  if (!module || failed(module->verify()))
    return failure();
  if (failed(dumper.dump(("gpu-programs-" + chip).str(), *module)))
    return failure();
  if (failed(runCodegenPipeline(*module, "gpu.module(convert-scf-to-cf,"
                                  "convert-gpu-to-nvvm,"
                                  "reconcile-unrealized-casts)")))
    return failure();
  if (failed(dumper.dump(("gpu-nvvm-" + chip).str(), *module)))
    return failure();
  if (failed(runCodegenPipeline(*module,
                         "gpu-module-to-binary{format=isa}")))
    return failure();
  for (auto bin : module->getOps<gpu::BinaryOp>())
    for (Attribute a : bin.getObjects())
      if (auto obj = dyn_cast<gpu::ObjectAttr>(a))
        exe.ptx = obj.getObject().getValue().str();
  // Older NVPTX serializers terminate the PTX with a NUL that ptxas rejects.
  while (!exe.ptx.empty() && exe.ptx.back() == '\0')
    exe.ptx.pop_back();
  if (exe.ptx.empty()) {
    module->emitError("NVPTX serialization produced no PTX");
    return failure();
  }
  if (failed(dumper.dumpText((chip + ".ptx").str(), exe.ptx)))
    return failure();

  std::string ptxas = findPtxas();
  if (ptxas.empty())
    return exe; // PTX only; the driver JIT-compiles it at load time.
  llvm::SmallString<128> ptxPath, cubinPath, logPath;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("kiln-gpu", "ptx", fd, ptxPath) ||
      llvm::sys::fs::createTemporaryFile("kiln-gpu", "cubin", cubinPath) ||
      llvm::sys::fs::createTemporaryFile("kiln-gpu", "log", logPath)) {
    module->emitError("cannot create temporary files for ptxas");
    return failure();
  }
  llvm::scope_exit cleanup([&] {
    llvm::sys::fs::remove(ptxPath);
    llvm::sys::fs::remove(cubinPath);
    llvm::sys::fs::remove(logPath);
  });
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << exe.ptx;
  }
  std::string archFlag = ("-arch=" + chip).str();
  SmallVector<StringRef> args{ptxas,   archFlag, "-O3", "-v",
                              ptxPath, "-o",     cubinPath};
  std::optional<StringRef> redirects[] = {std::nullopt, logPath.str(),
                                          logPath.str()};
  std::string execErr;
  int rc = llvm::sys::ExecuteAndWait(ptxas, args, std::nullopt, redirects, 0,
                                     0, &execErr);
  auto log = llvm::MemoryBuffer::getFile(logPath);
  exe.ptxasLog = log ? (*log)->getBuffer().str() : "";
  if (rc != 0) {
    module->emitError() << "ptxas failed (exit " << rc << ") " << execErr
                        << "\n"
                        << exe.ptxasLog;
    return failure();
  }
  auto cubin = llvm::MemoryBuffer::getFile(cubinPath);
  if (!cubin) {
    module->emitError("cannot read the cubin written by ptxas");
    return failure();
  }
  exe.cubin.assign((*cubin)->getBufferStart(), (*cubin)->getBufferEnd());
  parsePtxasReport(exe.ptxasLog, exe.entries);
  if (failed(dumper.dumpText(("ptxas-" + chip + ".txt").str(), exe.ptxasLog)))
    return failure();
  return exe;
}

} // namespace kiln
