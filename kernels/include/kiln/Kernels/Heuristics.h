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

/// Elements per program of an element-wise kernel.
int64_t chooseElementwiseBlock(int64_t total);

/// Threads per GPU block for a grid of `programs` programs.
int64_t chooseGpuBlockSize(int64_t programs);

} // namespace kiln::kernels

#endif // KILN_KERNELS_HEURISTICS_H
