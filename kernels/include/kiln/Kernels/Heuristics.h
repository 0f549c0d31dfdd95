//===- Heuristics.h - Tile configuration per shape --------------*- C++ -*-===//
//
// Tile sizes are chosen once, at the kernel level, from the static shape, and
// carried on the kernel op so every target's lowering uses them as they are.
// docs/kernels.md documents the heuristics.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_KERNELS_HEURISTICS_H
#define KILN_KERNELS_HEURISTICS_H

#include <cstdint>

namespace kiln::kernels {

/// Columns of the output each GEMM program computes: the largest of
/// 64, 32, 16, 8, 4, 2, 1 that divides N (so no program is partial), capped
/// so that M * ceil(N / tile) still gives at least `minPrograms` programs.
int64_t chooseGemmTileN(int64_t m, int64_t n, int64_t k,
                        int64_t minPrograms = 64);

/// Rows per block of the experts' contiguous layout (the grouped GEMMs'
/// M tile, and the alignment of each expert's segment): the expected rows
/// per expert, `slots` / `experts`, rounded up to a power of two and
/// clamped to [8, 64], so decode pads little and prefill gets full blocks.
int64_t chooseMoEBlockM(int64_t slots, int64_t experts);

/// MLA form for a launch of `seq` queries over `kvLen` keys per batch:
/// true for the naive form (kv_b applied to every cached latent row by a
/// GEMM, then attention with d_nope + d_rope wide keys), false for the
/// absorbed form (W_UK folded into each query, attention over the latent,
/// W_UV after). Compares the multiply-adds of the two:
///   absorbed = seq * heads * (rank * (dn + dv) + kvLen * (2 * rank + dr))
///   naive    = kvLen * heads * rank * (dn + dv) + seq * heads * kvLen * (dn + dr + dv)
/// so decode (seq 1) takes the absorbed form and long prefills the naive.
bool preferNaiveMLA(int64_t seq, int64_t kvLen, int64_t heads, int64_t dNope,
                    int64_t dRope, int64_t dV, int64_t rank);

/// Elements per program of an element-wise kernel.
int64_t chooseElementwiseBlock(int64_t total);

/// Threads per GPU block for a grid of `programs` programs.
int64_t chooseGpuBlockSize(int64_t programs);

/// SMs the launch geometry aims to fill (an H100/H200 has 132).
inline constexpr int64_t kGpuTargetSMs = 132;

/// Threads per block for one launch of `programs` programs (one program per
/// thread): the largest of 256, 128, 64 and 32 that still gives every SM two
/// blocks, so that a decode launch of a few hundred programs spreads over
/// the GPU instead of filling one or two blocks; 32 (a warp) at the least.
int64_t chooseGpuLaunchBlock(int64_t programs);

} // namespace kiln::kernels

#endif // KILN_KERNELS_HEURISTICS_H
