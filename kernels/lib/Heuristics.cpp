//===- Heuristics.cpp - Tile configuration per shape ----------------------===//
#include "kiln/Kernels/Heuristics.h"

#include <algorithm>

namespace kiln::kernels {

int64_t chooseGemmTileN(int64_t m, int64_t n, int64_t /*k*/,
                        int64_t minPrograms) {
  for (int64_t t : {64, 32, 16, 8, 4, 2, 1}) {
    if (n % t != 0)
      continue;
    if (t > 1 && m * (n / t) < minPrograms)
      continue;
    return t;
  }
  return 1;
}

int64_t chooseMoEBlockM(int64_t slots, int64_t experts) {
  int64_t perExpert = (slots + experts - 1) / experts;
  int64_t bm = 8;
  while (bm < perExpert && bm < 64)
    bm *= 2;
  return bm;
}

bool preferNaiveMLA(int64_t seq, int64_t kvLen, int64_t heads, int64_t dNope,
                    int64_t dRope, int64_t dV, int64_t rank) {
  double s = seq, t = kvLen, h = heads;
  double absorbed = s * h * (rank * double(dNope + dV) + t * (2.0 * rank + dRope));
  double naive = t * h * rank * double(dNope + dV) + s * h * t * (dNope + dRope + dV);
  return naive < absorbed;
}

int64_t chooseElementwiseBlock(int64_t total) {
  // Large enough to amortize the per-program overhead on the CPU, small
  // enough to keep every GPU thread busy on typical activations.
  return total >= (1 << 16) ? 256 : 64;
}

int64_t chooseGpuBlockSize(int64_t programs) {
  return programs >= 4096 ? 256 : (programs >= 256 ? 128 : 32);
}

int64_t chooseGpuLaunchBlock(int64_t programs) {
  for (int64_t block : {256, 128, 64})
    if ((programs + block - 1) / block >= 2 * kGpuTargetSMs)
      return block;
  return 32;
}

} // namespace kiln::kernels
