// kiln-hopper-check: runs the sm_90a GEMM kernels of HopperGemm.h on a GPU.
//
// First every kernel form (bf16 and e4m3, one and two math warpgroups, the
// widest, an unaligned and the smallest N, rows that do not fill a tile)
// against a float64 CPU reference written from the definition (out[m, n] =
// sum_k a[m, k] b[n, k]; e4m3: per 128 of K, times the row's and the weight
// block's scales); then TFLOPS and GB/s for DeepSeek-V3's projection shapes
// at M = 64, 128 and 4096 (median of timed launches). Exit 0 when every
// check passes, 1 when one fails, 77 when there is no GPU (no driver or no
// device) or it is not sm_90.
//
// It drives the driver through the runtime's dlopen'ed table: tensor maps
// encoded with cuTensorMapEncodeTiled and passed by value (128-byte kernel
// parameters), dynamic shared memory above 48 KiB
// with cuFuncSetAttribute, a persistent grid of min(tiles, SMs) CTAs.
#include "cuda_driver.h"
#include "kiln/Compiler/HopperGemm.h"
#include "kiln/Kernels/HopperLayout.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace kiln;
using namespace kiln::cuda;
using kiln::hopper::GemmTileConfig;

namespace {

const Driver *drv = nullptr;

bool ok(CUresult r, const char *call) {
  if (r == CUDA_SUCCESS)
    return true;
  std::fprintf(stderr, "%s\n", std::string(drv->Check(r, call).message()).c_str());
  return false;
}

uint64_t rngState = 0x9E3779B97F4A7C15ull;
uint32_t next32() {
  rngState ^= rngState << 13;
  rngState ^= rngState >> 7;
  rngState ^= rngState << 17;
  return static_cast<uint32_t>(rngState >> 16);
}

uint16_t toBf16(float f) { // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
double fromBf16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
double fromE4m3(uint8_t b) { // e4m3fn: bias 7, no infinities, 0x7F/0xFF NaN
  int sign = b >> 7, e = (b >> 3) & 15, m = b & 7;
  double v = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1 + m / 8.0, e - 7);
  return sign ? -v : v;
}
/// The e4m3fn code nearest x (ties to the even code), saturated at 448.
uint8_t toE4m3(double x) {
  const double a = std::min(std::fabs(x), 448.0);
  int best = 0;
  for (int code = 1; code <= 0x7E; ++code) {
    double d = std::fabs(fromE4m3(static_cast<uint8_t>(code)) - a),
           bd = std::fabs(fromE4m3(static_cast<uint8_t>(best)) - a);
    if (d < bd || (d == bd && code % 2 == 0))
      best = code;
  }
  return static_cast<uint8_t>(best | (x < 0 ? 0x80 : 0));
}
uint8_t randomE4m3() { // finite values of magnitude <= 8 (exponents <= 10)
  for (;;) {
    uint8_t b = static_cast<uint8_t>(next32());
    if (((b >> 3) & 15) <= 10)
      return b;
  }
}

/// The expert of layout block `block` in the grouped checks and benchmarks:
/// cycling through -1 (unused), 0, ..., experts - 1.
int64_t layoutExpert(int64_t block, int64_t experts) {
  return (block * 7 + 3) % (experts + 1) - 1;
}

struct Result {
  bool ran = false;
  double relL2 = 0, maxErr = 0, medianMs = 0;
  // Quantized outputs: scales off by more than 1e-5 relative and e4m3 codes
  // other than the float64 reference's, of `values`.
  int64_t mismatches = 0, values = 0;
};

/// Runs one kernel on M rows; checks it against the float64 reference when
/// `check`, times `reps` launches otherwise.
/// Grouped: `experts` experts' weights [E, N, K], row block b of A belongs
/// to expert blockExpert[b] (-1: unused, its rows not written).
Result run(const GemmTileConfig &c, int64_t m, bool check, int reps, int sms,
           int64_t experts = 1) {
  Result res;
  const int64_t n = c.n, k = c.k, eb = c.fp8 ? 1 : 2;
  const int64_t kBlocks = (k + 127) / 128; // e4m3 scale columns
  const int64_t nScaleRows = (n + 127) / 128;
  // The layout's block: the tile's rows (blockN tokens when swapped).
  const int64_t layoutBlock = c.swapAB ? c.blockN : c.blockM;
  const int64_t mBlocks = (m + layoutBlock - 1) / layoutBlock;
  std::vector<int32_t> blockExpert(mBlocks, 0);
  if (c.grouped)
    for (int64_t i = 0; i < mBlocks; ++i)
      blockExpert[i] = static_cast<int32_t>(layoutExpert(i, experts));
  auto expertOfRow = [&](int64_t row) { return c.grouped ? blockExpert[row / layoutBlock] : 0; };
  // Gathered rows (moe_up): row i of the layout is token sortedToken[i] of
  // `tokens` activation rows, -1 (every fifth row, as padding) a zero row.
  const int64_t tokens = c.gatherRows ? m / 2 + 3 : m;
  std::vector<int32_t> sortedToken(m);
  for (int64_t i = 0; i < m; ++i)
    sortedToken[i] = c.gatherRows ? (i % 5 == 4 ? -1 : static_cast<int32_t>((i * 7 + 1) % tokens))
                                  : static_cast<int32_t>(i);
  // activationRow0: the activations' map spans row0 more rows before the
  // launch's (another run's), which the kernel skips by its row0 parameter
  // and the scales' pointer by being advanced.
  const int64_t row0 = c.activationRow0 ? 5 : 0;
  std::vector<uint8_t> a((m + row0) * k * eb), b(experts * n * k * eb);
  std::vector<float> sa, sb, af;
  if (c.fp8) {
    for (auto &x : a) x = randomE4m3();
    for (auto &x : b) x = randomE4m3();
    sa.resize((m + row0) * kBlocks);
    sb.resize(experts * nScaleRows * kBlocks);
    for (auto &x : sa) x = std::ldexp(1.0f + (next32() % 256) / 256.0f, -int(next32() % 4));
    for (auto &x : sb) x = std::ldexp(1.0f + (next32() % 256) / 256.0f, -int(next32() % 4));
  } else {
    auto *a16 = reinterpret_cast<uint16_t *>(a.data());
    auto *b16 = reinterpret_cast<uint16_t *>(b.data());
    for (int64_t i = 0; i < (m + row0) * k; ++i)
      a16[i] = toBf16((int(next32() % 2001) - 1000) / 1000.0f);
    if (c.f32Activations) { // f32 with bits below bf16's; the reference
      // sees them rounded to nearest even, as the producer rounds them
      // (gathered: a16 holds the layout's rows, zeros for padding)
      af.resize(tokens * k);
      for (auto &x : af) x = (int(next32() % 2000001) - 1000000) / 1e6f;
      for (int64_t i = 0; i < m; ++i)
        for (int64_t x = 0; x < k; ++x)
          a16[i * k + x] = sortedToken[i] < 0 ? 0 : toBf16(af[sortedToken[i] * k + x]);
    }
    for (int64_t i = 0; i < experts * n * k; ++i)
      b16[i] = toBf16((int(next32() % 2001) - 1000) / 1000.0f);
  }
  // The reference's activations in layout order: gathered e4m3 rows (moe_up_fp8)
  // are rows sortedToken[i] of the tokens' (the first rows of a and sa, which
  // the kernel reads), zeros and token 0's scales for padding.
  std::vector<uint8_t> aL = a;
  std::vector<float> saL = sa;
  const bool threadLoaded = c.f32Activations || (c.fp8 && c.gatherRows);
  if (c.fp8 && c.gatherRows)
    for (int64_t i = 0; i < m; ++i) {
      const int64_t t = std::max<int32_t>(sortedToken[i], 0);
      for (int64_t x = 0; x < k; ++x)
        aL[i * k + x] = sortedToken[i] < 0 ? 0 : a[t * k + x];
      for (int64_t x = 0; x < kBlocks; ++x)
        saL[i * kBlocks + x] = sa[t * kBlocks + x];
    }
  std::string name = "kiln_check_gemm";
  std::string ptx = hopper::ptxModuleHeader() + hopper::emitGemmEntryPtx(c, name);
  std::vector<char> log(1 << 14, 0);
  CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *vals[] = {log.data(), reinterpret_cast<void *>(log.size())};
  CUmodule mod = nullptr;
  CUfunction fn = nullptr;
  if (!ok(drv->cuModuleLoadDataEx(&mod, ptx.c_str(), 2, opts, vals), "cuModuleLoadDataEx")) {
    std::fprintf(stderr, "%s\n", log.data());
    return res;
  }
  CUdeviceptr dA = 0, dB = 0, dSa = 0, dSb = 0, dOut = 0, dBlocks = 0, dRes = 0, dSorted = 0, dSbTable = 0;
  std::vector<float> residual(m * n);
  for (auto &x : residual) x = (int(next32() % 2001) - 1000) / 250.0f;
  bool good = ok(drv->cuModuleGetFunction(&fn, mod, name.c_str()), "cuModuleGetFunction") &&
              ok(drv->cuMemAlloc_v2(&dA, c.f32Activations ? af.size() * 4 : a.size()), "cuMemAlloc") &&
              ok(drv->cuMemAlloc_v2(&dB, b.size()), "cuMemAlloc") &&
              ok(drv->cuMemAlloc_v2(&dOut, m * n * 4), "cuMemAlloc") &&
              ok(drv->cuMemAlloc_v2(&dRes, m * n * 4), "cuMemAlloc") &&
              ok(drv->cuMemcpyHtoD_v2(dRes, residual.data(), m * n * 4), "cuMemcpyHtoD") &&
              ok(c.f32Activations ? drv->cuMemcpyHtoD_v2(dA, af.data(), af.size() * 4)
                                  : drv->cuMemcpyHtoD_v2(dA, a.data(), a.size()),
                 "cuMemcpyHtoD") &&
              ok(drv->cuMemcpyHtoD_v2(dB, b.data(), b.size()), "cuMemcpyHtoD") &&
              ok(drv->cuMemsetD8_v2(dOut, 0xFF, m * n * 4), "cuMemsetD8");
  if (good && c.gatherRows)
    good = ok(drv->cuMemAlloc_v2(&dSorted, sortedToken.size() * 4), "cuMemAlloc") &&
           ok(drv->cuMemcpyHtoD_v2(dSorted, sortedToken.data(), sortedToken.size() * 4), "cuMemcpyHtoD");
  if (good && c.grouped)
    good = ok(drv->cuMemAlloc_v2(&dBlocks, blockExpert.size() * 4), "cuMemAlloc") &&
           ok(drv->cuMemcpyHtoD_v2(dBlocks, blockExpert.data(), blockExpert.size() * 4),
              "cuMemcpyHtoD");
  if (good && c.fp8)
    good = ok(drv->cuMemAlloc_v2(&dSa, sa.size() * 4), "cuMemAlloc") &&
           ok(drv->cuMemAlloc_v2(&dSb, sb.size() * 4), "cuMemAlloc") &&
           ok(drv->cuMemcpyHtoD_v2(dSa, sa.data(), sa.size() * 4), "cuMemcpyHtoD") &&
           ok(drv->cuMemcpyHtoD_v2(dSb, sb.data(), sb.size() * 4), "cuMemcpyHtoD");
  // scaleTable: the experts' scales through a table of pointers, as a plan's
  // weight table gives them.
  std::vector<CUdeviceptr> sbTable(experts);
  for (int64_t e = 0; e < experts; ++e)
    sbTable[e] = dSb + e * nScaleRows * kBlocks * 4;
  if (good && c.scaleTable)
    good = ok(drv->cuMemAlloc_v2(&dSbTable, experts * 8), "cuMemAlloc") &&
           ok(drv->cuMemcpyHtoD_v2(dSbTable, sbTable.data(), experts * 8), "cuMemcpyHtoD");
  // Tensor maps: [rows, K] K-contiguous (grouped B: [E, N, K]), boxes of
  // blockK x (blockM | blockN) rows, 128B swizzle, rows past the end
  // zero-filled.
  CUtensorMap maps[3];
  // Swapped (decode), map 0 is the weights' and map 1 the activations'.
  // f32 activations: the weights' map only. Split gate/up: map 1 the gate
  // rows [0, N / 2) of B, map 2 the up rows [N / 2, N), boxes of
  // blockN / 2 rows (swapped: 8, the kernel's gate and up boxes).
  // Two outputs: map 1 W1 = rows [0, dualN1) of B, map 2 W2 = the rest.
  const bool twoMaps = c.splitGateUp || c.dualN1 > 0;
  for (int i = 0; good && i < (twoMaps ? 3 : 2); ++i) {
    const bool weights = i == 2 || ((i >= 1) != c.swapAB);
    if (threadLoaded && !weights)
      continue;
    const unsigned rank = weights && c.grouped ? 3 : 2;
    uint64_t rows = !weights        ? m + row0
                    : c.splitGateUp ? n / 2
                    : c.dualN1      ? (i == 2 ? n - c.dualN1 : c.dualN1)
                                    : n;
    unsigned long long dims[3] = {static_cast<unsigned long long>(k), rows,
                                  static_cast<unsigned long long>(experts)};
    unsigned long long strides[2] = {static_cast<unsigned long long>(k * eb),
                                     static_cast<unsigned long long>(n * k * eb)};
    const int64_t boxRows = !weights       ? (c.swapAB ? c.blockN : c.blockM)
                            : c.swapAB     ? (c.splitGateUp ? 8 : c.blockM)
                            : c.splitGateUp ? c.blockN / 2
                                           : c.blockN;
    unsigned int box[3] = {static_cast<unsigned int>(c.blockK), static_cast<unsigned int>(boxRows), 1};
    unsigned int estr[3] = {1, 1, 1};
    CUdeviceptr base = !weights ? dA : dB + (i == 2 ? (c.dualN1 ? c.dualN1 : n / 2) * k * eb : 0);
    uint64_t d64[3] = {dims[0], dims[1], dims[2]}, s64[2] = {strides[0], strides[1]};
    if (const char *why = hopper::checkTensorMapBox(rank, d64, s64, box, eb, base,
                                                    hopper::Swizzle::k128B)) {
      std::fprintf(stderr, "tensor map of %s: %s\n", weights ? "the weights" : "the activations", why);
      good = false;
      break;
    }
    good = ok(drv->cuTensorMapEncodeTiled(
                  &maps[i], c.fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                  rank, reinterpret_cast<void *>(base), dims, strides, box, estr,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
              "cuTensorMapEncodeTiled");
  }
  // setmaxnreg.inc waits until the CTA's pool has the registers: 128 x 40 +
  // 256 x 232 is exactly 384 x 168, so a rebalancing kernel must start at 168
  // (anything less would hang the math warpgroups).
  int regs = 0;
  good = good && ok(drv->cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, fn), "cuFuncGetAttribute");
  if (good && hopper::rebalancesRegisters(c) && regs != 168) {
    std::fprintf(stderr, "the kernel has %d registers, not 168: setmaxnreg would hang\n", regs);
    good = false;
  }
  good = good &&
         ok(drv->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                    static_cast<int>(hopper::gemmDynamicSharedBytes(c))),
            "cuFuncSetAttribute");
  // The maps by value (128-byte parameters), as __grid_constant__ would.
  unsigned long long m64 = m, row0_64 = row0;
  CUdeviceptr dSaRun = dSa + row0 * kBlocks * 4;
  // W2's (quantizeSwiGLU: the up rows') scales: rows from dualN1 / 128 (N / 256).
  CUdeviceptr dSb2 = dSb + ((c.quantizeSwiGLU ? n / 2 : c.dualN1) / 128) * kBlocks * 4;
  std::vector<void *> params{&maps[0], &maps[1]};
  if (twoMaps)
    params.push_back(&maps[2]);
  if (threadLoaded) { // (the weights' map(s), the activations' pointer, ...)
    params = {&maps[c.swapAB ? 0 : 1]};
    if (twoMaps)
      params.push_back(&maps[2]);
    params.push_back(&dA);
  }
  if (c.grouped)
    params.push_back(&dBlocks);
  if (c.gatherRows)
    params.push_back(&dSorted);
  if (c.fp8) {
    params.push_back(&dSaRun);
    params.push_back(c.scaleTable ? &dSbTable : &dSb);
    if (c.dualN1 || c.quantizeSwiGLU) // W2's scales, rows further down
      params.push_back(&dSb2);
  }
  params.push_back(&dOut);
  // Two outputs: out [M, dualN1] then out2 [M, N - dualN1] in one buffer.
  CUdeviceptr dOut2 = dOut + m * c.dualN1 * 4;
  if (c.dualN1)
    params.push_back(&dOut2);
  // Quantized: e4m3 out [M, N / 2] then its scales [M, N / 256] in one buffer.
  CUdeviceptr dOutScale = dOut + m * n / 2;
  if (c.quantizeSwiGLU)
    params.push_back(&dOutScale);
  if (c.epilogue == hopper::Epilogue::kResidual)
    params.push_back(&dRes);
  params.push_back(&m64);
  if (c.activationRow0)
    params.push_back(&row0_64);
  const int64_t tiles = c.swapAB ? (n / c.blockM) * ((m + c.blockN - 1) / c.blockN)
                                 : ((m + c.blockM - 1) / c.blockM) * (n / c.blockN);
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(tiles, sms));
  auto launch = [&] {
    return ok(drv->cuLaunchKernel(fn, grid, 1, 1, static_cast<unsigned>(hopper::gemmThreads(c)), 1, 1,
                                  static_cast<unsigned>(hopper::gemmDynamicSharedBytes(c)), nullptr,
                                  params.data(), nullptr),
              "cuLaunchKernel");
  };
  if (good && check) {
    good = launch() && ok(drv->cuCtxSynchronize(), "cuCtxSynchronize (the kernel)");
    // The output: [M, N] ([M, N / 2] under SwiGLU), f32 or bf16.
    const bool swiglu = c.epilogue == hopper::Epilogue::kSwiGLU;
    const int64_t outCols = swiglu ? n / 2 : n;
    std::vector<uint8_t> raw(c.quantizeSwiGLU ? m * outCols + 4 * m * (outCols / 128)
                                              : m * outCols * (c.bf16Out ? 2 : 4));
    good = good && ok(drv->cuMemcpyDtoH_v2(raw.data(), dOut, raw.size()), "cuMemcpyDtoH");
    auto outAt = [&](int64_t i, int64_t j) -> double {
      const auto *f = reinterpret_cast<const float *>(raw.data());
      if (c.dualN1)
        return j < c.dualN1 ? f[i * c.dualN1 + j] : f[m * c.dualN1 + i * (n - c.dualN1) + j - c.dualN1];
      if (c.bf16Out)
        return fromBf16(reinterpret_cast<const uint16_t *>(raw.data())[i * outCols + j]);
      return reinterpret_cast<const float *>(raw.data())[i * outCols + j];
    };
    std::vector<double> dots(n);
    double num = 0, den = 0;
    for (int64_t i = 0; good && i < m; ++i) {
      const int64_t e = expertOfRow(i);
      if (e < 0)
        continue; // an unused block: not written
      const uint8_t *be = b.data() + e * n * k * eb;
      const float *sbe = c.fp8 ? sb.data() + e * nScaleRows * kBlocks : nullptr;
      for (int64_t j = 0; j < n; ++j) {
        double &ref = dots[j];
        ref = 0;
        for (int64_t kb = 0; kb < k; kb += 128) {
          double chain = 0;
          for (int64_t x = kb; x < std::min(k, kb + 128); ++x)
            chain += c.fp8 ? fromE4m3(aL[(row0 + i) * k + x]) * fromE4m3(be[j * k + x])
                           : fromBf16(reinterpret_cast<uint16_t *>(aL.data())[(row0 + i) * k + x]) *
                                 fromBf16(reinterpret_cast<const uint16_t *>(be)[j * k + x]);
          ref += c.fp8 ? chain * saL[(row0 + i) * kBlocks + kb / 128] * sbe[(j / 128) * kBlocks + kb / 128]
                       : chain;
        }
      }
      if (c.quantizeSwiGLU) { // per 128 outputs: the scale, the e4m3 codes
        for (int64_t b0 = 0; b0 < outCols; b0 += 128) {
          double v[128], amax = 0;
          for (int64_t j = 0; j < 128; ++j) {
            double g = dots[b0 + j], u = dots[n / 2 + b0 + j];
            v[j] = g / (1 + std::exp(-g)) * u;
            amax = std::max(amax, std::fabs(v[j]));
          }
          const double sRef = std::max(amax, 1e-4) / 448;
          const float sGot = reinterpret_cast<const float *>(raw.data() + m * outCols)[i * (outCols / 128) + b0 / 128];
          if (!(std::fabs(sGot - sRef) <= 1e-5 * sRef))
            ++res.mismatches;
          for (int64_t j = 0; j < 128; ++j) {
            const uint8_t code = raw[i * outCols + b0 + j];
            double got = fromE4m3(code) * sGot, d = got - v[j];
            if (!std::isfinite(got))
              d = INFINITY;
            num += d * d;
            den += v[j] * v[j];
            res.maxErr = std::max(res.maxErr, std::fabs(d));
            res.mismatches += code != toE4m3(v[j] / sRef);
            ++res.values;
          }
        }
        continue;
      }
      for (int64_t j = 0; j < outCols; ++j) {
        double ref = dots[j];
        if (swiglu) { // rows 16 q + c (gate) and 16 q + 8 + c (up) give output 8 q + c;
          // split: rows j (gate) and N / 2 + j (up)
          double g = c.splitGateUp ? dots[j] : dots[(j / 8) * 16 + j % 8];
          double u = c.splitGateUp ? dots[n / 2 + j] : dots[(j / 8) * 16 + 8 + j % 8];
          ref = g / (1 + std::exp(-g)) * u;
        } else if (c.epilogue == hopper::Epilogue::kResidual) {
          ref += residual[i * n + j];
        }
        double got = outAt(i, j), d = got - ref;
        if (!std::isfinite(got))
          d = INFINITY;
        num += d * d;
        den += ref * ref;
        res.maxErr = std::max(res.maxErr, std::fabs(d));
      }
    }
    res.relL2 = std::sqrt(num / std::max(den, 1e-300));
    res.ran = good;
  } else if (good) {
    CUevent e0 = nullptr, e1 = nullptr;
    good = ok(drv->cuEventCreate(&e0, 0), "cuEventCreate") && ok(drv->cuEventCreate(&e1, 0), "cuEventCreate");
    for (int i = 0; good && i < 3; ++i)
      good = launch();
    std::vector<double> ms;
    for (int r = 0; good && r < reps; ++r) {
      float t = 0;
      good = ok(drv->cuEventRecord(e0, nullptr), "cuEventRecord") && launch() &&
             ok(drv->cuEventRecord(e1, nullptr), "cuEventRecord") &&
             ok(drv->cuEventSynchronize(e1), "cuEventSynchronize") &&
             ok(drv->cuEventElapsedTime(&t, e0, e1), "cuEventElapsedTime");
      ms.push_back(t);
    }
    if (good && !ms.empty()) {
      std::sort(ms.begin(), ms.end());
      res.medianMs = ms[ms.size() / 2];
      res.ran = true;
    }
    if (e0) drv->cuEventDestroy_v2(e0);
    if (e1) drv->cuEventDestroy_v2(e1);
  }
  for (CUdeviceptr p : {dA, dB, dSa, dSb, dOut, dBlocks, dRes, dSorted, dSbTable})
    if (p) drv->cuMemFree_v2(p);
  drv->cuModuleUnload(mod);
  return res;
}

GemmTileConfig config(int64_t n, int64_t k, int64_t bm, int64_t bn, bool fp8,
                      bool grouped = false, bool swapAB = false) {
  // The heuristic's stages for this shape, at the tile given.
  GemmTileConfig c = hopper::chooseGemmTile(128, n, k, fp8, grouped, 1);
  c.swapAB = swapAB;
  c.blockM = bm;
  c.blockN = bn;
  while (c.stages > 2 && !hopper::checkGemmTileConfig(c).empty())
    --c.stages;
  return c;
}

} // namespace

int main() {
  auto d = GetDriver();
  if (!d.ok()) {
    std::printf("kiln-hopper-check: skipped: %s\n", std::string(d.status().message()).c_str());
    return 77;
  }
  drv = *d;
  CUdevice dev;
  CUcontext ctx;
  int major = 0, sms = 0;
  if (!ok(drv->cuDeviceGet(&dev, 0), "cuDeviceGet") ||
      !ok(drv->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute") ||
      !ok(drv->cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev), "cuDeviceGetAttribute") ||
      !ok(drv->cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain") ||
      !ok(drv->cuCtxSetCurrent(ctx), "cuCtxSetCurrent"))
    return 1;
  if (major != 9) {
    std::printf("kiln-hopper-check: skipped: compute capability %d.x is not sm_90\n", major);
    return 77;
  }
  int status = 0;
  std::printf("%-42s %6s %10s %10s %6s\n", "check (N x K, tile, stages)", "M", "rel_l2", "max_err", "result");
  struct Check { GemmTileConfig c; double tol; };
  std::vector<Check> checks{
      {config(256, 512, 128, 128, false), 1e-4}, {config(256, 512, 64, 128, false), 1e-4},
      {config(512, 256, 128, 256, false), 1e-4}, {config(448, 320, 128, 112, false), 1e-4},
      {config(64, 64, 64, 8, false), 1e-4},      {config(256, 512, 128, 128, true), 2e-3},
      {config(256, 384, 64, 64, true), 2e-3},    {config(32, 128, 64, 16, true), 2e-3}};
  // Grouped: 3 experts, row blocks cycling through -1 (unused), 0, 1, 2.
  checks.push_back({config(256, 512, 128, 128, false, true), 1e-4});
  checks.push_back({config(256, 384, 64, 128, true, true), 2e-3});
  // Decode's swapped form.
  checks.push_back({config(256, 512, 64, 8, false, false, true), 1e-4});
  checks.push_back({config(256, 512, 128, 32, false, false, true), 1e-4});
  checks.push_back({config(256, 384, 64, 16, true, false, true), 2e-3});
  // Epilogues: residual add, SwiGLU over interleaved gate/up rows, bf16
  // stores (bf16 rounding: 2^-9 relative).
  auto withEpilogue = [](GemmTileConfig c, hopper::Epilogue e, bool bf16Out) {
    c.epilogue = e;
    c.bf16Out = bf16Out;
    return c;
  };
  checks.push_back({withEpilogue(config(256, 512, 128, 128, false), hopper::Epilogue::kResidual, false), 1e-4});
  checks.push_back({withEpilogue(config(256, 512, 128, 128, true), hopper::Epilogue::kResidual, true), 5e-3});
  checks.push_back({withEpilogue(config(512, 256, 128, 128, false), hopper::Epilogue::kSwiGLU, true), 5e-3});
  checks.push_back({withEpilogue(config(256, 384, 64, 64, true), hopper::Epilogue::kSwiGLU, false), 2e-3});
  // Plans' form while GPU activations are f32: converted by the producer
  // (rows past M zero, the reference rounds to bf16 as it does).
  auto f32Act = [](GemmTileConfig c) {
    c.f32Activations = true;
    return c;
  };
  checks.push_back({f32Act(config(256, 512, 128, 128, false)), 1e-4});
  checks.push_back({f32Act(config(256, 512, 64, 64, false)), 1e-4});
  checks.push_back({f32Act(withEpilogue(config(256, 512, 128, 128, false), hopper::Epilogue::kResidual, false)), 1e-4});
  checks.push_back({f32Act(config(256, 512, 64, 8, false, false, true)), 1e-4});
  checks.push_back({f32Act(config(256, 512, 64, 32, false, false, true)), 1e-4});
  // SwiGLU over separate gate and up weights (two maps), TMA or f32 activations.
  auto split = [](GemmTileConfig c) {
    c.epilogue = hopper::Epilogue::kSwiGLU;
    c.splitGateUp = true;
    return c;
  };
  checks.push_back({split(config(512, 256, 128, 128, false)), 1e-4});
  checks.push_back({f32Act(split(config(512, 256, 64, 32, false))), 1e-4});
  // Plans' e4m3 form: the activations' map offset by the run's first row.
  auto row0 = [](GemmTileConfig c) {
    c.activationRow0 = true;
    return c;
  };
  checks.push_back({row0(config(256, 512, 128, 128, true)), 2e-3});
  checks.push_back({row0(withEpilogue(config(256, 384, 64, 64, true), hopper::Epilogue::kResidual, false)), 2e-3});
  checks.push_back({row0(config(256, 384, 64, 16, true, false, true)), 2e-3});
  // Two outputs (gemm_dual), TMA and f32 activations, swapped for decode.
  auto dual = [](GemmTileConfig c, int64_t n1) {
    c.dualN1 = n1;
    return c;
  };
  checks.push_back({dual(config(320, 256, 128, 64, false), 192), 1e-4});
  checks.push_back({f32Act(dual(config(320, 256, 64, 64, false), 128)), 1e-4});
  checks.push_back({f32Act(dual(config(320, 256, 64, 8, false, false, true), 192)), 1e-4});
  // The plans' experts' down projection: grouped over f32 activations in
  // layout order, prefill (64-row blocks) and decode (swapped, 8-row).
  checks.push_back({f32Act(config(256, 512, 64, 64, false, true)), 1e-4});
  checks.push_back({f32Act(config(256, 512, 64, 8, false, true, true)), 1e-4});
  checks.push_back({row0(dual(config(384, 256, 128, 64, true), 256)), 2e-3});
  checks.push_back({row0(dual(config(384, 256, 64, 16, true, false, true), 256)), 2e-3});
  // The experts' decode form: grouped and swapped, 8- and 16-row blocks.
  checks.push_back({config(256, 512, 64, 8, false, true, true), 1e-4});
  checks.push_back({config(256, 384, 64, 16, true, true, true), 2e-3});
  // Decode's SwiGLU swapped (8-row gate and up boxes), TMA and f32
  // activations; the plans' experts' up projection (moe_up): tokens
  // gathered through the layout, gate and up tables, prefill and decode.
  auto gather = [](GemmTileConfig c) {
    c.gatherRows = true;
    return c;
  };
  checks.push_back({split(config(512, 256, 64, 16, false, false, true)), 1e-4});
  checks.push_back({f32Act(split(config(512, 256, 64, 8, false, false, true))), 1e-4});
  checks.push_back({gather(f32Act(split(config(256, 512, 64, 64, false, true)))), 1e-4});
  checks.push_back({gather(f32Act(split(config(256, 512, 128, 128, false, true)))), 1e-4});
  checks.push_back({gather(f32Act(split(config(256, 512, 64, 8, false, true, true)))), 1e-4});
  checks.push_back({gather(f32Act(split(config(256, 512, 64, 32, false, true, true)))), 1e-4});
  // FP8 SwiGLU with the output quantized per 1 x 128 (gemm_swiglu_fp8):
  // the dequantized values within e4m3's rounding (2^-4 relative at most),
  // the scales within 1e-5 and the codes the float64 reference's but for
  // rounding ties (r.mismatches).
  auto quant = [](GemmTileConfig c) {
    c.epilogue = hopper::Epilogue::kSwiGLU;
    c.splitGateUp = c.quantizeSwiGLU = true;
    while (c.stages > 2 && !hopper::checkGemmTileConfig(c).empty())
      --c.stages;
    return c;
  };
  checks.push_back({quant(config(512, 256, 64, 256, true)), 4e-2});
  // The plans' FP8 experts' down projection: weight scales through a table.
  auto table = [](GemmTileConfig c) {
    c.scaleTable = true;
    return c;
  };
  checks.push_back({table(config(256, 384, 64, 128, true, true)), 2e-3});
  checks.push_back({table(config(256, 384, 64, 16, true, true, true)), 2e-3});
  // The plans' FP8 experts' up projection (prefill): e4m3 tokens gathered by
  // the producer, gate and up scales through tables, the quantized SwiGLU.
  checks.push_back({gather(table(quant(config(512, 256, 64, 256, true, true)))), 4e-2});
  checks.push_back({gather(table(quant(config(256, 384, 64, 256, true, true)))), 4e-2});
  checks.push_back({row0(quant(config(256, 384, 64, 256, true))), 4e-2});
  for (const Check &ch : checks) {
    std::string why = hopper::checkGemmTileConfig(ch.c);
    if (!why.empty()) {
      std::printf("bad check config: %s\n", why.c_str());
      return 1;
    }
    for (int64_t m : {1, 64, 100, 128, 257}) {
      const int64_t block = ch.c.swapAB ? ch.c.blockN : ch.c.blockM;
      if (ch.c.grouped)
        m = ((m + block - 1) / block + 3) * block; // whole blocks, >= 4
      Result r = run(ch.c, m, /*check=*/true, 0, sms, ch.c.grouped ? 3 : 1);
      bool pass = r.ran && r.relL2 <= ch.tol && r.mismatches <= std::max<int64_t>(2, r.values / 1000);
      status |= pass ? 0 : 1;
      char label[80];
      std::snprintf(label, sizeof label, "%s%s%s%s%s %lldx%lld %lldx%lld s%lld",
                    ch.c.f32Activations ? "f32-act " : ch.c.activationRow0 ? "row0 " : "",
                    ch.c.dualN1 ? "dual " : "", ch.c.gatherRows ? "gather " : "",
                    ch.c.quantizeSwiGLU                          ? "swiglu-quant "
                    : ch.c.splitGateUp && ch.c.swapAB              ? "split swiglu sw "
                    : ch.c.splitGateUp                           ? "split swiglu "
                    : ch.c.epilogue == hopper::Epilogue::kResidual ? "residual "
                    : ch.c.epilogue == hopper::Epilogue::kSwiGLU ? "swiglu "
                    : ch.c.grouped && ch.c.swapAB               ? "grouped swapped "
                    : ch.c.grouped              ? "grouped "
                    : ch.c.swapAB               ? "swapped "
                                                : "",
                    ch.c.fp8 ? "e4m3" : "bf16",
                    (long long)ch.c.n, (long long)ch.c.k, (long long)ch.c.blockM,
                    (long long)ch.c.blockN, (long long)ch.c.stages);
      std::printf("%-42s %6lld %10.2e %10.2e %6s\n", label, (long long)m, r.relL2, r.maxErr,
                  pass ? "PASS" : "FAIL");
    }
  }
  // DeepSeek-V3's dense projection shapes (DeepGEMM's table): N x K.
  const int64_t shapes[][2] = {{2112, 7168}, {24576, 1536}, {32768, 512},
                               {7168, 16384}, {4096, 7168}, {7168, 2048}};
  std::printf("\n%-6s %6s %6s %6s %-10s %10s %8s %8s\n", "dtype", "M", "N", "K", "tile", "ms", "TFLOPS", "GB/s");
  for (bool fp8 : {false, true})
    for (int64_t m : {1, 16, 64, 128, 4096})
      for (const auto &s : shapes) {
        GemmTileConfig c = hopper::chooseGemmTile(m, s[0], s[1], fp8, false, sms);
        Result r = run(c, m, /*check=*/false, 20, sms);
        if (!r.ran) {
          status = 1;
          continue;
        }
        double flops = 2.0 * m * s[0] * s[1];
        double bytes = double(m + s[0]) * s[1] * (fp8 ? 1 : 2) + 4.0 * m * s[0];
        char tile[32];
        std::snprintf(tile, sizeof tile, "%lldx%lld%s", (long long)c.blockM, (long long)c.blockN,
                      c.swapAB ? "sw" : "");
        std::printf("%-6s %6lld %6lld %6lld %-10s %10.4f %8.1f %8.0f\n", fp8 ? "e4m3" : "bf16",
                    (long long)m, (long long)s[0], (long long)s[1], tile, r.medianMs,
                    flops / (r.medianMs * 1e9), bytes / (r.medianMs * 1e6));
      }
  // The quantizing FP8 SwiGLU at DeepSeek-V3's dense MLP (gate and up
  // 18432 x 7168 each, plans' gemm_swiglu_fp8).
  for (int64_t m : {1, 64, 128, 4096}) {
    GemmTileConfig c = config(36864, 7168, 64, 256, true);
    c.epilogue = hopper::Epilogue::kSwiGLU;
    c.splitGateUp = c.quantizeSwiGLU = true;
    while (c.stages > 2 && !hopper::checkGemmTileConfig(c).empty())
      --c.stages;
    Result r = run(c, m, /*check=*/false, 20, sms);
    if (!r.ran) {
      status = 1;
      continue;
    }
    double flops = 2.0 * m * 36864 * 7168, bytes = double(m + 36864) * 7168 + m * 18432.0;
    std::printf("%-6s %6lld %6lld %6lld %-10s %10.4f %8.1f %8.0f\n", "e4m3q", (long long)m, 36864LL, 7168LL,
                "64x256", r.medianMs, flops / (r.medianMs * 1e9), bytes / (r.medianMs * 1e6));
  }
  // The plans' f32-activation form at the same shapes (the producer's
  // conversion against TMA of bf16 activations, above).
  for (int64_t m : {1, 64, 4096})
    for (const auto &s : shapes) {
      GemmTileConfig c = hopper::chooseGemmTile(m, s[0], s[1], false, false, sms);
      c.f32Activations = true;
      Result r = run(c, m, /*check=*/false, 20, sms);
      if (!r.ran) {
        status = 1;
        continue;
      }
      double flops = 2.0 * m * s[0] * s[1];
      double bytes = 4.0 * m * s[1] + 2.0 * s[0] * s[1] + 4.0 * m * s[0];
      char tile[32];
      std::snprintf(tile, sizeof tile, "%lldx%lld%s", (long long)c.blockM, (long long)c.blockN,
                    c.swapAB ? "sw" : "");
      std::printf("%-6s %6lld %6lld %6lld %-10s %10.4f %8.1f %8.0f\n", "f32a", (long long)m,
                  (long long)s[0], (long long)s[1], tile, r.medianMs, flops / (r.medianMs * 1e9),
                  bytes / (r.medianMs * 1e6));
    }
  // The experts' grouped GEMMs over the contiguous layout (DeepGEMM's table):
  // groups x rows per group, N x K = DeepSeek-V3's gate+up and down.
  std::printf("\n%-7s %8s %6s %6s %-10s %10s %8s\n", "dtype", "groups", "N", "K", "tile", "ms", "TFLOPS");
  const int64_t grouped[][3] = {{4, 8192, 4096}, {4, 8192, 7168}, {8, 4096, 4096}, {8, 4096, 7168}};
  // Forms: bf16 and e4m3 by TMA, and the plans' moe_up at the gate+up shape
  // (f32 tokens gathered through the layout, separate gate and up tables,
  // SwiGLU).
  // and the FP8 one (e4m3 tokens gathered by the producer, the quantized
  // SwiGLU, weight scales through tables).
  for (const char *form : {"bf16", "e4m3", "f32a-up", "e4m3-up"})
    for (const auto &g : grouped) {
      const std::string f = form;
      const bool fp8 = f[0] == 'e', up = f.size() > 4 && f.substr(f.size() - 3) == "-up";
      const int64_t e = g[0], m = g[0] * g[1], n = g[2], k = n == 4096 ? 7168 : 2048;
      if (up && n != 4096)
        continue;
      GemmTileConfig c = hopper::chooseGemmTile(m, n, k, fp8, true, sms);
      if (up && fp8) {
        c = config(n, k, 64, 256, true, true);
        c.gatherRows = c.scaleTable = c.quantizeSwiGLU = true;
      }
      if (up) {
        c.f32Activations = !fp8;
        c.gatherRows = c.splitGateUp = true;
        c.epilogue = hopper::Epilogue::kSwiGLU;
        while (c.stages > 2 && !hopper::checkGemmTileConfig(c).empty())
          --c.stages;
      }
      Result r = run(c, m, /*check=*/false, 10, sms, e);
      if (!r.ran) {
        status = 1;
        continue;
      }
      // Blocks of expert -1 are skipped: count the used rows only.
      int64_t used = 0;
      for (int64_t b = 0; b < m / c.blockM; ++b)
        used += layoutExpert(b, e) >= 0 ? c.blockM : 0;
      char groups[32];
      std::snprintf(groups, sizeof groups, "%lldx%lld", (long long)e, (long long)g[1]);
      std::printf("%-7s %8s %6lld %6lld %-10s %10.4f %8.1f\n", form, groups, (long long)n, (long long)k,
                  (std::to_string(c.blockM) + "x" + std::to_string(c.blockN)).c_str(), r.medianMs,
                  2.0 * used * n * k / (r.medianMs * 1e9));
    }
  // The experts' decode form: 64 experts, 64 token blocks of 8 rows (one per
  // expert but the unused one): the weights of the used experts stream once.
  std::printf("\n%-6s %8s %6s %6s %-10s %10s %8s\n", "dtype", "experts", "N", "K", "tile", "ms", "GB/s");
  for (bool fp8 : {false, true})
    for (const auto &nk : {std::array<int64_t, 2>{4096, 7168}, std::array<int64_t, 2>{7168, 2048}}) {
      const int64_t e = 64, blocks = 64;
      GemmTileConfig c = config(nk[0], nk[1], 64, 8, fp8, true, true);
      Result r = run(c, blocks * c.blockN, /*check=*/false, 10, sms, e);
      if (!r.ran) {
        status = 1;
        continue;
      }
      std::vector<bool> used(e, false);
      for (int64_t b = 0; b < blocks; ++b) {
        int64_t x = layoutExpert(b, e);
        if (x >= 0)
          used[x] = true;
      }
      double bytes = double(std::count(used.begin(), used.end(), true)) * nk[0] * nk[1] * (fp8 ? 1 : 2);
      std::printf("%-6s %8lld %6lld %6lld %-10s %10.4f %8.0f\n", fp8 ? "e4m3" : "bf16", (long long)e,
                  (long long)nk[0], (long long)nk[1], "64x8sw", r.medianMs, bytes / (r.medianMs * 1e6));
    }
  drv->cuDevicePrimaryCtxRelease_v2(dev);
  return status;
}
