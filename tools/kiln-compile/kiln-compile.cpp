//===- kiln-compile.cpp - Compile a model into a Kiln plan ----------------===//
//
//   kiln-compile MODEL.mlir -o PLAN --target=cpu|sm_90a|sm_90a,cpu
//                [--cpu=host|x86-64-v3|x86-64-v4|sapphirerapids|...]
//                [--cpu-emitter=auto|reference] [--cpu-gemm-precision=f32|bf16]
//                [--dump-ir-dir DIR] [--embed-weights] [--hash-threads N] [--quiet]
//                [--mlir-print-ir-after-all ...]
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Compiler.h"

#include "kiln/Compiler/Plan.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

namespace cl = llvm::cl;

// Exit codes (README): 0 success, 1 the model could not be compiled (the
// error says why), 2 usage (unknown flag or bad value).
enum ExitCode { kOk = 0, kCompileFailed = 1, kUsage = 2 };

static cl::OptionCategory kilnCategory("Kiln options");
static cl::OptionCategory
    irCategory("MLIR options for IR inspection (--help-hidden lists all "
               "of LLVM's)");

static cl::opt<std::string> inputPath(cl::Positional, cl::Required,
                                      cl::desc("<model.mlir | checkpoint dir>"),
                                      cl::cat(kilnCategory));
static cl::opt<std::string> outputPath("o", cl::Required,
                                       cl::desc("Output plan (.kplan)"),
                                       cl::value_desc("plan"),
                                       cl::cat(kilnCategory));
static cl::opt<std::string>
    targets("target", cl::init("cpu"),
            cl::desc("Comma-separated targets: cpu, sm_90a"),
            cl::cat(kilnCategory));
static cl::opt<std::string> cpuName(
    "cpu", cl::init("host"),
    cl::desc("CPU the cpu target's code is for: host (its feature flags), "
             "x86-64, x86-64-v2, x86-64-v3, x86-64-v4, or an LLVM CPU name "
             "(sapphirerapids, znver4, ...); the plan records the features "
             "it needs and the runtime refuses a host without them"),
    cl::value_desc("name"), cl::cat(kilnCategory));
static cl::opt<std::string> cpuEmitter(
    "cpu-emitter", cl::init("auto"),
    cl::desc("CPU code for each kernel: auto (the optimized emitter where "
             "one applies: the GEMM family on AVX-512/AMX) or reference (the "
             "scalar programs everywhere, for tests and debugging)"),
    cl::value_desc("auto|reference"), cl::cat(kilnCategory));
static cl::opt<std::string> cpuGemmPrecision(
    "cpu-gemm-precision", cl::init("f32"),
    cl::desc("Arithmetic of the optimized CPU GEMMs: f32 (the reference's), "
             "or bf16 (activations rounded to bf16 for AMX-BF16 tiles where "
             "the weights are bf16 and the target CPU has AMX)"),
    cl::value_desc("f32|bf16"), cl::cat(kilnCategory));
static cl::opt<std::string>
    dumpIRDir("dump-ir-dir",
              cl::desc("Write the IR after every stage as numbered files"),
              cl::value_desc("dir"), cl::cat(kilnCategory));
static cl::opt<bool> embedWeights(
    "embed-weights",
    cl::desc("Pack the weights into the plan instead of referencing files"),
    cl::cat(kilnCategory));
static cl::opt<bool> noWeights(
    "no-weights",
    cl::desc("Compile from the model structure alone (config.json): the plan "
             "describes the model but cannot run"),
    cl::cat(kilnCategory));
static cl::opt<std::string> quantize(
    "quantize", cl::init("none"),
    cl::desc("Weight quantization: none, or fp8-block (DeepSeek-V3's e4m3 "
             "128x128 blocks with dynamic 1x128 activation tiles)"),
    cl::cat(kilnCategory));
static cl::opt<bool> fp8LmHead(
    "fp8-lm-head",
    cl::desc("In an FP8 model (an FP8 checkpoint or --quantize=fp8-block), "
             "quantize the LM head too (DeepSeek's checkpoints keep it bf16): "
             "e4m3 128x128 blocks, its input in 1x128 tiles"),
    cl::cat(kilnCategory));
static cl::opt<bool> fp8ExactSubnormals(
    "fp8-exact-subnormals",
    cl::desc("FP8 GEMMs keep e4m3 subnormal weights exactly everywhere: off, "
             "decode's GEMV rows on Intel AVX-512-BF16 CPUs read them (below "
             "1/28672 of a block's largest weight) as zero, 1.3x faster "
             "(docs/fp8.md)"),
    cl::cat(kilnCategory));
static cl::opt<std::string> kvCacheDType(
    "kv-cache-dtype", cl::init("bf16"),
    cl::desc("Element type of the KV caches (MLA: the latent cache): bf16 "
             "(default), f32, or fp8 (MLA models: the latent as e4m3 under "
             "one power-of-two scale per token, the rope key bf16)"),
    cl::value_desc("bf16|f32|fp8"), cl::cat(kilnCategory));
static cl::opt<std::string> logitsMode(
    "logits", cl::init("last"),
    cl::desc("Logits a checkpoint's functions return: last (default: each "
             "batch row's last given position, [batch, vocab]) or all "
             "([batch, seq, vocab])"),
    cl::value_desc("last|all"), cl::cat(kilnCategory));
static cl::opt<int64_t> maxBatch("max-batch", cl::init(1),
                                 cl::desc("Batch size the plan accepts"),
                                 cl::cat(kilnCategory));
static cl::opt<int64_t>
    maxSeq("max-seq", cl::init(0),
           cl::desc("Tokens per batch row the plan accepts (prompt plus "
                    "generated; the KV cache's capacity). Default: the "
                    "config's max_position_embeddings, at most 4096"),
           cl::cat(kilnCategory));
static cl::opt<int64_t> prefillChunk(
    "prefill-chunk", cl::init(0),
    cl::desc("Tokens per batch row one prefill call takes. A longer prompt "
             "is prefilled in chunks (forward, then extend at a position), "
             "so activations are sized by the chunk, not by --max-seq. "
             "Default: min(--max-seq, 4096)"),
    cl::cat(kilnCategory));
static cl::opt<bool>
    noFuse("no-fuse",
           cl::desc("Skip the kernel-level fusion passes (to compare "
                    "fused and unfused plans)"),
           cl::cat(kilnCategory));
static cl::opt<int64_t>
    minGemmPrograms("min-gemm-programs", cl::init(64),
                    cl::desc("Smallest grid the GEMM tile heuristic aims for"),
                    cl::cat(kilnCategory));
static cl::opt<int64_t> moeBlockM(
    "moe-block-m", cl::init(0),
    cl::desc("Rows per block of the experts' layout (0: the heuristic)"),
    cl::cat(kilnCategory));
static cl::opt<std::string>
    mlaForm("mla-form", cl::init("auto"),
            cl::desc("MLA kernel form: auto (by FLOPs), absorbed or naive"),
            cl::cat(kilnCategory));

static cl::opt<int> hashThreads(
    "hash-threads", cl::init(0),
    cl::desc("Threads hashing the checkpoint's weights (0: all cores)"),
    cl::cat(kilnCategory));
static cl::opt<bool> quiet(
    "quiet",
    cl::desc("No progress report on stderr (large checkpoints report the "
             "weights hashed every 2 s)"),
    cl::cat(kilnCategory));

/// Whether `value` of --`flag` is one of `choices`; reports it if not.
static bool oneOf(llvm::StringRef flag, llvm::StringRef value,
                  llvm::ArrayRef<llvm::StringRef> choices) {
  if (llvm::is_contained(choices, value))
    return true;
  llvm::errs() << "kiln-compile: error: unknown --" << flag << "=" << value
               << " (expected " << llvm::join(choices, ", ") << ")\n";
  return false;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  std::string commandLine;
  for (int i = 1; i < argc; ++i)
    commandLine += (i > 1 ? " " : "") + std::string(argv[i]);
  mlir::registerMLIRContextCLOptions();
  mlir::registerPassManagerCLOptions();
  mlir::registerDefaultTimingManagerCLOptions();
  mlir::registerAsmPrinterCLOptions();
  kiln::registerCompilerPasses();
  // --help shows Kiln's options and the IR-inspection flags users reach for;
  // LLVM's ~300 others stay accepted and listed by --help-hidden.
  auto &registered = cl::getRegisteredOptions();
  for (llvm::StringRef name :
       {"mlir-print-ir-after-all", "mlir-print-ir-before-all",
        "mlir-print-ir-after", "mlir-print-ir-before",
        "mlir-print-ir-after-change", "mlir-print-ir-module-scope",
        "mlir-print-debuginfo", "mlir-elide-elementsattrs-if-larger",
        "mlir-timing", "mlir-pass-statistics"})
    if (auto it = registered.find(name); it != registered.end())
      it->second->addCategory(irCategory);
  for (auto &[name, opt] : registered) {
    bool ours = false;
    for (cl::OptionCategory *c : opt->Categories)
      ours |= c == &kilnCategory || c == &irCategory;
    if (!ours && opt->getOptionHiddenFlag() == cl::NotHidden)
      opt->setHiddenFlag(cl::Hidden);
  }
  cl::SetVersionPrinter([](llvm::raw_ostream &os) {
    os << kiln::compilerVersion() << "\nwrites plan format version "
       << kiln::kPlanFormatWritten << "\n";
  });
  std::string usageErrors;
  llvm::raw_string_ostream usageOs(usageErrors);
  if (!cl::ParseCommandLineOptions(
          argc, argv,
          "Kiln compiler: a model (Hugging Face checkpoint directory or .mlir "
          "in the kiln dialect) -> executable plan\n\n"
          "  exit codes: 0 success, 1 the model could not be compiled, 2 "
          "usage\n",
          &usageOs)) {
    llvm::errs() << usageErrors
                 << "Run 'kiln-compile --help' for the options.\n";
    return kUsage;
  }

  mlir::DialectRegistry registry;
  kiln::registerCompilerDialects(registry);
  mlir::MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  ctx.printOpOnDiagnostic(false);
  llvm::SourceMgr sm;
  mlir::SourceMgrDiagnosticHandler handler(sm, &ctx);

  kiln::CompileOptions opts;
  opts.input = inputPath;
  opts.output = outputPath;
  llvm::SmallVector<llvm::StringRef> parts;
  llvm::StringRef(targets).split(parts, ',', -1, /*KeepEmpty=*/false);
  for (llvm::StringRef p : parts)
    opts.targets.push_back(p.trim().str());
  opts.dumpIRDir = dumpIRDir;
  opts.cpu = cpuName;
  if (!oneOf("cpu-emitter", cpuEmitter, {"auto", "reference"}) ||
      !oneOf("cpu-gemm-precision", cpuGemmPrecision, {"f32", "bf16"}) ||
      !oneOf("quantize", quantize, {"none", "fp8-block"}) ||
      !oneOf("kv-cache-dtype", kvCacheDType, {"bf16", "f32", "fp8"}) ||
      !oneOf("logits", logitsMode, {"last", "all"}) ||
      !oneOf("mla-form", mlaForm, {"auto", "absorbed", "naive"}))
    return kUsage;
  opts.cpuEmitter = cpuEmitter == "reference"
                        ? kiln::CpuEmitterChoice::Reference
                        : kiln::CpuEmitterChoice::Auto;
  opts.cpuGemmPrecision = cpuGemmPrecision == "bf16"
                              ? kiln::CpuGemmPrecision::BF16
                              : kiln::CpuGemmPrecision::F32;
  opts.embedWeights = embedWeights;
  opts.noWeights = noWeights;
  opts.quantizeFP8 = quantize == "fp8-block";
  opts.fp8LmHead = fp8LmHead;
  opts.fp8ExactSubnormals = fp8ExactSubnormals;
  opts.kvCacheDType = kvCacheDType == "f32"   ? kiln::CompileOptions::KVCacheDType::F32
                      : kvCacheDType == "fp8" ? kiln::CompileOptions::KVCacheDType::FP8
                                              : kiln::CompileOptions::KVCacheDType::BF16;
  opts.allLogits = logitsMode == "all";
  opts.maxBatch = maxBatch;
  opts.maxSeq = maxSeq;
  if (prefillChunk < 0) {
    llvm::errs() << "kiln-compile: error: --prefill-chunk must be >= 0, got "
                 << prefillChunk << "\n";
    return kUsage;
  }
  opts.prefillChunk = prefillChunk;
  opts.commandLine = commandLine;
  opts.pipeline.minGemmPrograms = minGemmPrograms;
  opts.pipeline.fuse = !noFuse;
  if (moeBlockM < 0) {
    llvm::errs() << "kiln-compile: error: --moe-block-m must be >= 0, got "
                 << moeBlockM << "\n";
    return kUsage;
  }
  opts.pipeline.moeBlockM = moeBlockM;
  if (hashThreads < 0) {
    llvm::errs() << "kiln-compile: error: --hash-threads must be >= 0, got "
                 << hashThreads << "\n";
    return kUsage;
  }
  opts.threads = hashThreads;
  opts.quiet = quiet;
  opts.pipeline.mlaForm = mlaForm;
  if (mlir::failed(kiln::compileModel(ctx, opts))) {
    llvm::errs() << "kiln-compile: error: compilation of " << inputPath
                 << " failed; no plan written\n";
    return kCompileFailed;
  }
  return kOk;
}
