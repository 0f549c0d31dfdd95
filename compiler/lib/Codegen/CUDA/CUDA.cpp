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
// Kernels with a tile form get tile variants besides: a kernel.gemm or
// kernel.gemm_swiglu of f32 activations and bf16 weights runs as the TMA +
// wgmma GEMMs of
// HopperGemm.h (their f32-activation form, while GPU activations are f32),
// one variant per range of rows, appended to the module's PTX; the program
// entry stays for reference.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Codegen.h"
#include "kiln/Compiler/HopperGemm.h"
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

// SMs the persistent tile heuristic plans for (an H100 / H200 SXM); the
// runtime sizes the grids from the device's own count.
constexpr int64_t kPlannedSMs = 132;

// The tile variants of kernel `k` (and their PTX, appended to `ptx`) when it
// has them: f32 activations [M, K] by bf16 weights, K a multiple of 64, as
// the f32-activation form of HopperGemm.h; a kernel.gemm ([N, K] weights, N
// a multiple of 64, at most one addend: the residual epilogue) or a
// kernel.gemm_swiglu (gate and up [I, K], 2 I a multiple of 16: the SwiGLU
// epilogue over the two weights' maps). One variant per row range the tile
// heuristic tells apart (decode's swapped 8 / 16 / 32 tokens, where the
// epilogue allows it; one math warpgroup to 64 rows, two above), up to the
// kernel's most rows, equal neighbours merged. Empty when it has none.
std::vector<CudaTileVariant> gemmTileVariants(const KernelRecord &k,
                                              uint64_t &programsPerRow,
                                              std::string &ptx) {
  auto gemm = dyn_cast<kernel::GemmOp>(k.representative);
  auto swigluOp = dyn_cast<kernel::GemmSwiGLUOp>(k.representative);
  if (!gemm && !swigluOp)
    return {};
  Operation *op = k.representative;
  auto typeOf = [](Value v) { return cast<RankedTensorType>(v.getType()); };
  // Weights (one, or gate and up), their rows, and the tile's N.
  SmallVector<Value> weights;
  if (gemm)
    weights.push_back(gemm.getWeight());
  else
    weights.append({swigluOp.getWGate(), swigluOp.getWUp()});
  const bool swiglu = static_cast<bool>(swigluOp);
  const bool residual = gemm && gemm.getAddends().size() == 1;
  if (gemm && gemm.getAddends().size() > 1)
    return {};
  SmallVector<Value> f32s{op->getOperand(0), op->getResult(0)};
  if (residual)
    f32s.push_back(gemm.getAddends()[0]);
  for (Value v : f32s)
    if (!typeOf(v).getElementType().isF32())
      return {};
  for (Value w : weights)
    if (!typeOf(w).getElementType().isBF16())
      return {};
  const int64_t wRows = typeOf(weights[0]).getDimSize(0),
                kd = typeOf(weights[0]).getDimSize(1);
  const int64_t n = swiglu ? 2 * wRows : wRows;
  if ((swiglu ? n % 16 : n % 64) != 0 || kd % 64 != 0)
    return {};
  const int64_t tileN = gemm ? gemm.getTileN() : swigluOp.getTileN();
  const int64_t perRow = (wRows + tileN - 1) / tileN;
  const int64_t maxRows = k.maxPrograms / perRow;
  std::vector<hopper::GemmTileConfig> configs;
  std::vector<int64_t> upTo;
  for (int64_t bound :
       {int64_t(8), int64_t(16), int64_t(32), int64_t(64), maxRows}) {
    int64_t rows = std::min(bound, maxRows);
    if (rows <= 0 || (!upTo.empty() && rows <= upTo.back()))
      continue;
    hopper::GemmTileConfig c =
        hopper::chooseGemmTile(rows, n, kd, false, false, kPlannedSMs);
    // The swapped form has no residual or SwiGLU epilogue.
    if ((residual || swiglu) && c.swapAB)
      c = hopper::chooseGemmTile(std::max<int64_t>(rows, 33), n, kd, false,
                                 false, kPlannedSMs);
    c.f32Activations = true;
    c.epilogue = residual ? hopper::Epilogue::kResidual
                 : swiglu ? hopper::Epilogue::kSwiGLU
                          : hopper::Epilogue::kStore;
    c.splitGateUp = swiglu;
    if (!hopper::checkGemmTileConfig(c).empty())
      return {};
    auto same = [](const hopper::GemmTileConfig &a,
                   const hopper::GemmTileConfig &b) {
      return a.blockM == b.blockM && a.blockN == b.blockN &&
             a.stages == b.stages && a.swapAB == b.swapAB;
    };
    if (!configs.empty() && same(configs.back(), c)) {
      upTo.back() = rows;
      continue;
    }
    configs.push_back(c);
    upTo.push_back(rows);
  }
  std::vector<CudaTileVariant> variants;
  const unsigned result = op->getNumOperands();
  const int64_t outCols = swiglu ? wRows : n;
  for (auto [i, c] : llvm::enumerate(configs)) {
    CudaTileVariant v;
    v.name = k.name + "_tile" + std::to_string(i);
    v.maxRows = static_cast<uint64_t>(upTo[i]);
    v.threads = static_cast<uint32_t>(hopper::gemmThreads(c));
    v.dynamicSharedBytes =
        static_cast<uint32_t>(hopper::gemmDynamicSharedBytes(c));
    v.rowsPerTile = static_cast<uint32_t>(c.swapAB ? c.blockN : c.blockM);
    v.columnTiles =
        static_cast<uint32_t>(c.swapAB ? n / c.blockM : n / c.blockN);
    v.config = std::to_string(c.blockM) + "x" + std::to_string(c.blockN) + "x" +
               std::to_string(c.blockK) + " s" + std::to_string(c.stages) +
               (c.swapAB ? " swapped" : "") + (residual ? " residual" : "") +
               (swiglu ? " swiglu" : "") + " f32-act";
    // (weights' map(s), activations, out, [residual,] rows); a split
    // SwiGLU tile loads blockN / 2 rows of each of gate and up.
    for (unsigned w = 0; w < weights.size(); ++w) {
      CudaTileParam map;
      map.kind = CudaTileParam::TensorMap;
      map.binding = 1 + w;
      map.dtype = 2; // bf16
      map.dims = {static_cast<uint64_t>(kd), static_cast<uint64_t>(wRows)};
      map.stridesBytes = {static_cast<uint64_t>(2 * kd)};
      map.box = {static_cast<uint32_t>(c.blockK),
                 static_cast<uint32_t>(c.swapAB ? c.blockM
                                       : swiglu ? c.blockN / 2
                                                : c.blockN)};
      map.swizzleBytes = 128;
      v.params.push_back(map);
    }
    CudaTileParam p;
    p.binding = 0;
    p.rowBytes = static_cast<uint64_t>(4 * kd);
    v.params.push_back(p);
    p.binding = result;
    p.rowBytes = static_cast<uint64_t>(4 * outCols);
    v.params.push_back(p);
    if (residual) {
      p.binding = 2;
      v.params.push_back(p);
    }
    p.kind = CudaTileParam::Rows;
    p.binding = 0;
    p.rowBytes = 0;
    v.params.push_back(p);
    ptx += hopper::emitGemmEntryPtx(c, v.name);
    variants.push_back(std::move(v));
  }
  programsPerRow = static_cast<uint64_t>(perRow);
  return variants;
}

OwningOpRef<ModuleOp> buildGpuProgramModule(MLIRContext &ctx,
                                            const KernelTable &table,
                                            StringRef chip,
                                            std::vector<CudaEntry> &entries,
                                            std::string &tilePtx) {
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
    if (chip == "sm_90a")
      e.tiles = gemmTileVariants(k, e.programsPerRow, tilePtx);
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
  CudaResources *cur = nullptr;
  SmallVector<StringRef> lines;
  log.split(lines, '\n');
  for (StringRef line : lines) {
    SmallVector<StringRef> m;
    if (fnRe.match(line, &m)) {
      cur = nullptr;
      for (CudaEntry &e : entries) {
        if (e.name == m[1])
          cur = &e;
        for (CudaTileVariant &v : e.tiles)
          if (v.name == m[1])
            cur = &v.resources;
      }
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
  std::string tilePtx;
  OwningOpRef<ModuleOp> module =
      buildGpuProgramModule(ctx, table, chip, exe.entries, tilePtx);
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
  if (!tilePtx.empty())
    exe.ptx += "\n// Tile kernels (HopperGemm.h).\n" +
               hopper::ptxSharedDeclarations() + tilePtx;
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
