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
#include "kiln/Compiler/GpuRowKernels.h"
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

// Appends binding parameters (binding, bytes per row) and then the rows.
void appendBindingsAndRows(CudaTileVariant &v,
                           ArrayRef<std::pair<unsigned, uint64_t>> bindings) {
  for (auto [binding, rowBytes] : bindings) {
    CudaTileParam p;
    p.binding = binding;
    p.rowBytes = rowBytes;
    v.params.push_back(p);
  }
  CudaTileParam rows;
  rows.kind = CudaTileParam::Rows;
  v.params.push_back(rows);
}

// A HopperGemm tile variant `name` of `c` for up to `maxRows` rows: its
// threads, shared memory, tiles and (rebalancing) registers from `c`; the
// caller adds its config text and parameters.
CudaTileVariant gemmVariant(const std::string &name,
                            const hopper::GemmTileConfig &c, uint64_t maxRows) {
  CudaTileVariant v;
  v.name = name;
  v.maxRows = maxRows;
  v.threads = static_cast<uint32_t>(hopper::gemmThreads(c));
  v.dynamicSharedBytes =
      static_cast<uint32_t>(hopper::gemmDynamicSharedBytes(c));
  v.rowsPerTile = static_cast<uint32_t>(c.swapAB ? c.blockN : c.blockM);
  v.columnTiles = static_cast<uint32_t>(c.n / (c.swapAB ? c.blockM : c.blockN));
  // 128 x 40 + 256 x 232 = 384 x 168 (HopperGemm.h rebalancesRegisters).
  v.requiredRegisters = hopper::rebalancesRegisters(c) ? 168 : 0;
  return v;
}

// The 3D tensor map [E, rows, k] of a weight table's experts (bf16 or
// e4m3, k-major, 128B swizzle; the runtime takes the experts' spacing from
// their addresses), boxes of one 128-byte span x boxRows rows.
CudaTileParam weightTableMap(unsigned binding, bool e4m3, int64_t k,
                             int64_t rows, int64_t experts, uint32_t boxRows) {
  const uint64_t eb = e4m3 ? 1 : 2;
  CudaTileParam m;
  m.kind = CudaTileParam::TensorMap;
  m.binding = binding;
  m.dtype = e4m3 ? 5 : 2; // f8e4m3 / bf16
  m.dims = {static_cast<uint64_t>(k), static_cast<uint64_t>(rows),
            static_cast<uint64_t>(experts)};
  m.stridesBytes = {eb * static_cast<uint64_t>(k), 0};
  m.box = {static_cast<uint32_t>(128 / eb), boxRows, 1};
  m.swizzleBytes = 128;
  m.table = true;
  return m;
}

// The GEMM a kernel's tile variants compute, when it has them.
struct TileGemm {
  SmallVector<unsigned> weights; // bindings: one, or gate and up
  int64_t wRows = 0, k = 0, n = 0, tileN = 0;
  bool residual = false, swiglu = false, fp8 = false;
  bool quant = false; // e4m3 output with 1 x 128 scales (result, result2)
  int64_t n1 = 0;     // two outputs: W1's rows (0: one output)
  unsigned activations = 0, residualBinding = 0, result = 0, result2 = 0;
  unsigned scaleA = 0, scaleB = 0, scaleB2 = 0; // fp8 (scaleB2: W2's)
};

// kernel.gemm ([N, K] bf16 weights, N a multiple of 64, at most one addend:
// the residual epilogue) and kernel.gemm_swiglu (gate and up [I, K] bf16, 2 I
// a multiple of 16: the SwiGLU epilogue over the two weights' maps), both of
// f32 activations with K a multiple of 64 (the f32-activation form), and
// kernel.gemm_fp8 (e4m3 activations and weights with DeepSeek's 1 x 128 /
// 128 x 128 scales, N a multiple of 64, K of 128, at most one addend: the
// e4m3 form, both operands by TMA), kernel.gemm_dual (two bf16
// weights of N1 and N2 rows, multiples of 64, two outputs), and
// kernel.gemm_swiglu_fp8 (e4m3 gate and up [I, K], I and K multiples of
// 128: the quantizing SwiGLU form, e4m3 output with its 1 x 128 scales).
std::optional<TileGemm> tileGemmOf(Operation *op) {
  auto typeOf = [](Value v) { return cast<RankedTensorType>(v.getType()); };
  auto isF32 = [&](Value v) { return typeOf(v).getElementType().isF32(); };
  auto isBF16 = [&](Value v) { return typeOf(v).getElementType().isBF16(); };
  auto isE4M3 = [&](Value v) {
    return isa<Float8E4M3FNType>(typeOf(v).getElementType());
  };
  TileGemm g;
  g.result = op->getNumOperands();
  g.result2 = g.result + 1;
  if (auto q = dyn_cast<kernel::GemmSwiGLUFP8Op>(op)) {
    // gate and up [I, K] e4m3, I and K multiples of 128: the quantizing
    // SwiGLU form, one 128-output scale block per tile.
    if (!isE4M3(q.getInput()) || !isE4M3(q.getWGate()) || !isE4M3(q.getWUp()) ||
        !isF32(q.getInputScale()) || !isF32(q.getWGateScale()) ||
        !isF32(q.getWUpScale()) || !isE4M3(q.getResult()) ||
        !isF32(q.getScale()) || q.getAct() != 128 ||
        q.getWeightBlockN() != 128 ||
        typeOf(q.getWUp()) != typeOf(q.getWGate()))
      return std::nullopt;
    g.fp8 = g.swiglu = g.quant = true;
    g.weights = {1, 2};
    g.scaleA = 3;
    g.scaleB = 4;
    g.scaleB2 = 5;
    g.tileN = q.getTileN();
    g.wRows = typeOf(q.getWGate()).getDimSize(0);
    g.k = typeOf(q.getWGate()).getDimSize(1);
    g.n = 2 * g.wRows;
    if (g.wRows % 128 != 0 || g.k % 128 != 0)
      return std::nullopt;
    return g;
  }
  for (Value r : op->getResults())
    if (!isF32(r))
      return std::nullopt;
  if (auto d = dyn_cast<kernel::GemmDualOp>(op)) {
    if (!isF32(d.getInput()) || !isBF16(d.getW1()) || !isBF16(d.getW2()))
      return std::nullopt;
    g.weights = {1, 2};
    g.n1 = typeOf(d.getW1()).getDimSize(0);
    const int64_t n2 = typeOf(d.getW2()).getDimSize(0);
    if (g.n1 % 64 != 0 || n2 % 64 != 0)
      return std::nullopt;
    g.tileN = d.getTileN();
    g.wRows = g.n1 + n2;
    g.k = typeOf(d.getW1()).getDimSize(1);
    g.n = g.wRows;
    if (g.k % 64 != 0)
      return std::nullopt;
    return g;
  }
  if (auto d = dyn_cast<kernel::GemmDualFP8Op>(op)) {
    if (!isE4M3(d.getInput()) || !isE4M3(d.getW1()) || !isE4M3(d.getW2()) ||
        !isF32(d.getInputScale()) || !isF32(d.getW1Scale()) ||
        !isF32(d.getW2Scale()) || d.getAct() != 128 ||
        d.getWeightBlockN() != 128)
      return std::nullopt;
    g.fp8 = true;
    g.weights = {1, 2};
    g.scaleA = 3;
    g.scaleB = 4;
    g.scaleB2 = 5;
    g.n1 = typeOf(d.getW1()).getDimSize(0);
    const int64_t n2 = typeOf(d.getW2()).getDimSize(0);
    // W2's scale blocks start at a tile boundary: W1 whole 128-row blocks.
    if (g.n1 % 128 != 0 || n2 % 64 != 0)
      return std::nullopt;
    g.tileN = d.getTileN();
    g.wRows = g.n = g.n1 + n2;
    g.k = typeOf(d.getW1()).getDimSize(1);
    if (g.k % 128 != 0)
      return std::nullopt;
    return g;
  }
  if (op->getNumResults() != 1)
    return std::nullopt;
  if (auto gemm = dyn_cast<kernel::GemmOp>(op)) {
    if (!isF32(gemm.getInput()) || !isBF16(gemm.getWeight()) ||
        gemm.getAddends().size() > 1 ||
        (gemm.getAddends().size() == 1 && !isF32(gemm.getAddends()[0])))
      return std::nullopt;
    g.weights = {1};
    g.residual = gemm.getAddends().size() == 1;
    g.residualBinding = 2;
    g.tileN = gemm.getTileN();
  } else if (auto sw = dyn_cast<kernel::GemmSwiGLUOp>(op)) {
    if (!isF32(sw.getInput()) || !isBF16(sw.getWGate()) || !isBF16(sw.getWUp()))
      return std::nullopt;
    g.weights = {1, 2};
    g.swiglu = true;
    g.tileN = sw.getTileN();
  } else if (auto q = dyn_cast<kernel::GemmFP8Op>(op)) {
    if (!isE4M3(q.getInput()) || !isE4M3(q.getWeight()) ||
        !isF32(q.getInputScale()) || !isF32(q.getWeightScale()) ||
        q.getAct() != 128 || q.getWeightBlockN() != 128 ||
        q.getAddends().size() > 1 ||
        (q.getAddends().size() == 1 && !isF32(q.getAddends()[0])))
      return std::nullopt;
    g.fp8 = true;
    g.weights = {1};
    g.scaleA = 2;
    g.scaleB = 3;
    g.residual = q.getAddends().size() == 1;
    g.residualBinding = 4;
    g.tileN = q.getTileN();
  } else {
    return std::nullopt;
  }
  auto w = typeOf(op->getOperand(g.weights[0]));
  g.wRows = w.getDimSize(0);
  g.k = w.getDimSize(1);
  g.n = g.swiglu ? 2 * g.wRows : g.wRows;
  if ((g.swiglu ? g.n % 16 : g.n % 64) != 0 || g.k % (g.fp8 ? 128 : 64) != 0)
    return std::nullopt;
  return g;
}

// The tile variants of kernel `k` (and their PTX, appended to `ptx`) when
// tileGemmOf gives its GEMM: one variant per row range the tile heuristic
// tells apart (decode's swapped 8 / 16 / 32 tokens where the epilogue allows
// it; one math warpgroup to 64 rows, two above), up to the kernel's most
// rows, equal neighbours merged. Empty when it has none.
std::vector<CudaTileVariant> gemmTileVariants(const KernelRecord &k,
                                              uint64_t &programsPerRow,
                                              std::string &ptx) {
  std::optional<TileGemm> found = tileGemmOf(k.representative);
  if (!found)
    return {};
  const TileGemm &g = *found;
  const int64_t perRow = (g.wRows + g.tileN - 1) / g.tileN;
  const int64_t maxRows = k.maxPrograms / perRow;
  std::vector<hopper::GemmTileConfig> configs;
  std::vector<int64_t> upTo;
  if (g.quant) { // one tile of 64 rows x 128 outputs for every M
    hopper::GemmTileConfig c = hopper::chooseQuantizedSwiGLUTile(g.n, g.k);
    c.activationRow0 = true;
    if (!hopper::checkGemmTileConfig(c).empty())
      return {};
    configs.push_back(c);
    upTo.push_back(maxRows);
  }
  // Else one per row range the heuristic tells apart.
  if (!g.quant)
    for (int64_t bound :
         {int64_t(8), int64_t(16), int64_t(32), int64_t(64), maxRows}) {
      int64_t rows = std::min(bound, maxRows);
      if (rows <= 0 || (!upTo.empty() && rows <= upTo.back()))
        continue;
      hopper::GemmTileConfig c =
          hopper::chooseGemmTile(rows, g.n, g.k, g.fp8, false, kPlannedSMs);
      // The swapped form has no residual epilogue (SwiGLU swapped reads its
      // weights in 8-row gate and up boxes).
      if (g.residual && c.swapAB)
        c = hopper::chooseGemmTile(std::max<int64_t>(rows, 33), g.n, g.k, g.fp8,
                                   false, kPlannedSMs);
      c.f32Activations = !g.fp8;
      c.activationRow0 = g.fp8;
      c.epilogue = g.residual ? hopper::Epilogue::kResidual
                   : g.swiglu ? hopper::Epilogue::kSwiGLU
                              : hopper::Epilogue::kStore;
      c.splitGateUp = g.swiglu;
      c.dualN1 = g.n1;
      // Two outputs: a column tile lies in one weight.
      while (g.n1 && !c.swapAB && g.n1 % c.blockN != 0)
        c.blockN /= 2;
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
  const int64_t outCols = g.swiglu ? g.wRows : g.n;
  const uint32_t eb = g.fp8 ? 1 : 2;
  for (auto [i, c] : llvm::enumerate(configs)) {
    CudaTileVariant v = gemmVariant(k.name + "_tile" + std::to_string(i), c,
                                    static_cast<uint64_t>(upTo[i]));
    v.config = std::to_string(c.blockM) + "x" + std::to_string(c.blockN) + "x" +
               std::to_string(c.blockK) + " s" + std::to_string(c.stages) +
               (c.swapAB ? " swapped" : "") + (g.residual ? " residual" : "") +
               (g.swiglu ? " swiglu" : "") + (g.quant ? " quantized" : "") +
               (g.n1 ? " dual" : "") + (g.fp8 ? " e4m3" : " f32-act");
    auto map = [&](unsigned binding, uint32_t boxRows, bool rows) {
      CudaTileParam m;
      m.kind = CudaTileParam::TensorMap;
      m.binding = binding;
      m.dtype = g.fp8 ? 5 : 2; // f8e4m3 / bf16
      const int64_t wRows = !g.n1 ? g.wRows : binding == 1 ? g.n1 : g.n - g.n1;
      m.dims = {static_cast<uint64_t>(g.k),
                static_cast<uint64_t>(rows ? maxRows : wRows)};
      m.stridesBytes = {static_cast<uint64_t>(eb * g.k)};
      m.box = {static_cast<uint32_t>(c.blockK), boxRows};
      m.swizzleBytes = 128;
      m.rowsDim = rows;
      return m;
    };
    auto binding = [](unsigned b, uint64_t rowBytes) {
      CudaTileParam p;
      p.binding = b;
      p.rowBytes = rowBytes;
      return p;
    };
    const uint32_t weightBox =
        static_cast<uint32_t>(c.swapAB ? (g.swiglu ? 8 : c.blockM)
                                       : (g.swiglu ? c.blockN / 2 : c.blockN));
    const uint32_t actBox =
        static_cast<uint32_t>(c.swapAB ? c.blockN : c.blockM);
    // e4m3: (A map, B map, activation scales, weight scales, out,
    // [residual,] rows, first row), A the weights' when swapped;
    // f32 activations: (weights' map(s), activations, out, [residual,] rows).
    if (g.fp8) { // two outputs: W2's map after both, its scales after W1's
      CudaTileParam w = map(g.weights[0], weightBox, false);
      CudaTileParam a = map(g.activations, actBox, true);
      v.params.push_back(c.swapAB ? w : a);
      v.params.push_back(c.swapAB ? a : w);
      if (g.n1 || g.quant)
        v.params.push_back(map(g.weights[1], weightBox, false));
      v.params.push_back(
          binding(g.scaleA, 4 * static_cast<uint64_t>(g.k / 128)));
      v.params.push_back(binding(g.scaleB, 0));
      if (g.n1 || g.quant)
        v.params.push_back(binding(g.scaleB2, 0));
    } else {
      for (unsigned w : g.weights)
        v.params.push_back(map(w, weightBox, false));
      v.params.push_back(
          binding(g.activations, 4 * static_cast<uint64_t>(g.k)));
    }
    if (g.quant) { // e4m3 values and their 1 x 128 scales
      v.params.push_back(binding(g.result, static_cast<uint64_t>(outCols)));
      v.params.push_back(
          binding(g.result2, 4 * static_cast<uint64_t>(outCols / 128)));
    } else if (g.n1) {
      v.params.push_back(binding(g.result, 4 * static_cast<uint64_t>(g.n1)));
      v.params.push_back(
          binding(g.result2, 4 * static_cast<uint64_t>(g.n - g.n1)));
    } else {
      v.params.push_back(binding(g.result, 4 * static_cast<uint64_t>(outCols)));
    }
    if (g.residual)
      v.params.push_back(
          binding(g.residualBinding, 4 * static_cast<uint64_t>(outCols)));
    CudaTileParam rows;
    rows.kind = CudaTileParam::Rows;
    v.params.push_back(rows);
    if (c.activationRow0) {
      CudaTileParam first;
      first.kind = CudaTileParam::FirstRow;
      v.params.push_back(first);
    }
    ptx += hopper::emitGemmEntryPtx(c, v.name);
    variants.push_back(std::move(v));
  }
  programsPerRow = static_cast<uint64_t>(perRow);
  return variants;
}

// The tile variant of kernel `k` when it is one of the experts' grouped
// GEMMs over the contiguous layout, with f32 activations, bf16 expert
// weights (weight tables; both dimensions multiples of 64), f32 results and
// a layout block of 8, 16, 32, 64 or 128 rows:
//  - kernel.moe_down: act [rows, I] in layout order by w_down [E, H, I];
//  - kernel.moe_up: the tokens' x [T, H] gathered through sorted_token, by
//    w_gate and w_up [E, I, H], SwiGLU'd into [rows, I] (two weight maps,
//    HopperGemm.h's splitGateUp and gatherRows).
// HopperGemm.h's grouped form: decode's layout blocks (8 to 32 rows) are
// the swapped form's token blocks, prefill's (64, 128) the row blocks of
// the plain form; the experts' weights through 3D maps over their tables
// (TensorMapSpec.table), unused blocks skipped. Rows are counted in layout
// blocks (rows_per_unit): the launch always runs its whole grid.
std::vector<CudaTileVariant> moeTileVariants(const KernelRecord &k,
                                             uint64_t &programsPerRow,
                                             uint32_t &rowsPerUnit,
                                             std::string &ptx) {
  auto down = dyn_cast<kernel::MoEDownOp>(k.representative);
  auto up = dyn_cast<kernel::MoEUpOp>(k.representative);
  if (!down && !up)
    return {};
  auto typeOf = [](Value v) { return cast<RankedTensorType>(v.getType()); };
  RankedTensorType act = typeOf(down ? down.getAct() : up.getInput());
  RankedTensorType w = typeOf(down ? down.getWDown() : up.getWGate());
  RankedTensorType out = typeOf(k.representative->getResult(0));
  const int64_t blockM = down ? down.getBlockM() : up.getBlockM();
  if (!act.getElementType().isF32() || !out.getElementType().isF32() ||
      !w.getElementType().isBF16() || w.getRank() != 3 ||
      (up && typeOf(up.getWUp()) != w) ||
      (blockM != 8 && blockM != 16 && blockM != 32 && blockM != 64 &&
       blockM != 128))
    return {};
  // The GEMM: N output columns (up: gate and up rows, 2 I) over K.
  const int64_t experts = w.getDimSize(0), wRows = w.getDimSize(1),
                kDim = w.getDimSize(2);
  if (wRows % 64 != 0 || kDim % 64 != 0)
    return {};
  const int64_t n = up ? 2 * wRows : wRows, outCols = wRows;
  hopper::GemmTileConfig c;
  c.n = n;
  c.k = kDim;
  c.swapAB = blockM <= 32;
  c.blockM = c.swapAB ? 64 : blockM;
  c.blockN = c.swapAB ? blockM : n % 128 == 0 ? 128 : 64;
  c.blockK = 64;
  c.grouped = c.f32Activations = true;
  c.gatherRows = c.splitGateUp = static_cast<bool>(up);
  if (up)
    c.epilogue = hopper::Epilogue::kSwiGLU;
  if (!hopper::fitStages(c))
    return {};
  const int64_t tile = down ? down.getTileD() : up.getTileF();
  const int64_t perUnit = (outCols + tile - 1) / tile;
  CudaTileVariant v =
      gemmVariant(k.name + "_tile0", c,
                  static_cast<uint64_t>(k.maxPrograms / perUnit * blockM));
  v.config = std::to_string(c.blockM) + "x" + std::to_string(c.blockN) +
             "x64 s" + std::to_string(c.stages) + " grouped" +
             (c.swapAB ? " swapped" : "") + (up ? " gathered swiglu" : "") +
             " f32-act";
  // The weights' box: swapped, 64 weight rows (up: 8-row gate and up
  // boxes); else blockN rows (up: blockN / 2 of each).
  const uint32_t box = static_cast<uint32_t>(
      c.swapAB ? (up ? 8 : c.blockM) : (up ? c.blockN / 2 : c.blockN));
  const SmallVector<unsigned, 2> weightBindings =
      up ? SmallVector<unsigned, 2>{3, 4} : SmallVector<unsigned, 2>{3};
  for (unsigned binding : weightBindings)
    v.params.push_back(
        weightTableMap(binding, false, kDim, wRows, experts, box));
  // down: (weights' map, act, block_expert, out, rows); up: (gate and up
  // maps, x (rows of tokens, not of the layout), block_expert,
  // sorted_token, out, rows).
  const unsigned result = k.representative->getNumOperands();
  if (down)
    appendBindingsAndRows(
        v,
        {{0, static_cast<uint64_t>(4 * kDim)}, {2, 0}, {result, 4 * outCols}});
  else
    appendBindingsAndRows(v, {{0, 0}, {2, 0}, {1, 0}, {result, 4 * outCols}});
  ptx += hopper::emitGemmEntryPtx(c, v.name);
  programsPerRow = static_cast<uint64_t>(perUnit);
  rowsPerUnit = static_cast<uint32_t>(blockM);
  return {v};
}

// The tile variant of kernel `k` when it is a kernel.moe_down_fp8 of e4m3
// activations in the contiguous layout (1 x 128 scales) by e4m3 expert
// weights [E, H, I] with 128 x 128 scales [E, H / 128, I / 128] (both
// weight tables; H a multiple of 64, I of 128) and a layout block of 8 to
// 128 rows: HopperGemm.h's grouped e4m3 form, both operands by TMA (the
// activations' map over the launch's layout rows, the weights' 3D over
// their table), the weight scales through their table (scaleTable);
// swapped for decode's 8- to 32-row blocks.
std::vector<CudaTileVariant> moeFP8TileVariants(const KernelRecord &k,
                                                uint64_t &programsPerRow,
                                                uint32_t &rowsPerUnit,
                                                std::string &ptx) {
  auto typeOf = [](Value v) { return cast<RankedTensorType>(v.getType()); };
  auto isE4M3 = [&](Value v) {
    return isa<Float8E4M3FNType>(typeOf(v).getElementType());
  };
  if (auto up = dyn_cast<kernel::MoEUpFP8Op>(k.representative)) {
    // Prefill's 64-row layout blocks: the quantized SwiGLU over e4m3 tokens
    // gathered by the producer's threads, gate and up [E, I, H] through
    // two 3D maps, their scales [E, I / 128, H / 128] through their tables.
    RankedTensorType w = typeOf(up.getWGate()), ws = typeOf(up.getWGateScale());
    if (up.getBlockM() != 64 || up.getAct() != 128 || !isE4M3(up.getInputQ()) ||
        !isE4M3(up.getWGate()) || typeOf(up.getWUp()) != w ||
        typeOf(up.getWUpScale()) != ws || !isE4M3(up.getResult()) ||
        !typeOf(up.getInputScale()).getElementType().isF32() ||
        !ws.getElementType().isF32() ||
        !typeOf(up.getScale()).getElementType().isF32() || w.getRank() != 3 ||
        ws.getRank() != 3)
      return {};
    const int64_t experts = w.getDimSize(0), f = w.getDimSize(1),
                  h = w.getDimSize(2);
    if (f % 128 != 0 || h % 128 != 0 || ws.getDimSize(1) != f / 128 ||
        ws.getDimSize(2) != h / 128)
      return {};
    hopper::GemmTileConfig c = hopper::chooseQuantizedSwiGLUTile(2 * f, h);
    c.grouped = c.scaleTable = c.gatherRows = true;
    if (!hopper::checkGemmTileConfig(c).empty())
      return {};
    const int64_t perUnit = (f + up.getTileF() - 1) / up.getTileF();
    CudaTileVariant v =
        gemmVariant(k.name + "_tile0", c,
                    static_cast<uint64_t>(k.maxPrograms / perUnit * 64));
    v.config = "64x256x128 s" + std::to_string(c.stages) +
               " grouped gathered swiglu quantized e4m3";
    v.params.push_back(weightTableMap(4, true, h, f, experts, 128));
    v.params.push_back(weightTableMap(5, true, h, f, experts, 128));
    // (gate and up maps, x, block_expert, sorted_token, x's scales (by
    // token), the scales' tables, e4m3 out, its scales, rows)
    const unsigned result = up->getNumOperands();
    appendBindingsAndRows(v,
                          {{0, 0},
                           {3, 0},
                           {2, 0},
                           {1, 0},
                           {6, 0},
                           {7, 0},
                           {result, static_cast<uint64_t>(f)},
                           {result + 1, static_cast<uint64_t>(4 * (f / 128))}});
    ptx += hopper::emitGemmEntryPtx(c, v.name);
    programsPerRow = static_cast<uint64_t>(perUnit);
    rowsPerUnit = 64;
    return {v};
  }
  auto down = dyn_cast<kernel::MoEDownFP8Op>(k.representative);
  if (!down)
    return {};
  RankedTensorType w = typeOf(down.getWDown()),
                   ws = typeOf(down.getWDownScale());
  const int64_t blockM = down.getBlockM();
  if (!isE4M3(down.getActQ()) || !isE4M3(down.getWDown()) ||
      !typeOf(down.getActScale()).getElementType().isF32() ||
      !ws.getElementType().isF32() ||
      !typeOf(down.getResult()).getElementType().isF32() || w.getRank() != 3 ||
      ws.getRank() != 3 || down.getAct() != 128 ||
      (blockM != 8 && blockM != 16 && blockM != 32 && blockM != 64 &&
       blockM != 128))
    return {};
  const int64_t experts = w.getDimSize(0), h = w.getDimSize(1),
                i = w.getDimSize(2);
  if (h % 64 != 0 || i % 128 != 0 || ws.getDimSize(0) != experts ||
      ws.getDimSize(1) != (h + 127) / 128 || ws.getDimSize(2) != i / 128)
    return {};
  hopper::GemmTileConfig c;
  c.n = h;
  c.k = i;
  c.fp8 = c.grouped = c.scaleTable = true;
  c.swapAB = blockM <= 32;
  c.blockM = c.swapAB ? 64 : blockM;
  c.blockN = c.swapAB ? blockM : h % 128 == 0 ? 128 : 64;
  c.blockK = 128;
  if (!hopper::fitStages(c))
    return {};
  const int64_t perUnit = (h + down.getTileD() - 1) / down.getTileD();
  const uint64_t rows = static_cast<uint64_t>(k.maxPrograms / perUnit * blockM);
  CudaTileVariant v = gemmVariant(k.name + "_tile0", c, rows);
  v.config = std::to_string(c.blockM) + "x" + std::to_string(c.blockN) +
             "x128 s" + std::to_string(c.stages) + " grouped" +
             (c.swapAB ? " swapped" : "") + " e4m3";
  CudaTileParam weights =
      weightTableMap(4, true, i, h, experts,
                     static_cast<uint32_t>(c.swapAB ? c.blockM : c.blockN));
  CudaTileParam act;
  act.kind = CudaTileParam::TensorMap;
  act.binding = 0;
  act.dtype = 5;
  act.dims = {static_cast<uint64_t>(i), rows};
  act.stridesBytes = {static_cast<uint64_t>(i)};
  act.box = {128, static_cast<uint32_t>(c.swapAB ? c.blockN : c.blockM)};
  act.swizzleBytes = 128;
  act.rowsDim = true;
  // (A map, B map (the weights' first when swapped), block_expert,
  // activation scales, weight scales' table, out, rows)
  v.params.push_back(c.swapAB ? weights : act);
  v.params.push_back(c.swapAB ? act : weights);
  appendBindingsAndRows(
      v, {{3, 0},
          {1, static_cast<uint64_t>(4 * (i / 128))},
          {5, 0},
          {down->getNumOperands(), static_cast<uint64_t>(4 * h)}});
  ptx += hopper::emitGemmEntryPtx(c, v.name);
  programsPerRow = static_cast<uint64_t>(perUnit);
  rowsPerUnit = static_cast<uint32_t>(blockM);
  return {v};
}

// The row-kernel variant of kernel `k` (GpuRowKernels.h) when it is a plain
// kernel.rms_norm (no fused cache write, no strided input) of f32 rows of a
// multiple of 4 by an f32 or bf16 weight: a block of 256 threads per row.
// A row kernel's variant of `k` over `rows` rows: a block of
// gpurow::kRowThreads threads per `what`.
CudaTileVariant rowVariant(const KernelRecord &k, int64_t rows,
                           const std::string &what) {
  CudaTileVariant v;
  v.name = k.name + "_tile0";
  v.maxRows = static_cast<uint64_t>(rows);
  v.threads = static_cast<uint32_t>(gpurow::kRowThreads);
  v.rowsPerTile = 1;
  v.columnTiles = 1;
  v.config = "block of " + std::to_string(gpurow::kRowThreads) +
             " threads per " + what;
  return v;
}

std::vector<CudaTileVariant> rowTileVariants(const KernelRecord &k,
                                             uint64_t &programsPerRow,
                                             std::string &ptx) {
  if (auto comb = dyn_cast<kernel::MoECombineOp>(k.representative)) {
    // kernel.moe_combine of f32 expert rows, weights, addends and result,
    // i32 slot rows: a block per token (GpuRowKernels.h).
    auto typeOf = [](Value v) { return cast<RankedTensorType>(v.getType()); };
    for (Value v : comb->getOperands())
      if (v != comb.getSlotRow() && !typeOf(v).getElementType().isF32())
        return {};
    if (!typeOf(comb.getResult()).getElementType().isF32() ||
        !typeOf(comb.getSlotRow()).getElementType().isInteger(32))
      return {};
    gpurow::MoECombineConfig c;
    c.cols = typeOf(comb.getResult()).getShape().back();
    c.topK = typeOf(comb.getWeights()).getShape().back();
    c.slots = typeOf(comb.getSlotRow()).getShape().back();
    c.addends = static_cast<int64_t>(comb.getAddends().size());
    if (!gpurow::checkMoECombineConfig(c).empty())
      return {};
    const int64_t perRow = (c.cols + comb.getTileD() - 1) / comb.getTileD();
    CudaTileVariant v = rowVariant(k, k.maxPrograms / perRow, "token");
    // (rows (indexed by slot_row, not advanced), slot_row, weights,
    // addends, out, tokens)
    const uint64_t rowBytes = 4 * static_cast<uint64_t>(c.cols);
    SmallVector<std::pair<unsigned, uint64_t>> bindings{
        {0, 0},
        {1, 4 * static_cast<uint64_t>(c.slots)},
        {2, 4 * static_cast<uint64_t>(c.topK)}};
    for (unsigned a = 0; a < c.addends; ++a)
      bindings.push_back({3 + a, rowBytes});
    bindings.push_back({comb->getNumOperands(), rowBytes});
    appendBindingsAndRows(v, bindings);
    ptx += gpurow::emitMoECombineRowPtx(c, v.name);
    programsPerRow = static_cast<uint64_t>(perRow);
    return {v};
  }
  if (auto q = dyn_cast<kernel::QuantizeOp>(k.representative)) {
    // f32 rows to e4m3 per 1 x 128, no scale flags.
    auto in = cast<RankedTensorType>(q.getInput().getType());
    const int64_t cols = in.getShape().back();
    if (!in.getElementType().isF32() || q.getAct() != 128 ||
        q.hasScaleFlags() ||
        !isa<Float8E4M3FNType>(
            cast<RankedTensorType>(q.getResult().getType()).getElementType()) ||
        !gpurow::checkQuantizeRowConfig(cols).empty())
      return {};
    CudaTileVariant v = rowVariant(k, k.maxPrograms, "row, e4m3 per 1 x 128");
    const uint64_t c = static_cast<uint64_t>(cols);
    appendBindingsAndRows(v, {{0, 4 * c}, {1, c}, {2, c / 32}});
    ptx += gpurow::emitQuantizeRowPtx(cols, v.name);
    programsPerRow = 1;
    return {v};
  }
  // A plain kernel.rms_norm (no fused cache write, no strided input) or a
  // kernel.rms_norm_quant (act 128: also e4m3 with 1 x 128 scales).
  auto norm = dyn_cast<kernel::RMSNormOp>(k.representative);
  auto quant = dyn_cast<kernel::RMSNormQuantOp>(k.representative);
  if (norm && (norm.getCache() || norm.getInputStride() != 0 ||
               norm.getInputOffset() != 0))
    return {};
  if ((!norm && !quant) || (quant && quant.getAct() != 128))
    return {};
  Operation *op = k.representative;
  auto typeOf = [](Value v) { return cast<RankedTensorType>(v.getType()); };
  RankedTensorType in = typeOf(op->getOperand(0)),
                   w = typeOf(op->getOperand(1));
  if (!in.getElementType().isF32() ||
      !typeOf(op->getResult(0)).getElementType().isF32() ||
      !(w.getElementType().isF32() || w.getElementType().isBF16()) ||
      w.getRank() != 1 ||
      (quant &&
       (!isa<Float8E4M3FNType>(typeOf(quant.getQuantized()).getElementType()) ||
        !typeOf(quant.getScale()).getElementType().isF32())))
    return {};
  gpurow::RmsNormConfig c;
  c.cols = in.getShape().back();
  c.eps = (norm ? norm.getEpsilon() : quant.getEpsilon()).convertToFloat();
  c.bf16Weight = w.getElementType().isBF16();
  c.quantize = static_cast<bool>(quant);
  if (!gpurow::checkRmsNormConfig(c).empty() || w.getDimSize(0) != c.cols)
    return {};
  CudaTileVariant v =
      rowVariant(k, k.maxPrograms, quant ? "row, e4m3 per 1 x 128" : "row");
  const unsigned result = op->getNumOperands();
  const uint64_t rowBytes = 4 * static_cast<uint64_t>(c.cols);
  if (quant) // (x, w, y, q, scales, rows)
    appendBindingsAndRows(v, {{0, rowBytes},
                              {1, 0},
                              {result, rowBytes},
                              {result + 1, rowBytes / 4},
                              {result + 2, rowBytes / 128}});
  else
    appendBindingsAndRows(v, {{0, rowBytes}, {1, 0}, {result, rowBytes}});
  ptx += gpurow::emitRmsNormRowPtx(c, v.name);
  programsPerRow = 1;
  return {v};
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
  auto gpuModule = gpu::GPUModuleOp::create(b, unknown, ("kiln_" + chip).str(),
                                            b.getArrayAttr({target}));
  b.setInsertionPointToStart(gpuModule.getBody());
  auto ptr = LLVM::LLVMPointerType::get(&ctx);
  auto i64 = b.getI64Type();
  for (const KernelRecord &k : table.kernels) {
    auto op = cast<kernel::KernelOpInterface>(k.representative);
    Location loc = NameLoc::get(b.getStringAttr(k.name), op->getLoc());
    SmallVector<Type> params(k.numBuffers, ptr);
    params.append(k.numScalars + 2, i64); // scalars, begin, end
    auto fn =
        gpu::GPUFuncOp::create(b, loc, k.name, b.getFunctionType(params, {}));
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
    Value inGrid =
        arith::CmpIOp::create(fb, loc, arith::CmpIPredicate::slt, pid, end);
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
    e.blockX =
        static_cast<unsigned>(kernels::chooseGpuBlockSize(k.maxPrograms));
    if (chip == "sm_90a") {
      e.tiles = gemmTileVariants(k, e.programsPerRow, tilePtx);
      if (e.tiles.empty())
        e.tiles = rowTileVariants(k, e.programsPerRow, tilePtx);
      if (e.tiles.empty())
        e.tiles = moeTileVariants(k, e.programsPerRow, e.rowsPerUnit, tilePtx);
      if (e.tiles.empty())
        e.tiles =
            moeFP8TileVariants(k, e.programsPerRow, e.rowsPerUnit, tilePtx);
    }
    entries.push_back(e);
  }
  return module;
}

// Parses ptxas -v output into per-entry resources.
void parsePtxasReport(StringRef log, std::vector<CudaEntry> &entries) {
  llvm::Regex fnRe("Compiling entry function '([A-Za-z0-9_$.]+)'");
  llvm::Regex spillRe(
      "([0-9]+) bytes spill stores, ([0-9]+) bytes spill loads");
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
  if (failed(runCodegenPipeline(*module, "gpu-module-to-binary{format=isa}")))
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
  SmallVector<StringRef> args{ptxas,   archFlag, "-O3",    "-v",
                              ptxPath, "-o",     cubinPath};
  std::optional<StringRef> redirects[] = {std::nullopt, logPath.str(),
                                          logPath.str()};
  std::string execErr;
  int rc = llvm::sys::ExecuteAndWait(ptxas, args, std::nullopt, redirects, 0, 0,
                                     &execErr);
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
  for (const CudaEntry &e : exe.entries)
    for (const CudaTileVariant &v : e.tiles)
      if (v.requiredRegisters && v.resources.hasResources &&
          v.resources.registers != v.requiredRegisters) {
        module->emitError()
            << "tile kernel '" << v.name << "' has " << v.resources.registers
            << " registers, not " << v.requiredRegisters
            << ": its setmaxnreg would never complete";
        return failure();
      }
  if (failed(dumper.dumpText(("ptxas-" + chip + ".txt").str(), exe.ptxasLog)))
    return failure();
  return exe;
}

} // namespace kiln
