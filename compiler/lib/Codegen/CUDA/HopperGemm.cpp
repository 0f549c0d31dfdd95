//===- HopperGemm.cpp - TMA + wgmma GEMM kernels for sm_90a ---------------===//
//
// PTX text for the persistent warp-specialized GEMM of HopperGemm.h. The
// shared-memory descriptors and the accumulator fragment come from
// HopperLayout.h, whose unit tests check them against the PTX ISA.
//
// Per CTA: warpgroup 0 produces (one thread issues the TMA loads of a
// k-block's A and B boxes into stage s, after waiting for stage s's empty
// barrier), warpgroups 1.. consume (wait for the full barrier, a wgmma chain
// over the k-block, wait for it, release the stage). Stage s of iteration i
// (k-blocks counted over all of a CTA's tiles) is i % stages with phase
// parity (i / stages) & 1; the producer waits the opposite parity, which a
// fresh barrier reports complete, so the ring starts empty.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/HopperGemm.h"

#include "kiln/Kernels/HopperLayout.h"

#include <sstream>

namespace kiln::hopper {

namespace {

// 227 KiB per CTA, static and dynamic together; 1 KiB is kept for the static
// part (the barriers, 16 bytes per stage).
constexpr int64_t kMaxDynamicShared = 227 * 1024 - 1024;

int64_t elemBytes(const GemmTileConfig &c) { return c.fp8 ? 1 : 2; }
int64_t aBytes(const GemmTileConfig &c) {
  return c.blockM * c.blockK * elemBytes(c);
}
int64_t bBytes(const GemmTileConfig &c) {
  return c.blockN * c.blockK * elemBytes(c);
}
int64_t stageBytes(const GemmTileConfig &c) { return aBytes(c) + bBytes(c); }

// quantizeSwiGLU: each math warpgroup's wgmma N (128 gate or up rows) and
// the exchange of warpgroup 1's totals (64 f32 per thread) past the stages.
int64_t wgmmaN(const GemmTileConfig &c) {
  return c.quantizeSwiGLU ? c.blockN / 2 : c.blockN;
}
int64_t exchangeBytes(const GemmTileConfig &c) {
  return c.quantizeSwiGLU ? 128 * (c.blockN / 4) * 4 : 0;
}

// f32 activations: rows of the activation tile (A's blockM, or the swapped
// form's blockN tokens), and the 16-byte chunks each of the producer's 128
// threads converts per k-block (8 per row).
int64_t activationRows(const GemmTileConfig &c) {
  return c.swapAB ? c.blockN : c.blockM;
}
int64_t convertIterations(const GemmTileConfig &c) {
  return (activationRows(c) * 8 + 127) / 128;
}

// The producer's threads load the activations themselves: f32 ones
// (converted to bf16), or gathered e4m3 rows (copied), which TMA cannot
// gather.
bool threadLoadsActivations(const GemmTileConfig &c) {
  return c.f32Activations || (c.fp8 && c.gatherRows);
}

} // namespace

std::string checkGemmTileConfig(const GemmTileConfig &c) {
  std::ostringstream why;
  if (c.blockM != 64 && c.blockM != 128)
    why << "blockM " << c.blockM << " is not 64 or 128 (64 per math warpgroup)";
  else if (!validWgmmaN(static_cast<uint32_t>(c.blockN)))
    why << "blockN " << c.blockN << " is not a multiple of 8 in [8, 256]";
  else if (c.blockK * elemBytes(c) != 128)
    why << "blockK " << c.blockK << " is not " << 128 / elemBytes(c)
        << " (one 128-byte swizzle span of " << (c.fp8 ? "e4m3" : "bf16")
        << ")";
  else if (c.swapAB && c.n % c.blockM != 0)
    why << "N " << c.n << " is not a multiple of blockM " << c.blockM
        << " (the swapped form's weight rows)";
  else if (c.swapAB && c.bf16Out)
    why << "the swapped form stores f32 only (no bf16 epilogue yet)";
  else if (c.swapAB && c.epilogue == Epilogue::kResidual)
    why << "the swapped form has no residual epilogue yet";
  else if (c.swapAB && c.epilogue == Epilogue::kSwiGLU &&
           (!c.splitGateUp || c.blockM != 64))
    why << "swapped SwiGLU needs split gate/up weights and blockM 64 (four "
           "8-row gate and up boxes per weight block)";
  else if (!c.swapAB && c.epilogue == Epilogue::kSwiGLU && c.blockN % 16 != 0)
    why << "SwiGLU needs blockN " << c.blockN
        << " to be a multiple of 16 (8 gate and 8 up rows per 8 outputs)";
  else if (c.quantizeSwiGLU &&
           (!c.fp8 || !c.splitGateUp || c.epilogue != Epilogue::kSwiGLU ||
            c.blockM != 64 || c.blockN != 256 || c.swapAB || c.bf16Out ||
            c.dualN1 || c.f32Activations))
    why << "the quantizing SwiGLU form is e4m3 over split gate/up weights, "
           "64 x 256 tiles (128 outputs), not swapped";
  else if (c.fp8 && !c.swapAB && 128 % wgmmaN(c) != 0)
    why << "blockN " << c.blockN
        << " does not divide 128 (one weight scale block per tile)";
  else if (c.n <= 0 || c.n % c.blockN != 0)
    why << "N " << c.n << " is not a positive multiple of blockN " << c.blockN;
  else if (c.k <= 0 || c.k % c.blockK != 0)
    why << "K " << c.k << " is not a positive multiple of blockK " << c.blockK;
  else if (c.splitGateUp &&
           (c.epilogue != Epilogue::kSwiGLU || (c.fp8 && !c.quantizeSwiGLU)))
    why << "split gate/up weights need the SwiGLU epilogue, and bf16 or the "
           "quantizing e4m3 form";
  else if (c.scaleTable && (!c.grouped || !c.fp8))
    why << "a table of weight scales needs the grouped e4m3 form";
  else if (c.gatherRows &&
           (!c.grouped || (!c.f32Activations && !c.fp8) || (c.fp8 && c.swapAB)))
    why << "gathered rows (sorted_token) need the grouped form over f32 "
           "activations, or e4m3 ones not swapped";
  else if (c.dualN1 != 0 &&
           (c.dualN1 < 0 || c.dualN1 >= c.n || (c.fp8 && c.dualN1 % 128) ||
            c.grouped || c.splitGateUp || c.epilogue != Epilogue::kStore ||
            c.bf16Out || c.dualN1 % (c.swapAB ? c.blockM : c.blockN) != 0))
    why << "two outputs split N " << c.n << " at " << c.dualN1
        << ": f32 stores and no other epilogue, e4m3 split at whole "
           "128-row weight blocks, the split a multiple of the tile's "
        << (c.swapAB ? "weight rows " : "columns ")
        << (c.swapAB ? c.blockM : c.blockN);
  else if (c.activationRow0 && (c.f32Activations || c.grouped))
    why << "row0 offsets the activations' tensor map: not with f32 "
           "activations (a pointer) or the grouped form (the layout's rows)";
  else if (c.f32Activations && c.fp8)
    why << "f32 activations are converted to bf16 only, not e4m3";
  else if (c.stages < 2 || c.stages > 16)
    why << "stages " << c.stages << " outside [2, 16]";
  else if (gemmDynamicSharedBytes(c) > kMaxDynamicShared)
    why << gemmDynamicSharedBytes(c) << " bytes of shared memory exceed "
        << kMaxDynamicShared;
  return why.str();
}

int64_t gemmDynamicSharedBytes(const GemmTileConfig &c) {
  return c.stages * stageBytes(c) + exchangeBytes(c) + 1024;
}

int64_t gemmMathGroups(const GemmTileConfig &c) {
  return c.quantizeSwiGLU ? 2 : c.blockM / 64;
}

int64_t gemmThreads(const GemmTileConfig &c) {
  return 128 * (1 + gemmMathGroups(c));
}

bool rebalancesRegisters(const GemmTileConfig &c) {
  return gemmMathGroups(c) == 2 && wgmmaN(c) >= 112 && !c.f32Activations;
}

GemmTileConfig chooseGemmTile(int64_t m, int64_t n, int64_t k, bool fp8,
                              bool grouped, int64_t sms) {
  GemmTileConfig c;
  c.n = n;
  c.k = k;
  c.fp8 = fp8;
  c.grouped = grouped;
  c.blockM = m <= 64 ? 64 : 128;
  c.blockK = fp8 ? 128 : 64;
  c.blockN = 0;
  if (m <= 32 && !grouped && n % 64 == 0) {
    // Decode: swapped, the weights' rows in 64-row blocks, the tokens in
    // the narrowest wgmma N that holds them.
    c.swapAB = true;
    c.blockM = 64;
    c.blockN = m <= 8 ? 8 : m <= 16 ? 16 : 32;
  }
  const int64_t rowBlocks = (m + c.blockM - 1) / c.blockM;
  for (int64_t bn : {128, 64, 32, 16, 8}) {
    if (c.swapAB) // blockN is the tokens'
      break;
    if (n % bn != 0)
      continue;
    if (c.blockN == 0)
      c.blockN = bn;
    if (rowBlocks * (n / bn) >= sms) {
      c.blockN = bn;
      break;
    }
  }
  fitStages(c);
  return c;
}

bool fitStages(GemmTileConfig &c) {
  c.stages = 2;
  if (!checkGemmTileConfig(c).empty())
    return false;
  while (c.stages < 8) {
    GemmTileConfig more = c;
    ++more.stages;
    if (!checkGemmTileConfig(more).empty())
      break;
    c = more;
  }
  return true;
}

GemmTileConfig chooseQuantizedSwiGLUTile(int64_t n, int64_t k) {
  GemmTileConfig c;
  c.n = n;
  c.k = k;
  c.fp8 = c.splitGateUp = c.quantizeSwiGLU = true;
  c.epilogue = Epilogue::kSwiGLU;
  c.blockM = 64;
  c.blockN = 256;
  c.blockK = 128;
  fitStages(c);
  return c;
}

std::string ptxSharedDeclarations() {
  return "// Dynamic shared memory of every kernel (aligned to 1024 in each).\n"
         ".extern .shared .align 16 .b8 kiln_dsmem[];\n\n";
}

std::string ptxModuleHeader() {
  return ".version 8.0\n.target sm_90a\n.address_size 64\n\n" +
         ptxSharedDeclarations();
}

std::string emitGemmEntryPtx(const GemmTileConfig &c, const std::string &name) {
  const int64_t mathGroups = gemmMathGroups(c);
  const bool quant = c.quantizeSwiGLU;
  // Tiles: (row block, column block); swapped, the rows are the weights'
  // (a static count) and the columns the tokens'.
  const int64_t nTiles = c.n / c.blockN;
  const int64_t wBlocks = c.n / c.blockM;
  const int64_t kBlocks = c.k / c.blockK;
  const int64_t acc = wgmmaN(c) / 2; // f32 accumulators per math thread
  // Descriptors: (address & 0x3FFFF) >> 4 | these constant fields, and per
  // K slice of one wgmma (32 bytes) the start field's step, both from the
  // layout function the unit tests check.
  const int64_t wgmmaK = 32 / elemBytes(c); // 16 bf16, 32 e4m3
  const uint64_t descConst =
      kMajorSwizzled128Descriptor(0, 0, wgmmaK, elemBytes(c));
  const uint64_t descStep =
      kMajorSwizzled128Descriptor(0, 1, wgmmaK, elemBytes(c)) - descConst;
  std::ostringstream o;
  auto L = [&](const char *label) { return name + "_" + label; };
  std::string accList;
  for (int64_t i = 0; i < acc; ++i)
    accList += (i ? ", %acc" : "%acc") + std::to_string(i);

  o << "// " << name << ": out[M, " << c.n << "] f32 = A[M, " << c.k << "] "
    << (c.fp8 ? "e4m3" : "bf16") << " x B[" << c.n << ", " << c.k << "]^T "
    << (c.fp8 ? "e4m3 (1x128 / 128x128 scales, promoted per k-block)" : "bf16")
    << "; tiles " << c.blockM << " x " << c.blockN << " x " << c.blockK << ", "
    << c.stages << " stages, " << mathGroups
    << " math warpgroup(s) + 1 producer\n";
  // f32Act: the activations come by the producer's threads, not TMA (f32
  // converted, or gathered e4m3 copied).
  const bool f32Act = threadLoadsActivations(c), split = c.splitGateUp,
             dual = c.dualN1 > 0;
  const std::string secondMap =
      split || dual ? "  .param .align 64 .b8 " + name + "_tma_2[128],\n" : "";
  o << ".visible .entry " << name << "(\n"
    << (f32Act ? "  .param .align 64 .b8 " + name + "_tma_w[128],\n" +
                     secondMap + "  .param .u64 " + name + "_act,\n"
               : "  .param .align 64 .b8 " + name +
                     "_tma_a[128],\n"
                     "  .param .align 64 .b8 " +
                     name + "_tma_b[128],\n" + secondMap)
    << (c.grouped ? "  .param .u64 " + name + "_block_expert,\n"
                  : std::string())
    << (c.gatherRows ? "  .param .u64 " + name + "_sorted_token,\n"
                     : std::string())
    << (c.fp8 ? "  .param .u64 " + name + "_scale_a,\n  .param .u64 " + name +
                    "_scale_b,\n"
              : std::string())
    << (c.fp8 && (dual || quant) ? "  .param .u64 " + name + "_scale_b2,\n"
                                 : std::string())
    << "  .param .u64 " << name << "_out,\n"
    << (dual ? "  .param .u64 " + name + "_out2,\n" : std::string())
    << (quant ? "  .param .u64 " + name + "_out_scale,\n" : std::string())
    << (c.epilogue == Epilogue::kResidual
            ? "  .param .u64 " + name + "_residual,\n"
            : std::string())
    << "  .param .u64 " << name << "_m"
    << (c.activationRow0 ? ",\n  .param .u64 " + name + "_row0" : std::string())
    << ")\n"
    << ".maxntid " << gemmThreads(c) << ", 1, 1\n{\n"
    << "  .reg .pred %p<20>;\n  .reg .b32 %r<56>;\n  .reg .b64 %rd<32>;\n"
    << (c.gatherRows
            ? "  .reg .b32 %gt<" + std::to_string(convertIterations(c)) + ">;\n"
            : std::string())
    << "  .reg .f32 %acc<" << acc << ">;\n"
    << "  .reg .f32 %ev<2>;\n  .reg .f32 %er<2>;\n  .reg .f32 %et;\n"
    << "  .reg .b32 %eb;\n"
    << (quant ? "  .reg .b16 %hq;\n" : "")
    // The producer's activation registers: gathered e4m3 chunks (%cu), or
    // two sets of f32 ones (%cv, %cw) and their bf16 pairs (%cb).
    << (f32Act && c.fp8 ? "  .reg .b32 %cu<" +
                              std::to_string(4 * convertIterations(c)) + ">;\n"
                        : std::string())
    << (f32Act && !c.fp8
            ? "  .reg .f32 %cv<" + std::to_string(8 * convertIterations(c)) +
                  ">;\n  .reg .f32 %cw<" +
                  std::to_string(8 * convertIterations(c)) +
                  ">;\n  .reg .b32 %cb<4>;\n"
            : std::string())
    << (c.fp8 ? "  .reg .f32 %fin<" + std::to_string(acc) +
                    ">;\n  .reg .f32 %sc<4>;\n  .reg .f32 %sct<" +
                    std::to_string(c.blockN / 4) + ">;\n  .reg .b32 %tok<" +
                    std::to_string(c.blockN / 4) + ">;\n"
              : std::string())
    << "  .shared .align 8 .b64 " << name << "_full[" << c.stages << "];\n"
    << "  .shared .align 8 .b64 " << name << "_empty[" << c.stages << "];\n";
  // %rd1 tma_a, %rd2 tma_b, %rd3 out, %rd4 M; %r1 tid, %r2 ctaid, %r3
  // nctaid, %r4 warpgroup, %r5 M (u32), %r6 tiles, %r7 stage base, %r8
  // full, %r9 empty.
  // The tensor maps come by value (as a __grid_constant__ CUtensorMap does):
  // TMA takes their generic parameter-space addresses, which need no
  // tensormap-proxy fence (a map in global memory would).
  // f32 activations: the weights' map is %rd1 (swapped) or %rd2, the
  // activations' pointer %rd21.
  if (f32Act)
    o << "  mov.u64 " << (c.swapAB ? "%rd1, " : "%rd2, ") << name
      << "_tma_w;\n  cvta.param.u64 "
      << (c.swapAB ? "%rd1, %rd1" : "%rd2, %rd2")
      << ";\n  ld.param.u64 %rd21, [" << name << "_act];\n";
  else
    o << "  mov.u64 %rd1, " << name << "_tma_a;\n  cvta.param.u64 %rd1, %rd1;\n"
      << "  mov.u64 %rd2, " << name
      << "_tma_b;\n  cvta.param.u64 %rd2, %rd2;\n";
  if (split || dual) // %rd24: the up projection's / W2's map
    o << "  mov.u64 %rd24, " << name
      << "_tma_2;\n  cvta.param.u64 %rd24, %rd24;\n";
  if (dual) // %rd27: the second output
    o << "  ld.param.u64 %rd27, [" << name << "_out2];\n";
  if (quant) // %rd27: the output's scales
    o << "  ld.param.u64 %rd27, [" << name << "_out_scale];\n";
  o << (c.grouped ? "  ld.param.u64 %rd18, [" + name + "_block_expert];\n"
                  : std::string())
    << (c.gatherRows // %rd30: the layout's row-to-token map
            ? "  ld.param.u64 %rd30, [" + name + "_sorted_token];\n"
            : std::string())
    << "  ld.param.u64 %rd3, [" << name << "_out];\n"
    << (c.epilogue == Epilogue::kResidual
            ? "  ld.param.u64 %rd19, [" + name + "_residual];\n"
            : std::string())
    << "  ld.param.u64 %rd4, [" << name << "_m];\n";
  if (c.fp8) // %rd10 activation scales [M, K/128], %rd11 weight scales
    o << "  ld.param.u64 %rd10, [" << name << "_scale_a];\n"
      << "  ld.param.u64 %rd11, [" << name << "_scale_b];\n";
  if (c.fp8 && (dual || quant)) // %rd28: W2's (the up projection's) scales
    o << "  ld.param.u64 %rd28, [" << name << "_scale_b2];\n";
  o << "  mov.u32 %r1, %tid.x;\n  mov.u32 %r2, %ctaid.x;\n"
    << "  mov.u32 %r3, %nctaid.x;\n  shr.u32 %r4, %r1, 7;\n"
    << "  cvt.u32.u64 %r5, %rd4;\n"
    << "  add.u32 %r10, %r5, " << (c.swapAB ? c.blockN : c.blockM) - 1 << ";\n"
    << "  div.u32 %r10, %r10, " << (c.swapAB ? c.blockN : c.blockM) << ";\n"
    << "  mul.lo.u32 %r6, %r10, " << (c.swapAB ? wBlocks : nTiles) << ";\n"
    << "  mov.u32 %r7, kiln_dsmem;\n  add.u32 %r7, %r7, 1023;\n"
    << "  and.b32 %r7, %r7, -1024;\n"
    << "  mov.u32 %r8, " << name << "_full;\n"
    << "  mov.u32 %r9, " << name << "_empty;\n"
    << "  setp.ne.u32 %p0, %r1, 0;\n  @%p0 bra " << L("init_done") << ";\n";
  for (int64_t s = 0; s < c.stages; ++s)
    o << "  mbarrier.init.shared::cta.b64 [%r8+" << 8 * s << "], "
      << (f32Act ? 128 : 1) << ";\n"
      << "  mbarrier.init.shared::cta.b64 [%r9+" << 8 * s << "], " << mathGroups
      << ";\n";
  o << "  fence.mbarrier_init.release.cluster;\n"
    << L("init_done") << ":\n  bar.sync 0;\n"
    << "  setp.eq.u32 %p1, %r4, 0;\n  @%p1 bra " << L("producer") << ";\n";

  // The loop over a CTA's tiles (%r12 from ctaid by nctaid; %r13, %r14 the
  // tile's row and column block), and the wait for the stage of iteration
  // %r11 (%r16 = it % stages, parity (it / stages) & 1, flipped for the
  // producer's wait on the empty ring) at label <prefix>_k.
  auto tileHead = [&](const char *prefix) {
    o << name << "_" << prefix << "_tile:\n"
      << "  setp.ge.u32 %p2, %r12, %r6;\n  @%p2 bra " << L("end") << ";\n"
      << (c.swapAB ? "  rem.u32 %r13, %r12, " : "  div.u32 %r13, %r12, ")
      << (c.swapAB ? wBlocks : nTiles) << ";\n"
      << (c.swapAB ? "  div.u32 %r14, %r12, " : "  rem.u32 %r14, %r12, ")
      << (c.swapAB ? wBlocks : nTiles) << ";\n";
    if (c.grouped) // %r35: the row block's expert; -1 (unused) is skipped
      // (swapped: the token block's; the layout's block is blockN rows)
      o << "  mul.wide.u32 %rd17, " << (c.swapAB ? "%r14" : "%r13")
        << ", 4;\n  add.s64 %rd17, %rd18, %rd17;\n"
        << "  ld.global.nc.u32 %r35, [%rd17];\n"
        << "  setp.lt.s32 %p9, %r35, 0;\n  @%p9 bra " << name << "_" << prefix
        << "_next;\n";
  };
  auto waitStage = [&](const char *prefix, const char *ring, bool flip) {
    o << name << "_" << prefix << "_k:\n"
      << "  rem.u32 %r16, %r11, " << c.stages << ";\n"
      << "  div.u32 %r17, %r11, " << c.stages << ";\n"
      << "  and.b32 %r17, %r17, 1;\n"
      << (flip ? "  xor.b32 %r17, %r17, 1;\n" : "")
      << "  mad.lo.u32 %r18, %r16, 8, " << ring << ";\n"
      << name << "_" << prefix << "_wait:\n"
      << "  mbarrier.try_wait.parity.shared::cta.b64 %p3, [%r18], %r17;\n"
      << "  @!%p3 bra " << name << "_" << prefix << "_wait;\n";
  };

  // --- Math warpgroups. %r11 iteration, %r12 tile, %r13 mb, %r14 nb, %r15
  // kb, %r16 stage, %r17 parity, %r18 barrier, %r19 A stage address, %r20 B
  // stage address, %r21 thread in warpgroup, %r22 math warpgroup.
  if (rebalancesRegisters(c))
    o << "  setmaxnreg.inc.sync.aligned.u32 232;\n";
  o << "  and.b32 %r21, %r1, 127;\n  sub.u32 %r22, %r4, 1;\n"
    << "  setp.eq.u32 %p8, %r1, %r1;\n" // true: accumulate
    << "  mov.u32 %r11, 0;\n  mov.u32 %r12, %r2;\n";
  tileHead("m");
  // Thread (warp w, lane l) of math warpgroup g holds rows %r27 = mb * BM +
  // 64 g + 16 w + l / 4 and %r27 + 8 and, per 8 columns from %r29 = nb * BN
  // + 2 (l % 4), two (HopperLayout.h accumulatorElement).
  o << "  shr.u32 %r25, %r21, 5;\n  and.b32 %r26, %r21, 31;\n"
    << "  mul.lo.u32 %r27, %r13, " << c.blockM << ";\n"
    << (quant ? "" : "  mad.lo.u32 %r27, %r22, 64, %r27;\n")
    << "  mad.lo.u32 %r27, %r25, 16, %r27;\n"
    << "  shr.u32 %r28, %r26, 2;\n  add.u32 %r27, %r27, %r28;\n"
    << "  and.b32 %r29, %r26, 3;\n  shl.b32 %r29, %r29, 1;\n"
    << "  mad.lo.u32 %r29, %r14, " << wgmmaN(c) << ", %r29;\n";
  if (c.fp8) {
    for (int64_t i = 0; i < acc; ++i)
      o << "  mov.f32 %fin" << i << ", 0f00000000;\n";
    o << "  add.u32 %r31, %r5, -1;\n";
    if (c.swapAB) {
      // Columns are tokens: each thread's blockN / 4 tokens' scale rows
      // (tokens past M read token M - 1's); rows are weights: the tile's
      // weight block is row mb * blockM / 128 of the weight scales.
      for (int64_t q = 0; q < c.blockN / 4; ++q)
        o << "  add.u32 %tok" << q << ", %r29, " << 8 * (q / 2) + q % 2 << ";\n"
          << "  min.u32 %tok" << q << ", %tok" << q << ", %r31;\n"
          << "  mul.lo.u32 %tok" << q << ", %tok" << q << ", " << 4 * kBlocks
          << ";\n";
      o << "  mul.lo.u32 %r34, %r13, " << c.blockM << ";\n";
    } else {
      // Rows are tokens: the two rows' activation scales (rows past M read
      // row M - 1's, whose products are never stored); columns are weights:
      // the tile's weight block is row nb * blockN / 128.
      o << "  min.u32 %r32, %r27, %r31;\n  add.u32 %r33, %r27, 8;\n"
        << "  min.u32 %r33, %r33, %r31;\n";
      if (c.gatherRows) // the rows' tokens' scales (padding: token 0's)
        for (const char *r : {"%r32", "%r33"})
          o << "  mul.wide.u32 %rd31, " << r << ", 4;\n"
            << "  add.s64 %rd31, %rd30, %rd31;\n"
            << "  ld.global.nc.s32 " << r << ", [%rd31];\n"
            << "  max.s32 " << r << ", " << r << ", 0;\n";
      o << "  mul.wide.u32 %rd12, %r32, " << 4 * kBlocks << ";\n"
        << "  add.s64 %rd12, %rd10, %rd12;\n"
        << "  mul.wide.u32 %rd13, %r33, " << 4 * kBlocks << ";\n"
        << "  add.s64 %rd13, %rd10, %rd13;\n"
        << "  mul.lo.u32 %r34, %r14, " << wgmmaN(c) << ";\n";
    }
    // The weight scales' row (kBlocks = K / 128 columns of them); two
    // outputs: W2's tiles read W2's scales at their row in W2.
    const char *scales = "%rd11";
    if (dual) {
      o << "  setp.lt.u32 %p15, %r34, " << c.dualN1 << ";\n"
        << "  selp.u32 %r54, 0, " << c.dualN1 << ", %p15;\n"
        << "  sub.u32 %r34, %r34, %r54;\n"
        << "  selp.b64 %rd29, %rd11, %rd28, %p15;\n";
      scales = "%rd29";
    }
    if (quant) { // warpgroup 0 the gate's scales, 1 the up projection's
      o << "  setp.eq.u32 %p15, %r22, 0;\n"
        << "  selp.b64 %rd29, %rd11, %rd28, %p15;\n";
      scales = "%rd29";
    }
    if (c.scaleTable) { // the expert's scales through its table entry
      o << "  mul.wide.u32 %rd31, %r35, 8;\n  add.s64 %rd31, " << scales
        << ", %rd31;\n  ld.global.nc.u64 %rd29, [%rd31];\n";
      scales = "%rd29";
    }
    o << "  shr.u32 %r34, %r34, 7;\n"
      << "  mul.wide.u32 %rd14, %r34, " << 4 * kBlocks << ";\n"
      << "  add.s64 %rd14, " << scales << ", %rd14;\n";
    if (c.grouped && !c.scaleTable) // the expert's [N / 128, K / 128] scales
      o << "  mul.wide.u32 %rd17, %r35, " << 4 * ((c.n + 127) / 128) * kBlocks
        << ";\n"
        << "  add.s64 %rd14, %rd14, %rd17;\n";
  }
  o << "  mov.u32 %r15, 0;\n";
  waitStage("m", "%r8", false);
  o << "  mad.lo.u32 %r19, %r16, " << stageBytes(c) << ", %r7;\n"
    << "  add.u32 %r20, %r19, " << aBytes(c) << ";\n"
    << (quant // both warpgroups read the same A rows, their own B rows
            ? "  mad.lo.u32 %r20, %r22, " + std::to_string(wgmmaN(c) * 128) +
                  ", %r20;\n"
            : "  mad.lo.u32 %r19, %r22, " + std::to_string(64 * 128) +
                  ", %r19;\n")
    << "  and.b32 %r23, %r19, 262143;\n  shr.u32 %r23, %r23, 4;\n"
    << "  cvt.u64.u32 %rd5, %r23;\n  or.b64 %rd5, %rd5, " << descConst << ";\n"
    << "  and.b32 %r24, %r20, 262143;\n  shr.u32 %r24, %r24, 4;\n"
    << "  cvt.u64.u32 %rd6, %r24;\n  or.b64 %rd6, %rd6, " << descConst
    << ";\n"
    // bf16: the tile's first k-block overwrites the accumulators; e4m3:
    // every k-block starts a fresh chain, promoted after it.
    << (c.fp8 ? "  setp.ne.u32 %p4, %r1, %r1;\n"
              : "  setp.ne.u32 %p4, %r15, 0;\n")
    << "  wgmma.fence.sync.aligned;\n";
  for (int64_t kk = 0; kk < c.blockK / wgmmaK; ++kk) {
    if (kk > 0)
      o << "  add.s64 %rd5, %rd5, " << descStep << ";\n  add.s64 %rd6, %rd6, "
        << descStep << ";\n";
    o << "  wgmma.mma_async.sync.aligned.m64n" << wgmmaN(c) << "k" << wgmmaK
      << (c.fp8 ? ".f32.e4m3.e4m3 {" : ".f32.bf16.bf16 {") << accList
      << "}, %rd5, %rd6, " << (kk == 0 ? "%p4" : "%p8")
      << (c.fp8 ? ", 1, 1;\n" : ", 1, 1, 0, 0;\n");
  }
  o << "  wgmma.commit_group.sync.aligned;\n";
  if (c.fp8) { // the k-block's scales load while the tensor cores work
    o << "  mul.wide.u32 %rd15, %r15, 4;\n"
      << "  add.s64 %rd16, %rd14, %rd15;\n  ld.global.nc.f32 %sc2, [%rd16];\n";
    if (c.swapAB)
      for (int64_t q = 0; q < c.blockN / 4; ++q)
        o << "  cvt.u64.u32 %rd16, %tok" << q << ";\n"
          << "  add.s64 %rd16, %rd16, %rd10;\n  add.s64 %rd16, %rd16, %rd15;\n"
          << "  ld.global.nc.f32 %sct" << q << ", [%rd16];\n";
    else
      o << "  add.s64 %rd16, %rd12, %rd15;\n  ld.global.nc.f32 %sc0, [%rd16];\n"
        << "  add.s64 %rd16, %rd13, %rd15;\n  ld.global.nc.f32 %sc1, "
           "[%rd16];\n";
  }
  o << "  wgmma.wait_group.sync.aligned 0;\n"
    << "  setp.eq.u32 %p5, %r21, 0;\n"
    << "  mad.lo.u32 %r18, %r16, 8, %r9;\n"
    << "  @%p5 mbarrier.arrive.shared::cta.b64 %rd7, [%r18];\n";
  if (c.fp8 && c.swapAB) { // total += chain * scale_a[token] * scale_b
    for (int64_t q = 0; q < c.blockN / 4; ++q)
      o << "  mul.f32 %sct" << q << ", %sct" << q << ", %sc2;\n";
    // Register i holds column 8 (i / 4) + (i % 2): token slot 2 (i / 4) + i
    // % 2.
    for (int64_t i = 0; i < acc; ++i)
      o << "  fma.rn.f32 %fin" << i << ", %acc" << i << ", %sct"
        << 2 * (i / 4) + i % 2 << ", %fin" << i << ";\n";
  } else if (c.fp8) { // total += chain * scale_a[row] * scale_b
    o << "  mul.f32 %sc0, %sc0, %sc2;\n  mul.f32 %sc1, %sc1, %sc2;\n";
    for (int64_t i = 0; i < acc; ++i)
      o << "  fma.rn.f32 %fin" << i << ", %acc" << i << ", %sc"
        << ((i >> 1) & 1) << ", %fin" << i << ";\n";
  }
  o << "  add.u32 %r11, %r11, 1;\n  add.u32 %r15, %r15, 1;\n"
    << "  setp.lt.u32 %p6, %r15, " << kBlocks << ";\n"
    << "  @%p6 bra " << L("m_k") << ";\n";
  const char *result = c.fp8 ? "fin" : "acc";
  // out[token, n]: rows n = nReg (+ 8), columns token = %r29 + 8 j + e;
  // from the base out + (%r29 * cols + nReg) * 4 every element is a
  // constant offset ((8 j + e) * cols + 8 h) * 4; tokens past M are not
  // stored.
  auto swappedStores = [&](const char *out, int64_t cols, const char *nReg) {
    o << "  mul.wide.u32 %rd8, %r29, " << cols << ";\n"
      << "  cvt.u64.u32 %rd9, " << nReg << ";\n  add.s64 %rd8, %rd8, %rd9;\n"
      << "  shl.b64 %rd8, %rd8, 2;\n  add.s64 %rd8, " << out << ", %rd8;\n";
    for (int64_t j = 0; j < c.blockN / 8; ++j)
      for (int64_t e = 0; e < 2; ++e) {
        o << "  add.u32 %r30, %r29, " << 8 * j + e << ";\n"
          << "  setp.lt.u32 %p7, %r30, %r5;\n";
        for (int64_t h = 0; h < 2; ++h)
          o << "  @%p7 st.global.f32 [%rd8+" << ((8 * j + e) * cols + 8 * h) * 4
            << "], %" << result << 4 * j + 2 * h + e << ";\n";
      }
  };
  // Two outputs: %p14 when the tile's columns (swapped: weight rows) are
  // W1's; %r53 the column in W2's output otherwise.
  auto dualSplit = [&](auto stores, const char *colReg) {
    o << (c.swapAB ? "  mul.lo.u32 %r51, %r13, " : "  mul.lo.u32 %r51, %r14, ")
      << (c.swapAB ? c.blockM : c.blockN) << ";\n"
      << "  setp.lt.u32 %p14, %r51, " << c.dualN1 << ";\n"
      << "  sub.u32 %r53, " << colReg << ", " << c.dualN1 << ";\n"
      << "  @!%p14 bra " << L("second_out") << ";\n";
    stores("%rd3", c.dualN1, colReg);
    o << "  bra " << L("stored") << ";\n" << L("second_out") << ":\n";
    stores("%rd27", c.n - c.dualN1, "%r53");
    o << L("stored") << ":\n";
  };
  // silu(g) * u = g / (1 + 2^(-g log2 e)) * u into `dst`.
  auto silu = [&](const std::string &g, const std::string &u,
                  const std::string &dst) {
    o << "  mul.f32 %et, " << g << ", 0fBFB8AA3B;\n"
      << "  ex2.approx.ftz.f32 %et, %et;\n"
      << "  add.f32 %et, %et, 0f3F800000;\n"
      << "  rcp.approx.ftz.f32 %et, %et;\n"
      << "  mul.f32 %et, %et, " << g << ";\n"
      << "  mul.f32 " << dst << ", %et, " << u << ";\n";
  };
  const bool swiglu = c.epilogue == Epilogue::kSwiGLU;
  auto reg = [&](int64_t i) {
    return "%" + std::string(result) + std::to_string(i);
  };
  // Swapped SwiGLU: fragment rows l / 4 (gate) and l / 4 + 8 (up) of warp
  // w are output %r36 = mb * 32 + 8 w + l / 4, a column of out[M, N / 2];
  // register 4 j + e is token %r29 + 8 j + e, 4 j + 2 + e its up.
  auto swappedSwiGLUStores = [&] {
    const int64_t cols = c.n / 2;
    o << "  mul.lo.u32 %r36, %r13, " << c.blockM / 2 << ";\n"
      << "  mad.lo.u32 %r36, %r25, 8, %r36;\n  add.u32 %r36, %r36, %r28;\n"
      << "  mul.wide.u32 %rd8, %r29, " << cols << ";\n"
      << "  cvt.u64.u32 %rd9, %r36;\n  add.s64 %rd8, %rd8, %rd9;\n"
      << "  shl.b64 %rd8, %rd8, 2;\n  add.s64 %rd8, %rd3, %rd8;\n";
    for (int64_t j = 0; j < c.blockN / 8; ++j)
      for (int64_t e = 0; e < 2; ++e) {
        o << "  add.u32 %r30, %r29, " << 8 * j + e << ";\n"
          << "  setp.lt.u32 %p7, %r30, %r5;\n";
        silu(reg(4 * j + e), reg(4 * j + 2 + e), "%ev0");
        o << "  @%p7 st.global.f32 [%rd8+" << (8 * j + e) * cols * 4
          << "], %ev0;\n";
      }
  };
  if (c.swapAB && dual)
    dualSplit(swappedStores, "%r27");
  else if (c.swapAB && swiglu)
    swappedSwiGLUStores();
  else if (c.swapAB)
    swappedStores("%rd3", c.n, "%r27");
  // Not swapped: per row half h, the thread's two columns of each group of
  // 8 (gate and up groups alternate under SwiGLU: 16 weight rows give 8
  // outputs; split, the up group of gate group q is q + blockN / 16), then
  // the residual, then f32 or bf16 stores.
  const int64_t outBytes = c.bf16Out ? 2 : 4;
  if (!c.swapAB && swiglu && !quant)
    o << "  mul.lo.u32 %r36, %r14, " << c.blockN / 2 << ";\n"
      << "  and.b32 %r37, %r26, 3;\n  shl.b32 %r37, %r37, 1;\n"
      << "  add.u32 %r36, %r36, %r37;\n";
  auto stores = [&](const char *out, int64_t outCols, const char *colReg) {
    for (int64_t h = 0; h < 2; ++h) {
      o << "  add.u32 %r30, %r27, " << 8 * h << ";\n"
        << "  setp.lt.u32 %p7, %r30, %r5;\n"
        << "  cvt.u64.u32 %rd8, %r30;\n"
        << "  mul.lo.u64 %rd8, %rd8, " << outCols << ";\n"
        << "  cvt.u64.u32 %rd9, " << colReg
        << ";\n  add.s64 %rd8, %rd8, %rd9;\n";
      if (c.epilogue == Epilogue::kResidual)
        o << "  shl.b64 %rd20, %rd8, 2;\n  add.s64 %rd20, %rd19, %rd20;\n";
      o << "  shl.b64 %rd8, %rd8, " << (c.bf16Out ? 1 : 2) << ";\n"
        << "  add.s64 %rd8, " << out << ", %rd8;\n";
      for (int64_t j = 0; j < (swiglu ? c.blockN / 16 : c.blockN / 8); ++j) {
        for (int64_t e = 0; e < 2; ++e) {
          if (swiglu) {
            const int64_t gq = split ? j : 2 * j,
                          uq = split ? j + c.blockN / 16 : 2 * j + 1;
            silu(reg(4 * gq + 2 * h + e), reg(4 * uq + 2 * h + e),
                 "%ev" + std::to_string(e));
          } else {
            o << "  mov.f32 %ev" << e << ", %" << result << 4 * j + 2 * h + e
              << ";\n";
          }
        }
        if (c.epilogue == Epilogue::kResidual)
          o << "  @%p7 ld.global.v2.f32 {%er0, %er1}, [%rd20+" << 32 * j
            << "];\n"
            << "  add.f32 %ev0, %ev0, %er0;\n  add.f32 %ev1, %ev1, %er1;\n";
        if (c.bf16Out)
          o << "  cvt.rn.bf16x2.f32 %eb, %ev1, %ev0;\n"
            << "  @%p7 st.global.b32 [%rd8+" << 8 * outBytes * j << "], %eb;\n";
        else
          o << "  @%p7 st.global.v2.f32 [%rd8+" << 8 * outBytes * j
            << "], {%ev0, %ev1};\n";
      }
    }
  };
  // quantizeSwiGLU: warpgroup 1 stores its up totals at the exchange
  // (%r38: register i of thread t at 512 i + 4 t, conflict-free), arrives
  // on barrier 1 and waits on 2 before its next tile may overwrite them;
  // warpgroup 0 waits on 1, forms silu(g) * u in its totals, arrives on 2,
  // then quantizes rows %r27 and %r27 + 8 (the quad's 4 threads hold a
  // row's 128 outputs: amax by two butterfly shuffles), storing e4m3 pairs
  // (columns %r29 + 8 j + e) and, from lane l % 4 == 0, the row's scale at
  // column block nb.
  auto quantStores = [&] {
    const int64_t cols = c.n / 2;
    o << "  add.u32 %r38, %r7, " << c.stages * stageBytes(c) << ";\n"
      << "  mad.lo.u32 %r38, %r21, 4, %r38;\n"
      << "  setp.eq.u32 %p15, %r22, 0;\n  @%p15 bra " << L("q_gate") << ";\n";
    for (int64_t i = 0; i < acc; ++i)
      o << "  st.shared.f32 [%r38+" << 512 * i << "], %fin" << i << ";\n";
    o << "  bar.arrive 1, 256;\n  bar.sync 2, 256;\n  bra " << L("m_next")
      << ";\n"
      << L("q_gate") << ":\n  bar.sync 1, 256;\n";
    for (int64_t i = 0; i < acc; ++i) {
      o << "  ld.shared.f32 %er0, [%r38+" << 512 * i << "];\n";
      silu(reg(i), "%er0", reg(i));
    }
    o << "  bar.arrive 2, 256;\n"
      << "  mov.f32 %ev0, 0f00000000;\n  mov.f32 %ev1, 0f00000000;\n";
    for (int64_t i = 0; i < acc; ++i)
      o << "  abs.f32 %et, " << reg(i) << ";\n  max.f32 %ev" << ((i >> 1) & 1)
        << ", %ev" << ((i >> 1) & 1) << ", %et;\n";
    for (int64_t h = 0; h < 2; ++h) {
      for (int d : {1, 2})
        o << "  mov.b32 %eb, %ev" << h << ";\n"
          << "  shfl.sync.bfly.b32 %eb, %eb, " << d << ", 31, -1;\n"
          << "  mov.b32 %et, %eb;\n  max.f32 %ev" << h << ", %ev" << h
          << ", %et;\n";
      // s = max(amax, 1e-4) / 448, correctly rounded as the reference
      o << "  max.f32 %ev" << h << ", %ev" << h << ", 0f38D1B717;\n"
        << "  div.rn.f32 %ev" << h << ", %ev" << h << ", 0f43E00000;\n";
    }
    o << "  and.b32 %r37, %r26, 3;\n  setp.eq.u32 %p13, %r37, 0;\n";
    for (int64_t h = 0; h < 2; ++h) {
      o << "  add.u32 %r30, %r27, " << 8 * h << ";\n"
        << "  setp.lt.u32 %p7, %r30, %r5;\n"
        << "  cvt.u64.u32 %rd8, %r30;\n  mul.lo.u64 %rd8, %rd8, " << cols
        << ";\n  cvt.u64.u32 %rd9, %r29;\n  add.s64 %rd8, %rd8, %rd9;\n"
        << "  add.s64 %rd8, %rd3, %rd8;\n";
      for (int64_t j = 0; j < acc / 4; ++j)
        o << "  div.rn.f32 %er0, " << reg(4 * j + 2 * h) << ", %ev" << h
          << ";\n  div.rn.f32 %er1, " << reg(4 * j + 2 * h + 1) << ", %ev" << h
          << ";\n  cvt.rn.satfinite.e4m3x2.f32 %hq, %er1, %er0;\n"
          << "  @%p7 st.global.b16 [%rd8+" << 8 * j << "], %hq;\n";
      o << "  setp.lt.and.u32 %p14, %r30, %r5, %p13;\n"
        << "  cvt.u64.u32 %rd20, %r30;\n  mul.lo.u64 %rd20, %rd20, "
        << cols / 128 << ";\n  cvt.u64.u32 %rd9, %r14;\n"
        << "  add.s64 %rd20, %rd20, %rd9;\n  shl.b64 %rd20, %rd20, 2;\n"
        << "  add.s64 %rd20, %rd27, %rd20;\n"
        << "  @%p14 st.global.f32 [%rd20], %ev" << h << ";\n";
    }
  };
  if (quant)
    quantStores();
  else if (!c.swapAB && dual)
    dualSplit(stores, "%r29");
  else if (!c.swapAB)
    stores("%rd3", swiglu ? c.n / 2 : c.n, swiglu ? "%r36" : "%r29");
  o << L("m_next") << ":\n"
    << "  add.u32 %r12, %r12, %r3;\n  bra " << L("m_tile") << ";\n";

  // --- Producer warpgroup: thread 0 issues the TMA loads; with f32
  // activations all 128 threads convert the activations' k-block too.
  o << L("producer") << ":\n";
  if (rebalancesRegisters(c))
    o << "  setmaxnreg.dec.sync.aligned.u32 40;\n";
  if (f32Act) // %r40: the thread's chunk offset in the tile, %r41 its
    // first row, %r42 its chunk's byte in a row of f32
    o << "  shr.u32 %r41, %r1, 3;\n  and.b32 %r42, %r1, 7;\n"
      << "  and.b32 %r43, %r41, 7;\n  xor.b32 %r43, %r43, %r42;\n"
      << "  shl.b32 %r43, %r43, 4;\n  mad.lo.u32 %r40, %r41, 128, %r43;\n"
      << "  shl.b32 %r42, %r42, " << (c.fp8 ? 4 : 5)
      << ";\n  setp.eq.u32 %p10, %r1, 0;\n";
  else
    o << "  setp.ne.u32 %p2, %r1, 0;\n  @%p2 bra " << L("end") << ";\n";
  o << "  mov.u32 %r11, 0;\n  mov.u32 %r12, %r2;\n";
  tileHead("p");
  o << "  mul.lo.u32 %r13, %r13, " << c.blockM << ";\n"
    << "  mul.lo.u32 %r14, %r14, " << c.blockN << ";\n"
    << "  mov.u32 %r15, 0;\n";
  // f32 activations: the thread's row of conversion iteration i is %r41 +
  // 16 i of the tile's activation rows; gathered, its token %gt_i (-1 past
  // M or the tile's rows, or for padding), read once per tile.
  const int64_t actRows = activationRows(c), iters = convertIterations(c);
  const char *rowBase = c.swapAB ? "%r14" : "%r13";
  auto rowOfIteration = [&](int64_t i) {
    o << "  add.u32 %r43, %r41, " << 16 * i << ";\n"
      << "  add.u32 %r44, " << rowBase << ", %r43;\n"
      << "  setp.lt.u32 %p11, %r44, %r5;\n";
    if (16 * (i + 1) > actRows)
      o << "  setp.lt.and.u32 %p11, %r43, " << actRows << ", %p11;\n";
  };
  if (c.gatherRows)
    for (int64_t i = 0; i < iters; ++i) {
      rowOfIteration(i);
      o << "  mov.u32 %gt" << i << ", -1;\n"
        << "  mul.wide.u32 %rd31, %r44, 4;\n  add.s64 %rd31, %rd30, %rd31;\n"
        << "  @%p11 ld.global.nc.s32 %gt" << i << ", [%rd31];\n";
    }
  if (c.activationRow0) // %r49: the activations' row in their map
    o << "  ld.param.u64 %rd25, [" << name << "_row0];\n"
      << "  cvt.u32.u64 %r50, %rd25;\n"
      << "  add.u32 %r49, " << (c.swapAB ? "%r14" : "%r13") << ", %r50;\n";
  // f32 activations: the producer's threads load k-block kb's rows
  // (from %r44 = row base + local row, elements [kb blockK, + blockK) of
  // each; e4m3: the thread's 16 bytes of each row) into register set `set`
  // (%cv or %cw; e4m3 %cu), all of a stage's loads in flight together, and
  // store them at f32ActivationChunkOffset (%r40 + 2048 i) in the stage,
  // bf16 (or e4m3 as they are); the fence makes them visible to the tensor
  // cores' async proxy. f32 prefetches: k-block kb + 1's loads are issued
  // before kb's stores, the k-loop unrolled by two over the register sets.
  const bool prefetch = c.f32Activations;
  const char *sets[2] = {"%cv", "%cw"};
  auto loadActs = [&](int set, const char *kbReg) {
    o << "  mul.lo.u32 %r39, " << kbReg << ", " << c.blockK << ";\n"
      << "  mad.lo.u32 %r46, %r39, " << (c.fp8 ? 1 : 4)
      << ", %r42;\n  cvt.u64.u32 %rd23, %r46;\n"
      << "  add.s64 %rd23, %rd23, %rd21;\n";
    const int64_t rowBytes = (c.fp8 ? 1 : 4) * c.k;
    const char *cv = sets[set];
    for (int64_t i = 0; i < iters; ++i) {
      if (c.gatherRows) {
        o << "  setp.ge.s32 %p11, %gt" << i << ", 0;\n"
          << "  mul.wide.u32 %rd22, %gt" << i << ", " << rowBytes << ";\n";
      } else {
        rowOfIteration(i);
        o << "  mul.wide.u32 %rd22, %r44, " << rowBytes << ";\n";
      }
      o << "  add.s64 %rd22, %rd22, %rd23;\n";
      if (c.fp8) {
        for (int64_t e = 0; e < 4; ++e)
          o << "  mov.b32 %cu" << 4 * i + e << ", 0;\n";
        o << "  @%p11 ld.global.nc.v4.b32 {%cu" << 4 * i << ", %cu" << 4 * i + 1
          << ", %cu" << 4 * i + 2 << ", %cu" << 4 * i + 3 << "}, [%rd22];\n";
        continue;
      }
      for (int64_t e = 0; e < 8; ++e)
        o << "  mov.f32 " << cv << 8 * i + e << ", 0f00000000;\n";
      for (int64_t h = 0; h < 2; ++h)
        o << "  @%p11 ld.global.nc.v4.f32 {" << cv << 8 * i + 4 * h << ", "
          << cv << 8 * i + 4 * h + 1 << ", " << cv << 8 * i + 4 * h + 2 << ", "
          << cv << 8 * i + 4 * h + 3 << "}, [%rd22+" << 16 * h << "];\n";
    }
  };
  auto storeActs = [&](int set) {
    const char *cv = sets[set];
    o << "  add.u32 %r45, " << (c.swapAB ? "%r20" : "%r19") << ", %r40;\n";
    for (int64_t i = 0; i < iters; ++i) {
      std::string chunk = "{%cb0, %cb1, %cb2, %cb3}";
      if (c.fp8)
        chunk = "{%cu" + std::to_string(4 * i) + ", %cu" +
                std::to_string(4 * i + 1) + ", %cu" +
                std::to_string(4 * i + 2) + ", %cu" +
                std::to_string(4 * i + 3) + "}";
      else
        for (int64_t q = 0; q < 4; ++q)
          o << "  cvt.rn.bf16x2.f32 %cb" << q << ", " << cv << 8 * i + 2 * q + 1
            << ", " << cv << 8 * i + 2 * q << ";\n";
      if (16 * (i + 1) > actRows)
        o << "  add.u32 %r43, %r41, " << 16 * i << ";\n"
          << "  setp.lt.u32 %p12, %r43, " << actRows << ";\n  @%p12";
      o << "  st.shared.v4.b32 [%r45+" << 2048 * i << "], " << chunk << ";\n";
    }
  };
  // One k-block: the stage's wait, the weights' TMA, the activations.
  auto body = [&](const char *prefix, int set) {
    waitStage(prefix, "%r9", true);
    const int64_t weightBytes = c.swapAB ? aBytes(c) : bBytes(c);
    o << "  mad.lo.u32 %r18, %r16, 8, %r8;\n";
    if (f32Act)
      o << "  @%p10 mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%r18], "
        << weightBytes << ";\n";
    else
      o << "  mbarrier.arrive.expect_tx.shared::cta.b64 %rd7, [%r18], "
        << stageBytes(c) << ";\n";
    o << "  mad.lo.u32 %r19, %r16, " << stageBytes(c) << ", %r7;\n"
      << "  add.u32 %r20, %r19, " << aBytes(c) << ";\n"
      << "  mul.lo.u32 %r23, %r15, " << c.blockK << ";\n";
    // One box per operand into the stage, completing on its full barrier.
    // Grouped: the weights' map is 3D [E, N, K], the expert (%r35) its outer
    // coordinate; the weights are operand B, or A when swapped.
    auto tmaLoad = [&](const char *dst, const char *map, const char *row,
                       bool weights) {
      bool expert = c.grouped && weights;
      o << (f32Act ? "  @%p10 " : "  ") << "cp.async.bulk.tensor."
        << (expert ? "3d" : "2d")
        << ".shared::cluster.global.tile.mbarrier::complete_tx::bytes [" << dst
        << "], [" << map << ", {%r23, " << row << (expert ? ", %r35" : "")
        << "}], [%r18];\n";
    };
    const char *actRow = c.activationRow0 ? "%r49" : nullptr;
    if (dual) // the tile's weight (%rd26) and its row in it (%r52)
      o << "  setp.lt.u32 %p13, " << (c.swapAB ? "%r13" : "%r14") << ", "
        << c.dualN1 << ";\n  selp.u32 %r51, 0, " << c.dualN1 << ", %p13;\n"
        << "  sub.u32 %r52, " << (c.swapAB ? "%r13" : "%r14") << ", %r51;\n"
        << "  selp.b64 %rd26, " << (c.swapAB ? "%rd1" : "%rd2")
        << ", %rd24, %p13;\n";
    if (split && c.swapAB) {
      // Weight rows of outputs mb * 32 + 8 q .. + 7: gate rows at stage row
      // 16 q, up rows at 16 q + 8 (8-row boxes, one 1024-byte swizzle repeat
      // each).
      o << "  shr.u32 %r47, %r13, 1;\n";
      for (int64_t q = 0; q < c.blockM / 16; ++q) {
        o << "  add.u32 %r48, %r19, " << 2048 * q << ";\n";
        tmaLoad("%r48", "%rd1", "%r47", true);
        o << "  add.u32 %r48, %r19, " << 2048 * q + 1024 << ";\n";
        tmaLoad("%r48", "%rd24", "%r47", true);
        o << "  add.u32 %r47, %r47, 8;\n";
      }
    } else if (dual && c.swapAB) {
      tmaLoad("%r19", "%rd26", "%r52", true);
    } else if (!f32Act || c.swapAB)
      tmaLoad("%r19", "%rd1", !c.swapAB && actRow ? actRow : "%r13", c.swapAB);
    if (split && !c.swapAB) { // gate rows nb * blockN / 2 .. into the first
                              // half, up into
      // the second
      o << "  shr.u32 %r47, %r14, 1;\n  add.u32 %r48, %r20, "
        << c.blockN / 2 * 128 << ";\n";
      tmaLoad("%r20", "%rd2", "%r47", true);
      tmaLoad("%r48", "%rd24", "%r47", true);
    } else if (dual && !c.swapAB) {
      tmaLoad("%r20", "%rd26", "%r52", true);
    } else if (!f32Act || !c.swapAB) {
      tmaLoad("%r20", "%rd2", c.swapAB && actRow ? actRow : "%r14", !c.swapAB);
    }
    if (f32Act) {
      if (prefetch) { // the next k-block's loads, in flight while this one is
                      // stored
        o << "  add.u32 %r38, %r15, 1;\n  setp.lt.u32 %p16, %r38, " << kBlocks
          << ";\n  @!%p16 bra " << name << "_" << prefix << "_fetched;\n";
        loadActs(1 - set, "%r38");
        o << name << "_" << prefix << "_fetched:\n";
      } else {
        loadActs(0, "%r15");
      }
      storeActs(prefetch ? set : 0);
      o << "  fence.proxy.async.shared::cta;\n"
        << "  mbarrier.arrive.shared::cta.b64 %rd7, [%r18];\n";
    }
    o << "  add.u32 %r11, %r11, 1;\n  add.u32 %r15, %r15, 1;\n"
      << "  setp.lt.u32 %p6, %r15, " << kBlocks << ";\n";
  };
  if (prefetch) { // (%r15 is 0: the tile's first k-block)
    loadActs(0, "%r15");
    body("p", 0);
    o << "  @!%p6 bra " << L("p_next") << ";\n";
    body("q", 1);
    o << "  @%p6 bra " << L("p_k") << ";\n";
  } else {
    body("p", 0);
    o << "  @%p6 bra " << L("p_k") << ";\n";
  }
  o << L("p_next") << ":\n"
    << "  add.u32 %r12, %r12, %r3;\n  bra " << L("p_tile") << ";\n"
    << L("end") << ":\n  ret;\n}\n\n";
  return o.str();
}

} // namespace kiln::hopper
