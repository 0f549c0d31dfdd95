//===- GpuRowKernels.cpp - cooperative row kernels for sm_90a -------------===//
//
// PTX text for GpuRowKernels.h. The MoE combine: per token, every thread
// reads the token's slots and weights (broadcast loads), then sums its
// 16-byte chunks of the slot rows. RMSNorm: per row, each thread sums the
// squares of its 16-byte chunks (chunk c = thread + 256 i), the warp
// reduces them by butterfly shuffles, lane 0 of each warp leaves its sum in
// shared memory, and after a barrier every thread adds the 8 warp sums in
// the same order, so all agree on the row's scale; a second barrier frees
// the partials for the next row. Then each thread scales its chunks and
// stores them 16 bytes at a time.
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/GpuRowKernels.h"

#include <cstring>
#include <sstream>

namespace kiln::gpurow {

namespace {

std::string f32Hex(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  std::ostringstream o;
  o << "0f";
  o.width(8);
  o.fill('0');
  o << std::hex << std::uppercase << u;
  return o.str();
}

// Quantizes the chunk %f2..%f5 of row %r2 at column %r9 (a multiple of 4)
// per 1 x 128 block: the warp's 32 chunks are one block (cols a multiple of
// 128, the block's threads in one pass), amax by five butterfly shuffles, s
// = max(amax, 1e-4) / 448 and v / s correctly rounded, e4m3 nearest even
// and saturated, the four codes in one 32-bit store to q (%rd12) and, from
// lane 0 (%p3), the scale to scales (%rd13). Temporaries %f17-%f22, %h0-1,
// %r13-%r15, %rd14-%rd15.
void quantizeChunk(std::ostringstream &o, int64_t cols) {
  o << "  abs.f32 %f21, %f2;\n  abs.f32 %f22, %f3;\n"
    << "  max.f32 %f21, %f21, %f22;\n  abs.f32 %f22, %f4;\n"
    << "  max.f32 %f21, %f21, %f22;\n  abs.f32 %f22, %f5;\n"
    << "  max.f32 %f21, %f21, %f22;\n";
  for (int sh : {16, 8, 4, 2, 1})
    o << "  shfl.sync.bfly.b32 %f22, %f21, " << sh << ", 31, -1;\n"
      << "  max.f32 %f21, %f21, %f22;\n";
  o << "  max.f32 %f21, %f21, 0f38D1B717;\n"
    << "  div.rn.f32 %f21, %f21, 0f43E00000;\n";
  for (int e = 0; e < 4; ++e)
    o << "  div.rn.f32 %f" << 17 + e << ", %f" << 2 + e << ", %f21;\n";
  o << "  cvt.rn.satfinite.e4m3x2.f32 %h0, %f18, %f17;\n"
    << "  cvt.rn.satfinite.e4m3x2.f32 %h1, %f20, %f19;\n"
    << "  mov.b32 %r14, {%h0, %h1};\n"
    << "  mul.wide.u32 %rd14, %r2, " << cols << ";\n"
    << "  cvt.u64.u32 %rd15, %r9;\n  add.s64 %rd14, %rd14, %rd15;\n"
    << "  add.s64 %rd14, %rd12, %rd14;\n  st.global.b32 [%rd14], %r14;\n"
    << "  mul.lo.u32 %r15, %r2, " << cols / 128 << ";\n"
    << "  shr.u32 %r13, %r9, 7;\n  add.u32 %r15, %r15, %r13;\n"
    << "  mul.wide.u32 %rd15, %r15, 4;\n  add.s64 %rd15, %rd13, %rd15;\n"
    << "  @%p3 st.global.f32 [%rd15], %f21;\n";
}

// The persistent loop over rows shared by the row kernels: %r1 the thread,
// block %r2 takes rows %r2, %r2 + %r3 (the grid), ... below %r5 (from the
// u64 rows parameter already in `rowsReg`). beginRows sets them up (the
// kernel's per-block set-up follows), rowHead opens a row's work and
// endRows closes it, and the entry.
void beginRows(std::ostringstream &o, const char *rowsReg) {
  o << "  cvt.u32.u64 %r5, " << rowsReg << ";\n"
    << "  mov.u32 %r1, %tid.x;\n  mov.u32 %r2, %ctaid.x;\n"
    << "  mov.u32 %r3, %nctaid.x;\n";
}
void rowHead(std::ostringstream &o, const std::string &name) {
  o << name << "_row:\n"
    << "  setp.ge.u32 %p1, %r2, %r5;\n  @%p1 bra " << name << "_end;\n";
}
void endRows(std::ostringstream &o, const std::string &name) {
  o << "  add.u32 %r2, %r2, %r3;\n  bra " << name << "_row;\n"
    << name << "_end:\n  ret;\n}\n\n";
}

// A loop `loop` over the thread's 16-byte chunks of a row of `cols` floats:
// %r9 = 4 %r1, then + 4 kRowThreads, below cols.
void beginChunks(std::ostringstream &o, const std::string &name,
                 const char *loop, int64_t cols) {
  o << "  shl.b32 %r9, %r1, 2;\n"
    << name << "_" << loop << ":\n"
    << "  setp.ge.u32 %p2, %r9, " << cols << ";\n  @%p2 bra " << name << "_"
    << loop << "_done;\n";
}
void endChunks(std::ostringstream &o, const std::string &name,
               const char *loop) {
  o << "  add.u32 %r9, %r9, " << 4 * kRowThreads << ";\n  bra " << name << "_"
    << loop << ";\n"
    << name << "_" << loop << "_done:\n";
}

} // namespace

std::string checkRmsNormConfig(const RmsNormConfig &c) {
  if (c.cols <= 0 || c.cols % 4 != 0)
    return "row width " + std::to_string(c.cols) +
           " is not a positive multiple of 4 (16-byte chunks)";
  if (c.cols * 4 > (int64_t(1) << 31))
    return "row of " + std::to_string(c.cols) + " floats too wide";
  if (c.quantize && c.cols % 128 != 0)
    return "row width " + std::to_string(c.cols) +
           " is not whole 128-column quantization blocks";
  return "";
}

std::string emitRmsNormRowPtx(const RmsNormConfig &c, const std::string &name) {
  const int64_t warps = kRowThreads / 32;
  std::ostringstream o;
  o << "// " << name << ": RMSNorm of f32 rows of " << c.cols << ", "
    << (c.bf16Weight ? "bf16" : "f32") << " weight, a block of " << kRowThreads
    << " threads per row\n"
    << ".visible .entry " << name << "(\n  .param .u64 " << name
    << "_x,\n  .param .u64 " << name << "_w,\n  .param .u64 " << name
    << "_out,\n"
    << (c.quantize ? "  .param .u64 " + name + "_q,\n  .param .u64 " + name +
                         "_scale,\n"
                   : std::string())
    << "  .param .u64 " << name << "_rows)\n"
    << ".maxntid " << kRowThreads << ", 1, 1\n{\n"
    << "  .reg .pred %p<4>;\n  .reg .b32 %r<16>;\n  .reg .b64 %rd<16>;\n"
    << "  .reg .f32 %f<24>;\n  .reg .b16 %h<2>;\n"
    << "  .shared .align 16 .f32 " << name << "_part[" << warps << "];\n"
    << "  ld.param.u64 %rd1, [" << name << "_x];\n"
    << "  ld.param.u64 %rd2, [" << name << "_w];\n"
    << "  ld.param.u64 %rd3, [" << name << "_out];\n"
    << "  ld.param.u64 %rd4, [" << name << "_rows];\n"
    << (c.quantize ? "  ld.param.u64 %rd12, [" + name + "_q];\n" +
                         "  ld.param.u64 %rd13, [" + name + "_scale];\n"
                   : std::string());
  beginRows(o, "%rd4");
  o << "  and.b32 %r6, %r1, 31;\n  shr.u32 %r7, %r1, 5;\n"
    << "  mov.u32 %r8, " << name << "_part;\n"
    << "  shl.b32 %r10, %r7, 2;\n  add.u32 %r10, %r8, %r10;\n"
    << "  setp.eq.u32 %p3, %r6, 0;\n";
  rowHead(o, name);
  o << "  mul.wide.u32 %rd5, %r2, " << 4 * c.cols << ";\n"
    << "  add.s64 %rd6, %rd1, %rd5;\n  add.s64 %rd7, %rd3, %rd5;\n"
    << "  mov.f32 %f1, 0f00000000;\n";
  // Sum of squares of the thread's chunks.
  beginChunks(o, name, "sq", c.cols);
  o << "  mul.wide.u32 %rd8, %r9, 4;\n  add.s64 %rd9, %rd6, %rd8;\n"
    << "  ld.global.v4.f32 {%f2, %f3, %f4, %f5}, [%rd9];\n"
    << "  fma.rn.f32 %f1, %f2, %f2, %f1;\n  fma.rn.f32 %f1, %f3, %f3, %f1;\n"
    << "  fma.rn.f32 %f1, %f4, %f4, %f1;\n  fma.rn.f32 %f1, %f5, %f5, %f1;\n";
  endChunks(o, name, "sq");
  for (int sh : {16, 8, 4, 2, 1})
    o << "  shfl.sync.bfly.b32 %f6, %f1, " << sh << ", 31, -1;\n"
      << "  add.f32 %f1, %f1, %f6;\n";
  o << "  @%p3 st.shared.f32 [%r10], %f1;\n  bar.sync 0;\n"
    << "  ld.shared.v4.f32 {%f7, %f8, %f9, %f10}, [%r8];\n"
    << "  ld.shared.v4.f32 {%f11, %f12, %f13, %f14}, [%r8+16];\n"
    << "  add.f32 %f15, %f7, %f8;\n  add.f32 %f15, %f15, %f9;\n"
    << "  add.f32 %f15, %f15, %f10;\n  add.f32 %f15, %f15, %f11;\n"
    << "  add.f32 %f15, %f15, %f12;\n  add.f32 %f15, %f15, %f13;\n"
    << "  add.f32 %f15, %f15, %f14;\n  bar.sync 0;\n"
    // 1 / sqrt(sum / cols + eps), each step correctly rounded.
    << "  div.rn.f32 %f16, %f15, " << f32Hex(static_cast<float>(c.cols))
    << ";\n  add.rn.f32 %f16, %f16, " << f32Hex(c.eps) << ";\n"
    << "  sqrt.rn.f32 %f16, %f16;\n  rcp.rn.f32 %f16, %f16;\n";
  beginChunks(o, name, "wr", c.cols);
  o << "  mul.wide.u32 %rd8, %r9, 4;\n  add.s64 %rd9, %rd6, %rd8;\n"
    << "  add.s64 %rd10, %rd7, %rd8;\n"
    << "  ld.global.v4.f32 {%f2, %f3, %f4, %f5}, [%rd9];\n";
  if (c.bf16Weight)
    o << "  mul.wide.u32 %rd11, %r9, 2;\n  add.s64 %rd11, %rd2, %rd11;\n"
      << "  ld.global.nc.v2.b32 {%r11, %r12}, [%rd11];\n"
      << "  shl.b32 %r13, %r11, 16;\n  mov.b32 %f17, %r13;\n"
      << "  and.b32 %r13, %r11, -65536;\n  mov.b32 %f18, %r13;\n"
      << "  shl.b32 %r13, %r12, 16;\n  mov.b32 %f19, %r13;\n"
      << "  and.b32 %r13, %r12, -65536;\n  mov.b32 %f20, %r13;\n";
  else
    o << "  add.s64 %rd11, %rd2, %rd8;\n"
      << "  ld.global.nc.v4.f32 {%f17, %f18, %f19, %f20}, [%rd11];\n";
  for (int e = 0; e < 4; ++e)
    o << "  mul.rn.f32 %f" << 2 + e << ", %f" << 2 + e << ", %f16;\n"
      << "  mul.rn.f32 %f" << 2 + e << ", %f" << 2 + e << ", %f" << 17 + e
      << ";\n";
  o << "  st.global.v4.f32 [%rd10], {%f2, %f3, %f4, %f5};\n";
  if (c.quantize)
    quantizeChunk(o, c.cols);
  endChunks(o, name, "wr");
  endRows(o, name);
  return o.str();
}

std::string checkMoECombineConfig(const MoECombineConfig &c) {
  if (c.cols <= 0 || c.cols % 4 != 0)
    return "row width " + std::to_string(c.cols) +
           " is not a positive multiple of 4 (16-byte chunks)";
  if (c.cols * 4 > (int64_t(1) << 31))
    return "row of " + std::to_string(c.cols) + " floats too wide";
  if (c.topK < 1 || c.slots < c.topK || c.slots > 16)
    return "slots " + std::to_string(c.slots) + " (top-k " +
           std::to_string(c.topK) + ") outside [top-k, 16]";
  if (c.addends < 0 || c.addends > 4)
    return std::to_string(c.addends) + " addends (at most 4)";
  return "";
}

std::string emitMoECombineRowPtx(const MoECombineConfig &c,
                                 const std::string &name) {
  std::ostringstream o;
  o << "// " << name << ": MoE combine of " << c.slots << " slots (" << c.topK
    << " weighted), " << c.addends << " addend(s), f32 rows of " << c.cols
    << ", a block of " << kRowThreads << " threads per token\n"
    << ".visible .entry " << name << "(\n  .param .u64 " << name
    << "_rows,\n  .param .u64 " << name << "_slot_row,\n  .param .u64 " << name
    << "_weights,\n";
  for (int64_t a = 0; a < c.addends; ++a)
    o << "  .param .u64 " << name << "_add" << a << ",\n";
  o << "  .param .u64 " << name << "_out,\n  .param .u64 " << name
    << "_tokens)\n"
    << ".maxntid " << kRowThreads << ", 1, 1\n{\n"
    << "  .reg .pred %p<4>;\n  .reg .b32 %r<16>;\n  .reg .b64 %rd<24>;\n"
    << "  .reg .f32 %f<12>;\n  .reg .f32 %w<" << c.topK << ">;\n"
    << "  .reg .b64 %s<" << c.slots << ">;\n"
    << "  ld.param.u64 %rd1, [" << name << "_rows];\n"
    << "  ld.param.u64 %rd2, [" << name << "_slot_row];\n"
    << "  ld.param.u64 %rd3, [" << name << "_weights];\n";
  for (int64_t a = 0; a < c.addends; ++a)
    o << "  ld.param.u64 %rd" << 10 + a << ", [" << name << "_add" << a
      << "];\n";
  o << "  ld.param.u64 %rd4, [" << name << "_out];\n"
    << "  ld.param.u64 %rd5, [" << name << "_tokens];\n";
  beginRows(o, "%rd5");
  rowHead(o, name);
  // The token's slots (as byte offsets of their rows) and weights.
  o << "  mul.wide.u32 %rd6, %r2, " << 4 * c.slots << ";\n"
    << "  add.s64 %rd6, %rd2, %rd6;\n"
    << "  mul.wide.u32 %rd7, %r2, " << 4 * c.topK << ";\n"
    << "  add.s64 %rd7, %rd3, %rd7;\n";
  for (int64_t k = 0; k < c.slots; ++k)
    o << "  ld.global.nc.u32 %r6, [%rd6+" << 4 * k << "];\n"
      << "  mul.wide.u32 %s" << k << ", %r6, " << 4 * c.cols << ";\n"
      << "  add.s64 %s" << k << ", %s" << k << ", %rd1;\n";
  for (int64_t k = 0; k < c.topK; ++k)
    o << "  ld.global.nc.f32 %w" << k << ", [%rd7+" << 4 * k << "];\n";
  // The token's row of the addends and of out (%rd8: byte offset).
  o << "  mul.wide.u32 %rd8, %r2, " << 4 * c.cols << ";\n";
  beginChunks(o, name, "chunk", c.cols);
  o << "  mul.wide.u32 %rd9, %r9, 4;\n"
    << "  mov.f32 %f0, 0f00000000;\n  mov.f32 %f1, 0f00000000;\n"
    << "  mov.f32 %f2, 0f00000000;\n  mov.f32 %f3, 0f00000000;\n";
  for (int64_t k = 0; k < c.slots; ++k) {
    o << "  add.s64 %rd20, %s" << k << ", %rd9;\n"
      << "  ld.global.v4.f32 {%f4, %f5, %f6, %f7}, [%rd20];\n";
    for (int e = 0; e < 4; ++e)
      if (k < c.topK)
        o << "  fma.rn.f32 %f" << e << ", %w" << k << ", %f" << 4 + e << ", %f"
          << e << ";\n";
      else
        o << "  add.rn.f32 %f" << e << ", %f" << e << ", %f" << 4 + e << ";\n";
  }
  for (int64_t a = 0; a < c.addends; ++a) {
    o << "  add.s64 %rd20, %rd" << 10 + a << ", %rd8;\n"
      << "  add.s64 %rd20, %rd20, %rd9;\n"
      << "  ld.global.v4.f32 {%f4, %f5, %f6, %f7}, [%rd20];\n";
    for (int e = 0; e < 4; ++e)
      o << "  add.rn.f32 %f" << e << ", %f" << e << ", %f" << 4 + e << ";\n";
  }
  o << "  add.s64 %rd20, %rd4, %rd8;\n  add.s64 %rd20, %rd20, %rd9;\n"
    << "  st.global.v4.f32 [%rd20], {%f0, %f1, %f2, %f3};\n";
  endChunks(o, name, "chunk");
  endRows(o, name);
  return o.str();
}

std::string checkQuantizeRowConfig(int64_t cols) {
  if (cols <= 0 || cols % 128 != 0 || cols * 4 > (int64_t(1) << 31))
    return "row width " + std::to_string(cols) +
           " is not a positive multiple of 128 (whole quantization blocks)";
  return "";
}

std::string emitQuantizeRowPtx(int64_t cols, const std::string &name) {
  std::ostringstream o;
  o << "// " << name << ": e4m3 per 1 x 128 of f32 rows of " << cols
    << ", a block of " << kRowThreads << " threads per row\n"
    << ".visible .entry " << name << "(\n  .param .u64 " << name
    << "_x,\n  .param .u64 " << name << "_q,\n  .param .u64 " << name
    << "_scale,\n  .param .u64 " << name << "_rows)\n"
    << ".maxntid " << kRowThreads << ", 1, 1\n{\n"
    << "  .reg .pred %p<4>;\n  .reg .b32 %r<16>;\n  .reg .b64 %rd<16>;\n"
    << "  .reg .f32 %f<24>;\n  .reg .b16 %h<2>;\n"
    << "  ld.param.u64 %rd1, [" << name << "_x];\n"
    << "  ld.param.u64 %rd12, [" << name << "_q];\n"
    << "  ld.param.u64 %rd13, [" << name << "_scale];\n"
    << "  ld.param.u64 %rd4, [" << name << "_rows];\n";
  beginRows(o, "%rd4");
  o << "  and.b32 %r6, %r1, 31;\n  setp.eq.u32 %p3, %r6, 0;\n";
  rowHead(o, name);
  o << "  mul.wide.u32 %rd5, %r2, " << 4 * cols << ";\n"
    << "  add.s64 %rd6, %rd1, %rd5;\n";
  beginChunks(o, name, "chunk", cols);
  o << "  mul.wide.u32 %rd8, %r9, 4;\n  add.s64 %rd9, %rd6, %rd8;\n"
    << "  ld.global.v4.f32 {%f2, %f3, %f4, %f5}, [%rd9];\n";
  quantizeChunk(o, cols);
  endChunks(o, name, "chunk");
  endRows(o, name);
  return o.str();
}

} // namespace kiln::gpurow
