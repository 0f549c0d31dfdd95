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
#include "kiln/Models/HuggingFace.h"
#include "kiln/Kernels/FP8Host.h"

#include <cmath>
#include <cstring>

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Signals.h"
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

/// Checks one checkpoint tensor against the type the graph expects.
LogicalResult checkTensor(Operation *op, const std::string &name,
                          const Checkpoint::Entry &e, Type elementType,
                          ArrayRef<int64_t> shape) {
  if (!e.tensor)
    return op->emitError() << "weight '" << name
                           << "' is missing from the checkpoint";
  if (e.tensor->dtype != safetensorsDType(elementType))
    return op->emitError() << "weight '" << name << "' in "
                           << e.file->path() << " has dtype "
                           << e.tensor->dtype << ", the model expects "
                           << safetensorsDType(elementType);
  if (ArrayRef<int64_t>(e.tensor->shape) != shape)
    return op->emitError() << "weight '" << name << "' in " << e.file->path()
                           << " has shape " << shapeText(e.tensor->shape)
                           << ", the model expects " << shapeText(shape);
  return success();
}

/// Reads a checkpoint tensor as f32 (F32, BF16, F16).
std::optional<std::vector<float>> readAsF32(const Checkpoint::Entry &e) {
  const uint8_t *p = e.file->data(*e.tensor);
  size_t n = e.tensor->size / safetensorsDTypeSize(e.tensor->dtype);
  std::vector<float> out(n);
  if (e.tensor->dtype == "F32") {
    std::memcpy(out.data(), p, n * 4);
  } else if (e.tensor->dtype == "BF16") {
    for (size_t i = 0; i < n; ++i) {
      uint32_t bits = uint32_t(p[2 * i] | (p[2 * i + 1] << 8)) << 16;
      std::memcpy(&out[i], &bits, 4);
    }
  } else if (e.tensor->dtype == "F16") {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h = uint16_t(p[2 * i] | (p[2 * i + 1] << 8));
      out[i] = llvm::APFloat(llvm::APFloat::IEEEhalf(), llvm::APInt(16, h))
                   .convertToFloat();
    }
  } else {
    return std::nullopt;
  }
  return out;
}

constexpr llvm::StringLiteral kScaleSuffix = "_scale_inv";

/// Resolves every kiln.weight and kiln.weight_stack name against the
/// checkpoint, checking dtype and shape. With `quantize`, an e4m3 weight
/// found in high precision is quantized here (128x128 blocks) and its
/// `_scale_inv` derived; both are packed into the plan.
LogicalResult resolveWeights(ModuleOp module, const Checkpoint &ck,
                             std::map<std::string, WeightSource> &out,
                             bool quantize) {
  // Compile-time quantization of `name` (expected e4m3 of `shape`).
  auto quantizeFrom = [&](Operation *op, const std::string &name,
                          ArrayRef<int64_t> shape) -> LogicalResult {
    auto e = ck.find(name);
    if (!e.tensor)
      return op->emitError() << "weight '" << name
                             << "' is missing from the checkpoint";
    if (ArrayRef<int64_t>(e.tensor->shape) != shape || shape.size() != 2)
      return op->emitError() << "weight '" << name << "' in "
                             << e.file->path() << " has shape "
                             << shapeText(e.tensor->shape)
                             << ", the model expects " << shapeText(shape);
    auto values = readAsF32(e);
    if (!values)
      return op->emitError() << "weight '" << name << "' has dtype "
                             << e.tensor->dtype
                             << ", which --quantize=fp8-block cannot quantize";
    // NaN would quantize to a silent 0 and infinity saturate to 448.
    for (size_t i = 0; i < values->size(); ++i)
      if (!std::isfinite((*values)[i]))
        return op->emitError()
               << "weight '" << name << "' in " << e.file->path()
               << " has a non-finite value at [" << i / shape[1] << ", "
               << i % shape[1]
               << "]; --quantize=fp8-block needs finite weights";
    auto q = std::make_shared<std::vector<uint8_t>>();
    std::vector<float> scales;
    kernels::quantizeWeightBlocks(values->data(), shape[0], shape[1], 128, *q,
                                  scales);
    auto sBytes = std::make_shared<std::vector<uint8_t>>(scales.size() * 4);
    std::memcpy(sBytes->data(), scales.data(), sBytes->size());
    Builder b(module.getContext());
    WeightSource qs;
    qs.name = name;
    qs.elementType = b.getType<Float8E4M3FNType>();
    qs.shape.assign(shape.begin(), shape.end());
    qs.size = q->size();
    qs.owned = q;
    qs.data = q->data();
    out[name] = qs;
    WeightSource ss;
    ss.name = name + kScaleSuffix.str();
    ss.elementType = b.getF32Type();
    ss.shape = {(shape[0] + 127) / 128, (shape[1] + 127) / 128};
    ss.size = sBytes->size();
    ss.owned = sBytes;
    ss.data = sBytes->data();
    out[ss.name] = ss;
    return success();
  };
  // Resolves one name expected as (elementType, shape).
  auto resolve = [&](Operation *op, const std::string &name, Type et,
                     ArrayRef<int64_t> shape) -> LogicalResult {
    if (out.count(name))
      return success();
    auto e = ck.find(name);
    bool isF8 = isa<Float8E4M3FNType>(et);
    if (quantize && isF8 && e.tensor && e.tensor->dtype != "F8_E4M3")
      return quantizeFrom(op, name, shape);
    if (quantize && !e.tensor && StringRef(name).ends_with(kScaleSuffix)) {
      std::string base = name.substr(0, name.size() - kScaleSuffix.size());
      auto be = ck.find(base);
      if (be.tensor && be.tensor->dtype != "F8_E4M3")
        return success(); // derived when `base` is quantized
    }
    if (failed(checkTensor(op, name, e, et, shape)))
      return failure();
    WeightSource src;
    src.name = name;
    src.elementType = et;
    src.shape = e.tensor->shape;
    src.path = e.file->path();
    src.offset = e.tensor->offset;
    src.size = e.tensor->size;
    src.fileSize = e.file->fileSize();
    src.data = e.file->data(*e.tensor);
    out[name] = std::move(src);
    return success();
  };
  WalkResult r = module.walk([&](Operation *op) {
    if (auto w = dyn_cast<graph::WeightOp>(op)) {
      auto type = cast<RankedTensorType>(w.getType());
      if (failed(resolve(op, w.getName().str(), type.getElementType(),
                         type.getShape())))
        return WalkResult::interrupt();
    } else if (auto ws = dyn_cast<graph::WeightStackOp>(op)) {
      auto type = cast<RankedTensorType>(ws.getType());
      for (Attribute a : ws.getNames())
        if (failed(resolve(op, cast<StringAttr>(a).getValue().str(),
                           type.getElementType(),
                           type.getShape().drop_front())))
          return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  if (r.wasInterrupted())
    return failure();
  // Every derived scale must exist now.
  WalkResult missing = module.walk([&](graph::WeightOp w) {
    if (!out.count(w.getName().str())) {
      w.emitError() << "weight '" << w.getName()
                    << "' is missing from the checkpoint";
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(missing.wasInterrupted());
}

/// Records every weight without data (--no-weights): the plan describes the
/// model but cannot run.
void declareWeightsWithoutData(ModuleOp module,
                               std::map<std::string, WeightSource> &out) {
  auto declare = [&](const std::string &name, Type et,
                     ArrayRef<int64_t> shape) {
    if (out.count(name))
      return;
    WeightSource src;
    src.name = name;
    src.elementType = et;
    src.shape.assign(shape.begin(), shape.end());
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    src.size = n * ((et.getIntOrFloatBitWidth() + 7) / 8);
    out[name] = std::move(src);
  };
  module.walk([&](Operation *op) {
    if (auto w = dyn_cast<graph::WeightOp>(op)) {
      auto t = cast<RankedTensorType>(w.getType());
      declare(w.getName().str(), t.getElementType(), t.getShape());
    } else if (auto ws = dyn_cast<graph::WeightStackOp>(op)) {
      auto t = cast<RankedTensorType>(ws.getType());
      for (Attribute a : ws.getNames())
        declare(cast<StringAttr>(a).getValue().str(), t.getElementType(),
                t.getShape().drop_front());
    }
  });
}

LogicalResult runPipeline(ModuleOp module,
                          llvm::function_ref<void(OpPassManager &)> build) {
  PassManager pm(module->getContext());
  if (failed(applyPassManagerCLOptions(pm)))
    return failure();
  applyDefaultTimingPassManagerCLOptions(pm); // --mlir-timing
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
  // Removed on every failure, and on SIGINT/SIGTERM while it is written.
  llvm::sys::RemoveFileOnSignal(tmp);
  bool ok = false;
  llvm::scope_exit cleanup([&] {
    if (!ok)
      llvm::sys::fs::remove(tmp);
    llvm::sys::DontRemoveFileOnSignal(tmp);
  });
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os.write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
    os.close();
    if (os.has_error()) {
      std::error_code ec = os.error();
      // An unhandled stream error aborts in raw_fd_ostream's destructor,
      // which would skip the clean-up above.
      os.clear_error();
      return emitError(UnknownLoc::get(&ctx))
             << "cannot write " << path << " (" << bytes.size()
             << " bytes): " << ec.message() << "; nothing was written";
    }
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

  OwningOpRef<ModuleOp> module;
  std::unique_ptr<Checkpoint> checkpoint;
  std::optional<GenerationAssets> generation;
  uint64_t sourceHash = 0;
  if (llvm::sys::fs::is_directory(opts.input)) {
    // A Hugging Face checkpoint directory.
    llvm::SmallString<256> configPath(opts.input);
    llvm::sys::path::append(configPath, "config.json");
    auto config = llvm::MemoryBuffer::getFile(configPath);
    if (!config)
      return emitError(UnknownLoc::get(&ctx))
             << "cannot read " << configPath << ": "
             << config.getError().message();
    sourceHash = fnv1a64(
        reinterpret_cast<const uint8_t *>((*config)->getBufferStart()),
        (*config)->getBufferSize());
    if (!opts.noWeights) {
      auto ck = Checkpoint::open(opts.input);
      if (!ck)
        return emitError(UnknownLoc::get(&ctx))
               << "checkpoint: " << llvm::toString(ck.takeError());
      checkpoint = std::move(*ck);
    }
    auto assets = readGenerationAssets(opts.input);
    if (!assets)
      return emitError(UnknownLoc::get(&ctx))
             << llvm::toString(assets.takeError());
    generation = std::move(*assets);
    if (!generation->tokenizerSkipped.empty())
      emitWarning(UnknownLoc::get(&ctx))
          << "the plan carries no tokenizer: "
          << generation->tokenizerSkipped
          << " (the plan still runs on token ids)";
    models::ImportOptions io;
    io.batch = opts.maxBatch;
    io.seq = opts.maxSeq;
    io.prefillChunk = opts.prefillChunk;
    io.noWeights = opts.noWeights;
    io.quantizeFP8 = opts.quantizeFP8;
    io.fp8LmHead = opts.fp8LmHead;
    io.cacheType = opts.kvCacheDType == CompileOptions::KVCacheDType::F32
                       ? models::ImportOptions::CacheType::F32
                   : opts.kvCacheDType == CompileOptions::KVCacheDType::FP8
                       ? models::ImportOptions::CacheType::FP8
                       : models::ImportOptions::CacheType::BF16;
    io.allLogits = opts.allLogits;
    auto imported = models::importHuggingFace(
        ctx, configPath.str().str(), io, [&](llvm::StringRef name) {
          auto e = checkpoint ? checkpoint->find(name) : Checkpoint::Entry{};
          return e.tensor ? e.tensor->dtype : std::string();
        });
    if (failed(imported))
      return failure();
    module = std::move(*imported);
  } else {
    auto source = llvm::MemoryBuffer::getFile(opts.input);
    if (!source)
      return emitError(UnknownLoc::get(&ctx))
             << "cannot read " << opts.input << ": "
             << source.getError().message();
    sourceHash = fnv1a64(
        reinterpret_cast<const uint8_t *>((*source)->getBufferStart()),
        (*source)->getBufferSize());
    llvm::SourceMgr sm;
    sm.AddNewSourceBuffer(std::move(*source), llvm::SMLoc());
    module = parseSourceFile<ModuleOp>(sm, &ctx);
    if (!module)
      return failure();
    if (!opts.noWeights) {
      if (auto attr = (*module)->getAttrOfType<StringAttr>("kiln.weights")) {
        llvm::SmallString<256> path(attr.getValue());
        if (!llvm::sys::path::is_absolute(path)) {
          path = llvm::sys::path::parent_path(opts.input);
          llvm::sys::path::append(path, attr.getValue());
        }
        auto ck = Checkpoint::openFile(path.str().str());
        if (!ck)
          return module->emitError()
                 << "weights: " << llvm::toString(ck.takeError());
        checkpoint = std::move(*ck);
      }
    }
  }
  if (failed(dumper.dump("input", *module)))
    return failure();

  // Graph stage.
  if (failed(runPipeline(*module, [&](OpPassManager &pm) {
        buildKilnGraphPipeline(pm, opts.pipeline);
      })))
    return failure();
  if (failed(dumper.dump("graph", *module)))
    return failure();

  std::map<std::string, WeightSource> weights;
  if (opts.noWeights) {
    declareWeightsWithoutData(*module, weights);
  } else {
    bool usesWeights = false;
    module->walk([&](Operation *op) {
      if (isa<graph::WeightOp, graph::WeightStackOp>(op))
        usesWeights = true;
    });
    if (usesWeights && !checkpoint)
      return module->emitError()
             << "the model uses weights but names no checkpoint (module "
                "attribute kiln.weights)";
    // --fp8-lm-head quantizes the (high-precision) LM head of an FP8
    // checkpoint here too.
    if (checkpoint &&
        failed(resolveWeights(*module, *checkpoint, weights,
                              opts.quantizeFP8 || opts.fp8LmHead)))
      return failure();
  }

  // Kernel stage.
  if (failed(runPipeline(*module, [&](OpPassManager &pm) {
        buildKilnKernelPipeline(pm, opts.pipeline);
      })))
    return failure();
  if (failed(dumper.dump("kernel", *module)))
    return failure();

  KernelTable table = collectKernels(*module);

  std::optional<CpuExecutable> cpu;
  std::optional<CudaExecutable> cuda;
  if (wantCpu) {
    CpuCodegenOptions copts;
    copts.cpu = opts.cpu;
    copts.emitter = opts.cpuEmitter;
    copts.gemmPrecision = opts.cpuGemmPrecision;
    copts.fp8ExactSubnormals = opts.fp8ExactSubnormals;
    auto exe = buildCpuExecutable(ctx, table, copts, dumper);
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
  // Absolute, so that external weight paths are stored relative to the
  // plan's directory however -o is spelled ("x.kplan", "./x.kplan", ...).
  llvm::SmallString<256> planPath(opts.output);
  if (auto ec = llvm::sys::fs::make_absolute(planPath))
    return emitError(UnknownLoc::get(&ctx))
           << "cannot resolve -o " << opts.output << ": " << ec.message();
  popts.planPath = planPath.str().str();
  popts.embedWeights = opts.embedWeights;
  popts.hashThreads = opts.threads;
  popts.quiet = opts.quiet;
  popts.name = llvm::sys::path::stem(opts.input).str();
  popts.compilerVersion = compilerVersion();
  popts.flags = opts.commandLine;
  popts.generation = generation ? &*generation : nullptr;
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
  auto plan = emitPlan(*module, table, weights, cpu, cuda, popts);
  if (failed(plan))
    return failure();
  return writeAtomically(opts.output, *plan, ctx);
}

} // namespace kiln
