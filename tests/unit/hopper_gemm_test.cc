// The sm_90a TMA + wgmma GEMM emitter (compiler/lib/Codegen/CUDA/
// HopperGemm.cpp): every configuration the tile heuristic may pick assembles
// with ptxas for sm_90a without spills or serialized warpgroup MMAs, and
// its SASS holds the tensor-core and TMA instructions the design relies on.
// No GPU runs it here; tests/device/run.sh is where its numerics belong.
#include "kiln/Compiler/GpuRowKernels.h"
#include "kiln/Compiler/HopperGemm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

namespace kiln::hopper {
namespace {

struct Output {
  int status;
  std::string text;
};

Output runCommand(const std::string &cmd) {
  Output out{-1, ""};
  FILE *p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p)
    return out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0)
    out.text.append(buf.data(), n);
  out.status = pclose(p);
  return out;
}

std::string dirOf(const std::string &path) {
  return path.substr(0, path.find_last_of('/'));
}

class HopperGemmAssembly : public ::testing::TestWithParam<GemmTileConfig> {};

TEST(HopperGemm, ConfigChecksNameWhatIsWrong) {
  GemmTileConfig c;
  c.n = 7168;
  c.k = 2048;
  EXPECT_EQ(checkGemmTileConfig(c), "");
  GemmTileConfig bad = c;
  bad.n = 7100;
  EXPECT_EQ(checkGemmTileConfig(bad),
            "N 7100 is not a positive multiple of blockN 128");
  bad = c;
  bad.blockM = 256;
  EXPECT_NE(checkGemmTileConfig(bad).find("blockM 256"), std::string::npos);
  bad = c;
  bad.blockN = 132;
  EXPECT_NE(checkGemmTileConfig(bad).find("blockN 132"), std::string::npos);
  bad = c;
  bad.k = 100;
  EXPECT_NE(checkGemmTileConfig(bad).find("K 100"), std::string::npos);
  bad = c;
  bad.fp8 = true; // e4m3 k-blocks are 128 wide
  EXPECT_NE(checkGemmTileConfig(bad).find("blockK 64 is not 128"),
            std::string::npos);
  bad.blockK = 128;
  bad.blockN = 96;
  EXPECT_NE(checkGemmTileConfig(bad).find("does not divide 128"),
            std::string::npos);
  bad = c;
  bad.swapAB = true;
  bad.bf16Out = true;
  EXPECT_NE(checkGemmTileConfig(bad).find("stores f32 only"), std::string::npos);
  bad = c;
  bad.epilogue = Epilogue::kSwiGLU;
  bad.blockN = 56;
  bad.n = 7168;
  EXPECT_NE(checkGemmTileConfig(bad).find("multiple of 16"), std::string::npos);
  bad = c;
  bad.dualN1 = 100; // not a multiple of blockN 128
  EXPECT_NE(checkGemmTileConfig(bad).find("two outputs split N 7168 at 100"), std::string::npos);
  bad = c;
  bad.splitGateUp = true; // needs the SwiGLU epilogue
  EXPECT_NE(checkGemmTileConfig(bad).find("split gate/up"), std::string::npos);
  bad = c;
  bad.gatherRows = true; // needs the grouped f32-activation form
  EXPECT_NE(checkGemmTileConfig(bad).find("gathered rows"), std::string::npos);
  bad = c;
  bad.swapAB = true; // swapped SwiGLU only over split gate/up weights
  bad.blockM = 64;
  bad.blockN = 8;
  bad.epilogue = Epilogue::kSwiGLU;
  EXPECT_NE(checkGemmTileConfig(bad).find("swapped SwiGLU"), std::string::npos);
  bad.splitGateUp = true;
  EXPECT_EQ(checkGemmTileConfig(bad), "");
  bad.quantizeSwiGLU = true; // e4m3, not swapped
  EXPECT_NE(checkGemmTileConfig(bad).find("quantizing SwiGLU"), std::string::npos);
  bad = c;
  bad.blockN = 256;
  bad.stages = 5; // 5 x 48 KiB + 1 KiB > 227 KiB
  EXPECT_NE(checkGemmTileConfig(bad).find("exceed"), std::string::npos);
  EXPECT_EQ(gemmThreads(c), 384);
  EXPECT_EQ(gemmDynamicSharedBytes(c), 4 * 32768 + 1024);
}

TEST(HopperGemm, TileHeuristicFillsTheSMs) {
  // Prefill: full 128 x 128 tiles, as many stages as fit (7 x 32 KiB bf16).
  GemmTileConfig c = chooseGemmTile(4096, 7168, 16384, false, false, 132);
  EXPECT_EQ(c.blockM, 128);
  EXPECT_EQ(c.blockN, 128);
  EXPECT_EQ(c.blockK, 64);
  EXPECT_EQ(c.stages, 7);
  EXPECT_EQ(checkGemmTileConfig(c), "");
  // 64 rows: one math warpgroup; N = 2112 is not a multiple of 128, and 64
  // columns give 33 tiles: narrower tiles until 132 SMs have one (16: 132).
  c = chooseGemmTile(64, 2112, 7168, true, false, 132);
  EXPECT_EQ(c.blockM, 64);
  EXPECT_EQ(c.blockN, 16);
  EXPECT_EQ(c.blockK, 128);
  EXPECT_EQ(checkGemmTileConfig(c), "");
  // A shape too small to fill the GPU keeps the widest tile that divides N.
  c = chooseGemmTile(48, 192, 512, false, false, 132);
  EXPECT_EQ(c.blockN, 64);
  EXPECT_EQ(c.stages, 8);
  EXPECT_EQ(checkGemmTileConfig(c), "");
  // Decode: swapped, 64 weight rows per tile, the narrowest N for the tokens.
  c = chooseGemmTile(1, 7168, 2048, true, false, 132);
  EXPECT_TRUE(c.swapAB);
  EXPECT_EQ(c.blockM, 64);
  EXPECT_EQ(c.blockN, 8);
  EXPECT_EQ(checkGemmTileConfig(c), "");
  EXPECT_EQ(chooseGemmTile(12, 7168, 2048, false, false, 132).blockN, 16);
  EXPECT_FALSE(chooseGemmTile(12, 7168, 2048, false, true, 132).swapAB);
  // N not a multiple of 8: no tile.
  c = chooseGemmTile(128, 100, 512, false, false, 132);
  EXPECT_EQ(c.blockN, 0);
  EXPECT_NE(checkGemmTileConfig(c), "");
}

TEST_P(HopperGemmAssembly, AssemblesToHgmmaAndTmaWithoutSpills) {
  const GemmTileConfig c = GetParam();
  ASSERT_EQ(checkGemmTileConfig(c), "");
  if (std::string(KILN_PTXAS_EXE).empty())
    GTEST_SKIP() << "ptxas not found at configure time";
  std::string name = std::string(c.fp8 ? "kiln_qgemm_" : "kiln_hgemm_") +
                     (c.f32Activations ? "f32act_" : "") + (c.splitGateUp ? "split_" : "") + (c.activationRow0 ? "row0_" : "") +
                     (c.dualN1 ? "dual" + std::to_string(c.dualN1) + "_" : "") +
                     (c.grouped ? "grouped_" : "") + (c.swapAB ? "swapped_" : "") +
                     "e" + std::to_string(int(c.epilogue)) + (c.bf16Out ? "bf16_" : "f32_") + std::to_string(c.n) + "x" +
                     std::to_string(c.k) + "_" + std::to_string(c.blockM) +
                     "x" + std::to_string(c.blockN) + "s" +
                     std::to_string(c.stages);
  std::string dir = ::testing::TempDir();
  std::string ptx = dir + "/" + name + ".ptx", cubin = dir + "/" + name + ".cubin";
  {
    std::ofstream f(ptx);
    f << ptxModuleHeader() << emitGemmEntryPtx(c, name);
  }
  Output as = runCommand(std::string(KILN_PTXAS_EXE) +
                         " -arch=sm_90a -O3 -v --warn-on-spills " + ptx +
                         " -o " + cubin);
  ASSERT_EQ(as.status, 0) << as.text;
  EXPECT_NE(as.text.find("0 bytes spill stores, 0 bytes spill loads"),
            std::string::npos)
      << as.text;
  // ptxas' C7515-C7520 family: warpgroup MMAs serialized (a wait inserted
  // before each), which costs most of the tensor-core rate.
  EXPECT_FALSE(std::regex_search(as.text, std::regex("C75(1[5-9]|20)")))
      << as.text;
  EXPECT_EQ(as.text.find("warning"), std::string::npos) << as.text;

  if (std::string(KILN_CUOBJDUMP_EXE).empty())
    GTEST_SKIP() << "cuobjdump not found (scripts/setup.sh installs it)";
  // cuobjdump finds nvdisasm beside it (the pip wheels share a bin folder).
  Output sass = runCommand("PATH=" + dirOf(KILN_CUOBJDUMP_EXE) + ":$PATH " +
                           KILN_CUOBJDUMP_EXE + " -sass " + cubin);
  ASSERT_EQ(sass.status, 0) << sass.text;
  auto count = [&](const std::string &what) {
    size_t n = 0;
    for (size_t at = sass.text.find(what); at != std::string::npos;
         at = sass.text.find(what, at + 1))
      ++n;
    return n;
  };
  // (the quantizing SwiGLU's warpgroups each take half of blockN)
  const int64_t wgN = c.quantizeSwiGLU ? c.blockN / 2 : c.blockN;
  std::string mma = c.fp8 ? "QGMMA.64x" + std::to_string(wgN) +
                                "x32.F32.E4M3.E4M3"
                          : "HGMMA.64x" + std::to_string(wgN) +
                                "x16.F32.BF16";
  // One warpgroup MMA per 32 bytes of the k-block (16 bf16, 32 e4m3), each
  // reading both operands from shared memory through descriptors; one 2D
  // TMA load per operand.
  EXPECT_EQ(count(mma), static_cast<size_t>(c.blockK * (c.fp8 ? 1 : 2) / 32))
      << sass.text;
  if (c.epilogue == Epilogue::kSwiGLU) { // silu's exponential and reciprocal
    EXPECT_GE(count("MUFU.EX2"), static_cast<size_t>(c.blockN / 8));
    EXPECT_GE(count("MUFU.RCP"), static_cast<size_t>(c.blockN / 8));
  }
  if (c.bf16Out) { // pairs packed to bf16x2
    EXPECT_GE(count("F2FP.BF16"), static_cast<size_t>(c.blockN / 8));
  }
  if (c.fp8) { // the per-k-block promotion: one FFMA per accumulator
    EXPECT_GE(count("FFMA"), static_cast<size_t>(wgN / 2));
  }
  if (c.quantizeSwiGLU) { // the exchange's named barriers, the rows' amax
    // shuffles and the e4m3 pairs
    EXPECT_GE(count("BAR.ARV"), 2u) << sass.text;
    EXPECT_GE(count("SHFL.BFLY"), 4u) << sass.text;
    EXPECT_GE(count("F2FP.SATFINITE.E4M3"), static_cast<size_t>(wgN / 4)) << sass.text;
    EXPECT_GE(count("STS"), static_cast<size_t>(wgN / 8)) << sass.text;
  }
  // Grouped: the experts' weights through a 3D map [E, N, K]. f32
  // activations: the weights' map only, the activations loaded 16 bytes at
  // a time, packed to bf16x2 and stored 16 bytes at a time.
  // Split gate/up: two maps for the weights, one box each per stage, or
  // swapped four 8-row boxes each.
  // (f32 activations: the producer's k-loop unrolled by two, prefetching)
  const size_t weightLoads =
      (!c.splitGateUp ? 1u : c.swapAB ? 8u : 2u) * (c.f32Activations ? 2u : 1u);
  // (gathered e4m3 rows: the producer's threads copy them, no TMA)
  const bool threadLoaded = c.f32Activations || (c.fp8 && c.gatherRows);
  EXPECT_EQ(count("UTMALDG.2D"),
            (threadLoaded ? 0u : 1u) + (c.grouped ? 0u : weightLoads))
      << sass.text;
  if (c.fp8 && c.gatherRows) {
    const size_t chunks = c.blockM * 8 / 128;
    EXPECT_GE(count("LDG.E.128"), chunks) << sass.text;
    EXPECT_GE(count("STS.128"), chunks) << sass.text;
    EXPECT_GE(count("FENCE.VIEW.ASYNC.S"), 1u) << sass.text;
  }
  if (c.f32Activations) {
    const size_t chunks = (c.swapAB ? c.blockN : c.blockM) * 8 / 128;
    EXPECT_GE(count("F2FP.BF16"), 4 * std::max<size_t>(chunks, 1)) << sass.text;
    EXPECT_GE(count("STS.128"), std::max<size_t>(chunks, 1)) << sass.text;
    EXPECT_GE(count("LDG.E.128"), 2 * std::max<size_t>(chunks, 1)) << sass.text;
    EXPECT_GE(count("FENCE.VIEW.ASYNC.S"), 1u) << sass.text;
  }
  EXPECT_EQ(count("UTMALDG.3D"), c.grouped ? weightLoads : 0u) << sass.text;
  // The producer gives registers to the math warpgroups where the launch's
  // share (168 of 384 threads) is short.
  size_t rebalance = rebalancesRegisters(c) ? 1 : 0;
  EXPECT_EQ(count("USETMAXREG.DEALLOC"), rebalance);
  EXPECT_EQ(count("USETMAXREG.TRY_ALLOC"), rebalance);
  EXPECT_GE(count("SYNCS.PHASECHK.TRANS64.TRYWAIT"), 2u); // full and empty
}

// The cooperative RMSNorm row kernel (GpuRowKernels.h): assembles without
// spills for f32 and bf16 weights at widths from one pass of the block to
// DeepSeek-V3's 7168 and a width that ends inside a pass, with 16-byte
// loads and stores, the warp's butterfly reduction and the block barriers.
// A row kernel's module assembled for sm_90a (no spills, no warnings) and
// its SASS (empty when cuobjdump is missing).
std::string assembleRowKernel(const std::string &name, const std::string &entry) {
  std::string dir = ::testing::TempDir();
  std::string ptx = dir + "/" + name + ".ptx", cubin = dir + "/" + name + ".cubin";
  {
    std::ofstream f(ptx);
    f << ptxModuleHeader() << entry;
  }
  Output as = runCommand(std::string(KILN_PTXAS_EXE) + " -arch=sm_90a -O3 -v --warn-on-spills " + ptx +
                         " -o " + cubin);
  EXPECT_EQ(as.status, 0) << as.text;
  EXPECT_NE(as.text.find("0 bytes spill stores, 0 bytes spill loads"), std::string::npos) << as.text;
  EXPECT_EQ(as.text.find("warning"), std::string::npos) << as.text;
  if (as.status != 0 || std::string(KILN_CUOBJDUMP_EXE).empty())
    return "";
  Output sass = runCommand("PATH=" + dirOf(KILN_CUOBJDUMP_EXE) + ":$PATH " + KILN_CUOBJDUMP_EXE + " -sass " + cubin);
  EXPECT_EQ(sass.status, 0) << sass.text;
  return sass.text;
}

size_t countIn(const std::string &text, const std::string &what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

TEST(GpuRowKernels, RmsNormAssemblesToCooperativeSass) {
  EXPECT_NE(gpurow::checkRmsNormConfig({100 + 2, 1e-6f, false}), "");
  if (std::string(KILN_PTXAS_EXE).empty())
    GTEST_SKIP() << "ptxas not found at configure time";
  for (int64_t cols : {64, 1028, 7168})
    for (bool bf16 : {false, true}) {
      gpurow::RmsNormConfig c{cols, 1e-6f, bf16};
      ASSERT_EQ(gpurow::checkRmsNormConfig(c), "");
      std::string name = "kiln_rmsnorm_" + std::to_string(cols) + (bf16 ? "_bf16" : "_f32");
      std::string sass = assembleRowKernel(name, gpurow::emitRmsNormRowPtx(c, name));
      if (sass.empty())
        continue;
      EXPECT_GE(countIn(sass, "SHFL.BFLY"), 5u) << sass;
      EXPECT_GE(countIn(sass, "LDG.E.128"), bf16 ? 2u : 3u) << sass;
      EXPECT_GE(countIn(sass, "STG.E.128"), 1u) << sass;
      EXPECT_GE(countIn(sass, "BAR.SYNC"), 2u) << sass;
    }
  // rms_norm_quant: also e4m3 per 1 x 128 (a warp's pass is one block: five
  // more shuffles for its amax, two e4m3 pair conversions per chunk).
  EXPECT_NE(gpurow::checkRmsNormConfig({1028, 1e-6f, false, true}), "");
  for (int64_t cols : {128, 7168}) {
    gpurow::RmsNormConfig c{cols, 1e-6f, cols == 128, true};
    ASSERT_EQ(gpurow::checkRmsNormConfig(c), "");
    std::string name = "kiln_rmsnorm_quant_" + std::to_string(cols);
    std::string sass = assembleRowKernel(name, gpurow::emitRmsNormRowPtx(c, name));
    if (sass.empty())
      continue;
    EXPECT_GE(countIn(sass, "SHFL.BFLY"), 10u) << sass;
    EXPECT_GE(countIn(sass, "F2FP.SATFINITE.E4M3"), 2u) << sass;
    EXPECT_GE(countIn(sass, "STG.E.128"), 1u) << sass;
  }
  // kernel.quantize: the same quantization without the norm.
  EXPECT_NE(gpurow::checkQuantizeRowConfig(112), "");
  ASSERT_EQ(gpurow::checkQuantizeRowConfig(7168), "");
  std::string sass = assembleRowKernel("kiln_quantize_7168", gpurow::emitQuantizeRowPtx(7168, "kiln_quantize_7168"));
  if (!sass.empty()) {
    EXPECT_GE(countIn(sass, "SHFL.BFLY"), 5u) << sass;
    EXPECT_GE(countIn(sass, "F2FP.SATFINITE.E4M3"), 2u) << sass;
    EXPECT_GE(countIn(sass, "LDG.E.128"), 1u) << sass;
  }
}

// The MoE combine's row kernel: DeepSeek-V3's 8 routed slots and a shared
// one with the residual, and a plain top-2: a 16-byte load per slot row and
// addend, fused multiply-adds for the weighted slots, a 16-byte store.
TEST(GpuRowKernels, MoECombineAssemblesToCooperativeSass) {
  EXPECT_NE(gpurow::checkMoECombineConfig({7168, 8, 20, 1}), "");
  EXPECT_NE(gpurow::checkMoECombineConfig({7170, 8, 9, 1}), "");
  if (std::string(KILN_PTXAS_EXE).empty())
    GTEST_SKIP() << "ptxas not found at configure time";
  for (gpurow::MoECombineConfig c : {gpurow::MoECombineConfig{7168, 8, 9, 1}, gpurow::MoECombineConfig{64, 2, 2, 0}}) {
    ASSERT_EQ(gpurow::checkMoECombineConfig(c), "");
    std::string name = "kiln_moe_combine_" + std::to_string(c.cols) + "_" + std::to_string(c.slots);
    std::string sass = assembleRowKernel(name, gpurow::emitMoECombineRowPtx(c, name));
    if (sass.empty())
      continue;
    EXPECT_GE(countIn(sass, "LDG.E.128"), static_cast<size_t>(c.slots + c.addends)) << sass;
    EXPECT_GE(countIn(sass, "FFMA"), static_cast<size_t>(4 * c.topK)) << sass;
    EXPECT_GE(countIn(sass, "STG.E.128"), 1u) << sass;
  }
}

GemmTileConfig config(int64_t n, int64_t k, int64_t bm, int64_t bn,
                      int64_t stages, bool fp8 = false,
                      bool grouped = false, bool swapAB = false) {
  GemmTileConfig c;
  c.fp8 = fp8;
  c.grouped = grouped;
  c.swapAB = swapAB;
  c.blockK = fp8 ? 128 : 64;
  c.n = n;
  c.k = k;
  c.blockM = bm;
  c.blockN = bn;
  c.stages = stages;
  return c;
}

GemmTileConfig f32Activations(GemmTileConfig c) {
  c.f32Activations = true;
  return c;
}

GemmTileConfig splitGateUp(GemmTileConfig c) {
  c.epilogue = Epilogue::kSwiGLU;
  c.splitGateUp = true;
  return c;
}

GemmTileConfig quantizeSwiGLU(GemmTileConfig c) {
  c.epilogue = Epilogue::kSwiGLU;
  c.splitGateUp = c.quantizeSwiGLU = true;
  return c;
}

GemmTileConfig scaleTable(GemmTileConfig c) {
  c.scaleTable = true;
  return c;
}

GemmTileConfig gatherRows(GemmTileConfig c) {
  c.gatherRows = true;
  return c;
}

GemmTileConfig dual(GemmTileConfig c, int64_t n1) {
  c.dualN1 = n1;
  return c;
}

GemmTileConfig withRow0(GemmTileConfig c) {
  c.activationRow0 = true;
  return c;
}

GemmTileConfig withEpilogue(GemmTileConfig c, Epilogue e, bool bf16Out) {
  c.epilogue = e;
  c.bf16Out = bf16Out;
  return c;
}

// DeepSeek-V3's projection shapes at the tiles DeepGEMM picks for them, the
// widest N (256, 128 accumulators per thread), one math warpgroup, an
// unaligned N (112) and the smallest tile; bf16, then e4m3 (a chain and a
// promoted total per thread: 128 registers of accumulators at N = 128);
// grouped forms last.
INSTANTIATE_TEST_SUITE_P(
    Shapes, HopperGemmAssembly,
    ::testing::Values(config(7168, 2048, 128, 128, 4),
                      config(7168, 2048, 128, 256, 3),
                      config(2048, 7168, 64, 128, 6),
                      config(4032, 512, 128, 112, 5),
                      config(1536, 7168, 128, 96, 6),
                      config(576, 7168, 128, 64, 8),
                      config(16, 64, 64, 8, 2),
                      config(7168, 2048, 128, 128, 4, true),
                      config(2048, 7168, 64, 128, 6, true),
                      config(576, 7168, 128, 64, 8, true),
                      config(16, 128, 64, 16, 2, true),
                      // The experts' grouped GEMMs (DeepSeek-V3's gate+up and
                      // down), bf16 and e4m3.
                      config(4096, 7168, 128, 128, 4, false, true),
                      config(7168, 2048, 128, 128, 4, true, true),
                      config(4096, 7168, 64, 128, 6, true, true),
                      // Decode's swapped form: 64 / 128 weight rows x 8-64
                      // tokens.
                      config(7168, 2048, 64, 8, 8, false, false, true),
                      config(7168, 2048, 128, 64, 6, false, false, true),
                      config(7168, 2048, 64, 16, 8, true, false, true),
                      config(2112, 7168, 64, 32, 8, true, false, true),
                      // The experts' decode form: grouped and swapped.
                      config(4096, 7168, 64, 8, 8, false, true, true),
                      config(7168, 2048, 64, 8, 8, true, true, true),
                      // Epilogues: the residual add, SwiGLU over interleaved
                      // gate/up rows, bf16 stores.
                      withEpilogue(config(7168, 2048, 128, 128, 4), Epilogue::kResidual, false),
                      withEpilogue(config(7168, 2048, 128, 128, 4, true), Epilogue::kResidual, true),
                      withEpilogue(config(4096, 7168, 128, 128, 4), Epilogue::kSwiGLU, true),
                      withEpilogue(config(4096, 7168, 64, 64, 6, true), Epilogue::kSwiGLU, false),
                      withEpilogue(config(2112, 7168, 64, 64, 6, true), Epilogue::kStore, true),
                      // Plans' form while GPU activations are f32: the
                      // producer converts them (prefill tiles, one math
                      // warpgroup, the residual add, decode's swapped
                      // form at 8 and 32 tokens).
                      f32Activations(config(7168, 2048, 128, 128, 4)),
                      f32Activations(config(2048, 7168, 64, 128, 6)),
                      f32Activations(withEpilogue(config(7168, 2048, 128, 64, 6),
                                                  Epilogue::kResidual, false)),
                      f32Activations(config(7168, 2048, 64, 8, 8, false, false, true)),
                      f32Activations(config(2112, 7168, 64, 32, 8, false, false, true)),
                      // SwiGLU over separate gate and up weights (two maps).
                      splitGateUp(config(4096, 7168, 128, 128, 4)),
                      f32Activations(splitGateUp(config(36864, 7168, 128, 128, 4))),
                      f32Activations(splitGateUp(config(4096, 7168, 64, 32, 8))),
                      // Plans' FP8 form: the activations' map offset by the
                      // run's first row (prefill, one warpgroup, decode).
                      withRow0(config(7168, 2048, 128, 128, 4, true)),
                      withRow0(withEpilogue(config(2048, 7168, 64, 128, 6, true),
                                            Epilogue::kResidual, false)),
                      withRow0(config(7168, 2048, 64, 8, 8, true, false, true)),
                      // Two outputs (gemm_dual: DeepSeek-V3's q_a 1536 and
                      // kv_a 576 of one input), TMA and f32 activations,
                      // prefill and decode's swapped form.
                      dual(config(2112, 7168, 128, 64, 6), 1536),
                      f32Activations(dual(config(2112, 7168, 128, 64, 6), 1536)),
                      f32Activations(dual(config(2112, 7168, 64, 8, 8, false, false, true), 1536)),
                      // FP8's q_a and kv_a: per-weight scales, row0.
                      withRow0(dual(config(2112, 7168, 128, 64, 6, true), 1536)),
                      withRow0(dual(config(2112, 7168, 64, 16, 8, true, false, true), 1536)),
                      // Plans' experts' down projection: grouped, swapped,
                      // f32 activations in layout order.
                      f32Activations(config(7168, 2048, 64, 8, 8, false, true, true)),
                      f32Activations(config(7168, 2048, 64, 128, 6, false, true)),
                      // Decode's SwiGLU swapped (four 8-row gate and up
                      // boxes per weight block): TMA activations, and
                      // DeepSeek-V3's dense gate+up over f32 ones.
                      splitGateUp(config(4096, 7168, 64, 16, 8, false, false, true)),
                      f32Activations(splitGateUp(config(36864, 7168, 64, 8, 8, false, false, true))),
                      // Plans' experts' up projection (moe_up): the tokens
                      // gathered through the layout, the experts' gate and
                      // up tables (two 3D maps), prefill and decode.
                      gatherRows(f32Activations(splitGateUp(config(4096, 7168, 128, 128, 4, false, true)))),
                      gatherRows(f32Activations(splitGateUp(config(4096, 7168, 64, 128, 6, false, true)))),
                      gatherRows(f32Activations(splitGateUp(config(4096, 7168, 64, 8, 8, false, true, true)))),
                      gatherRows(f32Activations(splitGateUp(config(4096, 7168, 64, 32, 8, false, true, true)))),
                      // FP8 SwiGLU with its output quantized per 1 x 128
                      // (gemm_swiglu_fp8: DeepSeek-V3's dense MLP), its
                      // warpgroups split over gate and up.
                      withRow0(quantizeSwiGLU(config(36864, 7168, 64, 256, 4, true))),
                      quantizeSwiGLU(config(512, 256, 64, 256, 2, true)),
                      // Plans' FP8 experts' down projection (moe_down_fp8):
                      // the weight scales through the plan's table.
                      scaleTable(config(7168, 2048, 128, 128, 4, true, true)),
                      scaleTable(config(7168, 2048, 64, 8, 8, true, true, true)),
                      // Plans' FP8 experts' up projection (moe_up_fp8,
                      // prefill): e4m3 tokens gathered by the producer's
                      // threads, gate and up tables, quantized SwiGLU.
                      gatherRows(scaleTable(quantizeSwiGLU(config(4096, 7168, 64, 256, 4, true, true)))),
                      gatherRows(scaleTable(quantizeSwiGLU(config(512, 256, 64, 256, 2, true, true))))));

} // namespace
} // namespace kiln::hopper
