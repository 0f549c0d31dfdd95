"""Runs the CPU kernels that kiln-compile generates for a Sapphire Rapids
target (AVX-512, AMX-BF16) or a Cooper Lake one (AVX-512-BF16) on a host
that lacks those instructions, so that
the optimized emitters can be checked where no such CPU is at hand.

How: kiln-compile --cpu=sapphirerapids --dump-ir-dir writes the kernels'
optimized LLVM IR (05-cpu.ll). Everything in it is generic LLVM IR (vectors
of any width, masked loads, FMAs, reductions), which llc legalizes for any
x86-64 host, except a few target intrinsics, replaced here by functions of
plain IR that implement what the Intel SDM specifies for them:

- tileloadd64 / tilestored64 / tilezero (16 rows x 64 bytes): an AMX tile
  becomes a <256 x i32> value;
- tdpbf16ps: for each row m and column n of C, for each pair k of A's row
  and B's row k: C[m][n] += A[m][2k] B[k][2n]; C[m][n] += A[m][2k+1]
  B[k][2n+1], each product of bf16 values formed exactly in fp32 and each
  addition rounded to nearest even, bf16 inputs with a zero exponent read as
  zero (DAZ) and sums below 2^-126 flushed to zero (FTZ), in the SDM's
  order;
- vdpbf16ps (llvm.x86.avx512bf16.dpbf16ps.512, what AVX-512-BF16 targets
  without AMX use): lane i of the accumulator plus a[2i+1] b[2i+1], then
  plus a[2i] b[2i], the same exact products, roundings, DAZ and FTZ, in
  the SDM's order;
- vpermi2w (llvm.x86.avx512.vpermi2var.hi.512): lane i of the result is
  lane idx[i] & 63 of the concatenation (a, b);
- vpermi2b (llvm.x86.avx512.vpermi2var.qi.512, AVX512-VBMI): byte i of the
  result is byte idx[i] & 127 of the concatenation (a, b);
- __truncsfbf2 (f32 -> bf16, what fptrunc becomes without avx512bf16):
  round to nearest even, NaN kept quiet.

The host's llc then builds a shared object, and `Kernels` calls its entry
points (void name(void **buffers, const int64_t *scalars, int64_t begin,
int64_t end)) through ctypes on numpy buffers, one call per thread range.
What this cannot show: speed, and any behaviour of the real instructions
beyond the SDM's description (tests keep tolerances that hold for any fp32
summation order inside a tile product).
"""
import ctypes
import os
import re
import subprocess

import numpy as np

LLVM_BIN = "/usr/lib/llvm-22/bin"

EMULATION = r"""
; f16 -> f32 for a generic x86-64 target, which calls this for fpext (the
; FP8 GEMV widens e4m3 through f16 on Intel AVX-512 targets): subnormals
; (exponent 0) as mant 2^-24, infinities and NaNs kept, the rest rebiased.
define float @__extendhfsf2(half %x) {
  %h = bitcast half %x to i16
  %w = zext i16 %h to i32
  %s = and i32 %w, 32768
  %sign = shl i32 %s, 16
  %e = lshr i32 %w, 10
  %exp = and i32 %e, 31
  %mant = and i32 %w, 1023
  %isz = icmp eq i32 %exp, 0
  %isinf = icmp eq i32 %exp, 31
  %mf = uitofp i32 %mant to float
  %sub = fmul float %mf, 0x3E70000000000000
  %subbits = bitcast float %sub to i32
  %subv = or i32 %subbits, %sign
  %e2 = add i32 %exp, 112
  %e3 = select i1 %isinf, i32 255, i32 %e2
  %eb = shl i32 %e3, 23
  %mb = shl i32 %mant, 13
  %nb = or i32 %eb, %mb
  %nv = or i32 %nb, %sign
  %bits = select i1 %isz, i32 %subv, i32 %nv
  %r = bitcast i32 %bits to float
  ret float %r
}

define ptr @kiln_emu_tile_addr(ptr %base, i64 %stride, i64 %i) {
  %row = lshr i64 %i, 4
  %col = and i64 %i, 15
  %ro = mul i64 %row, %stride
  %co = shl i64 %col, 2
  %o = add i64 %ro, %co
  %p = getelementptr i8, ptr %base, i64 %o
  ret ptr %p
}

define <256 x i32> @kiln_emu_tilezero(i16 %r, i16 %c) {
  ret <256 x i32> zeroinitializer
}

define <256 x i32> @kiln_emu_tileload(i16 %r, i16 %c, ptr %base, i64 %stride) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %t = phi <256 x i32> [zeroinitializer, %entry], [%t1, %loop]
  %p = call ptr @kiln_emu_tile_addr(ptr %base, i64 %stride, i64 %i)
  %v = load i32, ptr %p, align 1
  %t1 = insertelement <256 x i32> %t, i32 %v, i64 %i
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, 256
  br i1 %done, label %exit, label %loop
exit:
  ret <256 x i32> %t1
}

define void @kiln_emu_tilestore(i16 %r, i16 %c, ptr %base, i64 %stride, <256 x i32> %t) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %p = call ptr @kiln_emu_tile_addr(ptr %base, i64 %stride, i64 %i)
  %v = extractelement <256 x i32> %t, i64 %i
  store i32 %v, ptr %p, align 1
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, 256
  br i1 %done, label %exit, label %loop
exit:
  ret void
}

define float @kiln_emu_ftz(float %x) {
  %w = bitcast float %x to i32
  %e = and i32 %w, 2139095040
  %z = icmp eq i32 %e, 0
  %s = and i32 %w, 2147483648
  %d = select i1 %z, i32 %s, i32 %w
  %f = bitcast i32 %d to float
  ret float %f
}

; A bf16 input (the low 16 bits) as f32, denormals read as zero.
define float @kiln_emu_bf16(i32 %bits16) {
  %w = shl i32 %bits16, 16
  %x = bitcast i32 %w to float
  %f = call float @kiln_emu_ftz(float %x)
  ret float %f
}

; acc + bf16 half `shift` (0: low, 16: high) of `aw` times that of `bw`:
; the product exact in fp32, the sum rounded to nearest even and flushed to
; zero (both instructions' per-pair step).
define float @kiln_emu_pair_fma(float %acc, i32 %aw, i32 %bw, i32 %shift) {
  %as = lshr i32 %aw, %shift
  %bs = lshr i32 %bw, %shift
  %ah = and i32 %as, 65535
  %bh = and i32 %bs, 65535
  %a = call float @kiln_emu_bf16(i32 %ah)
  %b = call float @kiln_emu_bf16(i32 %bh)
  %p = fmul float %a, %b
  %s = fadd float %acc, %p
  %r = call float @kiln_emu_ftz(float %s)
  ret float %r
}

define <256 x i32> @kiln_emu_tdpbf16ps(i16 %m, i16 %n, i16 %k, <256 x i32> %c, <256 x i32> %a, <256 x i32> %b) {
entry:
  br label %outer
outer:
  %idx = phi i64 [0, %entry], [%idx1, %outer_end]
  %res = phi <256 x i32> [%c, %entry], [%res1, %outer_end]
  %mi = lshr i64 %idx, 4
  %ni = and i64 %idx, 15
  %cw = extractelement <256 x i32> %c, i64 %idx
  %c0 = bitcast i32 %cw to float
  br label %inner
inner:
  %ki = phi i64 [0, %outer], [%ki1, %inner]
  %acc = phi float [%c0, %outer], [%acc2, %inner]
  %ai = shl i64 %mi, 4
  %aidx = add i64 %ai, %ki
  %aw = extractelement <256 x i32> %a, i64 %aidx
  %bi = shl i64 %ki, 4
  %bidx = add i64 %bi, %ni
  %bw = extractelement <256 x i32> %b, i64 %bidx
  %acc1 = call float @kiln_emu_pair_fma(float %acc, i32 %aw, i32 %bw, i32 0)
  %acc2 = call float @kiln_emu_pair_fma(float %acc1, i32 %aw, i32 %bw, i32 16)
  %ki1 = add i64 %ki, 1
  %kdone = icmp eq i64 %ki1, 16
  br i1 %kdone, label %outer_end, label %inner
outer_end:
  %rw = bitcast float %acc2 to i32
  %res1 = insertelement <256 x i32> %res, i32 %rw, i64 %idx
  %idx1 = add i64 %idx, 1
  %done = icmp eq i64 %idx1, 256
  br i1 %done, label %exit, label %outer
exit:
  ret <256 x i32> %res1
}

define <16 x float> @kiln_emu_dpbf16ps(<16 x float> %c, <32 x bfloat> %av, <32 x bfloat> %bv) {
entry:
  %a = bitcast <32 x bfloat> %av to <16 x i32>
  %b = bitcast <32 x bfloat> %bv to <16 x i32>
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %r = phi <16 x float> [%c, %entry], [%r1, %loop]
  %acc = extractelement <16 x float> %c, i64 %i
  %aw = extractelement <16 x i32> %a, i64 %i
  %bw = extractelement <16 x i32> %b, i64 %i
  %acc1 = call float @kiln_emu_pair_fma(float %acc, i32 %aw, i32 %bw, i32 16)
  %acc2 = call float @kiln_emu_pair_fma(float %acc1, i32 %aw, i32 %bw, i32 0)
  %r1 = insertelement <16 x float> %r, float %acc2, i64 %i
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, 16
  br i1 %done, label %exit, label %loop
exit:
  ret <16 x float> %r1
}

define bfloat @__truncsfbf2(float %x) {
  %w = bitcast float %x to i32
  %isnan = fcmp uno float %x, 0.0
  %lsb = lshr i32 %w, 16
  %odd = and i32 %lsb, 1
  %bias = add i32 %odd, 32767
  %r = add i32 %w, %bias
  %t = lshr i32 %r, 16
  %q = or i32 %lsb, 64
  %sel = select i1 %isnan, i32 %q, i32 %t
  %h = trunc i32 %sel to i16
  %f = bitcast i16 %h to bfloat
  ret bfloat %f
}
"""


def _two_table_permute(name, ty, lanes):
    """vpermi2w / vpermi2b: lane i of the result is lane idx[i] & (2 lanes
    - 1) of the concatenation (a, b)."""
    v = f"<{lanes} x {ty}>"
    return f"""
define {v} @{name}({v} %a, {v} %idx, {v} %b) {{
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %r = phi {v} [zeroinitializer, %entry], [%r1, %loop]
  %ix = extractelement {v} %idx, i64 %i
  %j = and {ty} %ix, {lanes - 1}
  %hi = and {ty} %ix, {lanes}
  %va = extractelement {v} %a, {ty} %j
  %vb = extractelement {v} %b, {ty} %j
  %useb = icmp ne {ty} %hi, 0
  %v = select i1 %useb, {ty} %vb, {ty} %va
  %r1 = insertelement {v} %r, {ty} %v, i64 %i
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, {lanes}
  br i1 %done, label %exit, label %loop
exit:
  ret {v} %r1
}}
"""


EMULATION += _two_table_permute("kiln_emu_vpermi2w", "i16", 32)
EMULATION += _two_table_permute("kiln_emu_vpermi2b", "i8", 64)

RENAMES = {
    "@llvm.x86.tilezero.internal": "@kiln_emu_tilezero",
    "@llvm.x86.tileloadd64.internal": "@kiln_emu_tileload",
    "@llvm.x86.tilestored64.internal": "@kiln_emu_tilestore",
    "@llvm.x86.tdpbf16ps.internal": "@kiln_emu_tdpbf16ps",
    "@llvm.x86.avx512.vpermi2var.hi.512": "@kiln_emu_vpermi2w",
    "@llvm.x86.avx512.vpermi2var.qi.512": "@kiln_emu_vpermi2b",
    "@llvm.x86.avx512bf16.dpbf16ps.512": "@kiln_emu_dpbf16ps",
}


def emulated_ir(ll_text):
    """05-cpu.ll with the AMX, vdpbf16ps, vpermi2w and vpermi2b intrinsics replaced by the
    emulation above. Fails on any other x86 intrinsic, so that nothing runs
    that the emulation does not cover."""
    lines = []
    for line in ll_text.splitlines():
        if line.startswith("declare") and any(k in line for k in RENAMES):
            continue
        lines.append(line)
    text = "\n".join(lines).replace("x86_amx", "<256 x i32>")
    for old, new in RENAMES.items():
        text = text.replace(old + "(", new + "(")
    left = sorted(set(re.findall(r"@llvm\.x86\.[\w.]+", text)))
    if left:
        raise AssertionError(f"x86 intrinsics the emulation does not cover: {left}")
    return text + "\n" + EMULATION


def build_shared_object(ll_path, out_dir):
    """The emulated kernels of ll_path as a host shared object."""
    with open(ll_path) as f:
        text = emulated_ir(f.read())
    src = os.path.join(out_dir, "emulated.ll")
    obj = os.path.join(out_dir, "emulated.o")
    so = os.path.join(out_dir, "emulated.so")
    with open(src, "w") as f:
        f.write(text)
    subprocess.run([os.path.join(LLVM_BIN, "llc"), "-O1", "-relocation-model=pic", "-filetype=obj",
                    src, "-o", obj], check=True, capture_output=True)
    subprocess.run([os.path.join(LLVM_BIN, "ld.lld"), "-shared", "-o", so, obj], check=True,
                   capture_output=True)
    return so


class Kernels:
    """The entry points of an emulated shared object."""

    def __init__(self, so_path):
        self.lib = ctypes.CDLL(so_path)

    def __call__(self, name, buffers, begin, end, scalars=()):
        """Runs programs [begin, end) of kernel `name` over `buffers` (numpy
        arrays, or lists of numpy arrays for pointer tables)."""
        keep = []
        ptrs = (ctypes.c_void_p * len(buffers))()
        for i, b in enumerate(buffers):
            if isinstance(b, list):  # a table of pointers (weight tables)
                table = (ctypes.c_void_p * len(b))(*[a.ctypes.data for a in b])
                keep.append(table)
                ptrs[i] = ctypes.cast(table, ctypes.c_void_p)
            else:
                assert b.flags["C_CONTIGUOUS"]
                ptrs[i] = b.ctypes.data
        sc = (ctypes.c_int64 * max(1, len(scalars)))(*scalars)
        fn = getattr(self.lib, name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
        fn.restype = None
        fn(ptrs, sc, begin, end)
        del keep

    def phases(self, name):
        """The entry points kernel `name` runs as, in order: `name`, then
        `name.phase1`, ... where the emitter split it into phases (the
        runtime reads their count from the plan's EntryPoint.phases)."""
        out = [name]
        while hasattr(self.lib, f"{name}.phase{len(out)}"):
            out.append(f"{name}.phase{len(out)}")
        return out

    def split(self, name, buffers, programs, threads, scalars=()):
        """The runtime's split of [0, programs) into `threads` contiguous
        ranges, run one after another, each phase over every range before
        the next."""
        for entry in self.phases(name):
            for t in range(threads):
                lo, hi = programs * t // threads, programs * (t + 1) // threads
                if lo < hi:
                    self(entry, buffers, lo, hi, scalars)
