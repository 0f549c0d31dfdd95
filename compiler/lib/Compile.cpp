//===- Compile.cpp - The kiln-compile driver ------------------------------===//
//
// model.mlir -> graph -> kernel -> per-target executables -> plan. Each stage
// is dumped with --dump-ir-dir; the plan is written to a temporary file in
// the destination directory and renamed into place only when complete.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Compiler.h"
#include "kiln/Compiler/Codegen.h"
#include "kiln/Compiler/Plan.h"
#include "kiln/Compiler/Safetensors.h"
#include "kiln/Compiler/StageDumper.h"

#include "kiln/IR/KilnDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>

using namespace mlir;

namespace kiln {

namespace {

std::string safetensorsDType(Type t) {
  if (t.isF32())
    return "F32";
  if (t.isF16())
    return "F16";
  if (t.isBF16())
    return "BF16";
  if (t.isInteger(32))
    return "I32";
  if (t.isInteger(64))
    return "I64";
  if (isa<Float8E4M3FNType>(t))
    return "F8_E4M3";
  return "?";
}

std::string shapeText(ArrayRef<int64_t> s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i)
    r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

/// Resolves every kiln.weight against the checkpoint named by the module's
/// `kiln.weights` attribute (relative to the model file).
LogicalResult
resolveWeights(ModuleOp module, const std::string &modelPath,
               std::vector<std::unique_ptr<SafetensorsFile>> &files,
               std::map<std::string, WeightSource> &out) {
  SmallVector<graph::WeightOp> weightOps;
  module.walk([&](graph::WeightOp w) { weightOps.push_back(w); });
  if (weightOps.empty())
    return success();
  auto attr = module->getAttrOfType<StringAttr>("kiln.weights");
  if (!attr)
    return weightOps.front().emitError()
           << "the model uses weights but the module has no kiln.weights "
              "attribute naming the checkpoint file";
  llvm::SmallString<256> path(attr.getValue());
  if (!llvm::sys::path::is_absolute(path)) {
    path = llvm::sys::path::parent_path(modelPath);
    llvm::sys::path::append(path, attr.getValue());
  }
  auto file = SafetensorsFile::open(path.str().str());
  if (!file)
    return module.emitError() << "weights: " << llvm::toString(file.takeError());
  SafetensorsFile &st = **file;
  for (graph::WeightOp w : weightOps) {
    std::string name = w.getName().str();
    if (out.count(name))
      continue;
    const SafetensorsTensor *t = st.find(name);
    auto type = cast<RankedTensorType>(w.getType());
    if (!t)
      return w.emitError() << "weight '" << name << "' is missing from "
                           << st.path();
    if (t->dtype != safetensorsDType(type.getElementType()))
      return w.emitError() << "weight '" << name << "' in " << st.path()
                           << " has dtype " << t->dtype << ", the model expects "
                           << safetensorsDType(type.getElementType());
    if (ArrayRef<int64_t>(t->shape) != type.getShape())
      return w.emitError() << "weight '" << name << "' in " << st.path()
                           << " has shape " << shapeText(t->shape)
                           << ", the model expects "
                           << shapeText(type.getShape());
    WeightSource src;
    src.name = name;
    src.elementType = type.getElementType();
    src.shape = t->shape;
    src.path = st.path();
    src.offset = t->offset;
    src.size = t->size;
    src.fileSize = st.fileSize();
    src.data = st.data(*t);
    out[name] = std::move(src);
  }
  files.push_back(std::move(*file));
  return success();
}

LogicalResult runPipeline(ModuleOp module,
                          llvm::function_ref<void(OpPassManager &)> build) {
  PassManager pm(module->getContext());
  if (failed(applyPassManagerCLOptions(pm)))
    return failure();
  build(pm);
  return pm.run(module);
}

LogicalResult writeAtomically(const std::string &path,
                              const std::vector<uint8_t> &bytes,
                              MLIRContext &ctx) {
  llvm::SmallString<256> tmp;
  int fd;
  std::string model = path + ".tmp-%%%%%%";
  if (auto ec = llvm::sys::fs::createUniqueFile(model, fd, tmp))
    return emitError(UnknownLoc::get(&ctx))
           << "cannot create " << path << ": " << ec.message();
  bool ok = false;
  auto cleanup = llvm::make_scope_exit([&] {
    if (!ok)
      llvm::sys::fs::remove(tmp);
  });
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os.write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
    os.flush();
    if (os.has_error())
      return emitError(UnknownLoc::get(&ctx))
             << "cannot write " << tmp << ": " << os.error().message();
  }
  if (auto ec = llvm::sys::fs::rename(tmp, path))
    return emitError(UnknownLoc::get(&ctx))
           << "cannot rename " << tmp << " to " << path << ": "
           << ec.message();
  ok = true;
  return success();
}

} // namespace

LogicalResult compileModel(MLIRContext &ctx, const CompileOptions &opts) {
  StageDumper dumper(opts.dumpIRDir);
  if (dumper.enabled())
    if (auto ec = llvm::sys::fs::create_directories(opts.dumpIRDir))
      return emitError(UnknownLoc::get(&ctx))
             << "cannot create --dump-ir-dir " << opts.dumpIRDir << ": "
             << ec.message();

  bool wantCpu = false;
  std::vector<std::string> gpuChips;
  for (const std::string &t : opts.targets) {
    if (t == "cpu")
      wantCpu = true;
    else if (t == "sm_90a")
      gpuChips.push_back(t);
    else
      return emitError(UnknownLoc::get(&ctx))
             << "unknown target '" << t << "' (supported: cpu, sm_90a)";
  }
  if (!wantCpu && gpuChips.empty())
    return emitError(UnknownLoc::get(&ctx)) << "no target given";

  if (llvm::sys::fs::is_directory(opts.input))
    return emitError(UnknownLoc::get(&ctx))
           << opts.input
           << " is a directory: Hugging Face checkpoint import is not "
              "supported yet; pass a model written in the kiln dialect (.mlir)";

  auto source = llvm::MemoryBuffer::getFile(opts.input);
  if (!source)
    return emitError(UnknownLoc::get(&ctx))
           << "cannot read " << opts.input << ": "
           << source.getError().message();
  uint64_t sourceHash = fnv1a64(
      reinterpret_cast<const uint8_t *>((*source)->getBufferStart()),
      (*source)->getBufferSize());
  llvm::SourceMgr sm;
  sm.AddNewSourceBuffer(std::move(*source), llvm::SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sm, &ctx);
  if (!module)
    return failure();
  if (failed(dumper.dump("input", *module)))
    return failure();

  // Graph stage.
  if (failed(runPipeline(*module, [&](OpPassManager &pm) {
        buildKilnGraphPipeline(pm, opts.pipeline);
      })))
    return failure();
  if (failed(dumper.dump("graph", *module)))
    return failure();

  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, WeightSource> weights;
  if (failed(resolveWeights(*module, opts.input, files, weights)))
    return failure();

  // Kernel stage.
  if (failed(runPipeline(*module, [&](OpPassManager &pm) {
        buildKilnKernelPipeline(pm, opts.pipeline);
      })))
    return failure();
  if (failed(dumper.dump("kernel", *module)))
    return failure();

  auto forward = module->lookupSymbol<func::FuncOp>("forward");
  KernelTable table = collectKernels(forward);

  std::optional<CpuExecutable> cpu;
  std::optional<CudaExecutable> cuda;
  if (wantCpu) {
    auto exe = buildCpuExecutable(ctx, table, dumper);
    if (failed(exe))
      return failure();
    cpu = std::move(*exe);
  }
  for (const std::string &chip : gpuChips) {
    auto exe = buildCudaExecutable(ctx, table, chip, dumper);
    if (failed(exe))
      return failure();
    cuda = std::move(*exe);
  }

  PlanOptions popts;
  popts.planPath = opts.output;
  popts.embedWeights = opts.embedWeights;
  popts.name = llvm::sys::path::stem(opts.input).str();
  popts.compilerVersion = compilerVersion();
  popts.flags = opts.commandLine;
  popts.sourcePath = opts.input;
  {
    std::string h;
    llvm::raw_string_ostream os(h);
    os << llvm::format_hex_no_prefix(sourceHash, 16);
    popts.sourceHash = h;
  }
  if (auto epoch = llvm::sys::Process::GetEnv("SOURCE_DATE_EPOCH"))
    popts.createdUnix = std::atoll(epoch->c_str());
  else
    popts.createdUnix = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  auto plan = emitPlan(forward, table, weights, cpu, cuda, popts);
  if (failed(plan))
    return failure();
  return writeAtomically(opts.output, *plan, ctx);
}

} // namespace kiln
