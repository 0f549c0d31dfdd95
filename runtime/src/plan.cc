// Plan loading and verification, in order: the checksum trailer (before
// anything is parsed), structure (flatbuffers Verifier), version, then
// semantic checks that name the offending field and index: executables
// (checksums, entry points), weights, buffers, kernels (what each binding
// must hold at each grid), every launch against its kernel, and the tensor
// specs (shapes, value ranges).
#include <cstdlib>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kiln/dtype.h"
#include "kiln/runtime.h"
#include "kiln/tokenizer.h"
#include "mapped_file.h"
#include "plan_generated.h"
#include "plan_support.h"
#include "tile_launch.h"
#include "weight_hash.h"

namespace kiln {

static_assert(kPlanFormatVersion == plan::kFormatVersion, "runtime.h and plan_support.h disagree on the format");

namespace {

using plan::BindingAccess;
using plan::BufferKind;

const char* KindName(BufferKind k) {
  switch (k) {
    case BufferKind::intermediate: return "intermediate";
    case BufferKind::input: return "input";
    case BufferKind::output: return "output";
    case BufferKind::weight: return "weight";
    case BufferKind::weight_table: return "weight_table";
    case BufferKind::state: return "state";
  }
  return "kind(?)";
}

bool IsArena(BufferKind k) { return k != BufferKind::weight && k != BufferKind::weight_table; }

template <typename T>
uint32_t Len(const flatbuffers::Vector<T>* v) { return v ? v->size() : 0; }

std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

// Byte size of a dense tensor, or an error for negative dims / overflow.
absl::StatusOr<uint64_t> TensorBytes(plan::DType dtype, const flatbuffers::Vector<int64_t>* shape,
                                     const std::string& what) {
  uint64_t n = DTypeSize(static_cast<DType>(dtype));
  for (uint32_t i = 0; i < Len(shape); ++i) {
    int64_t d = plan::Load(shape, i);
    if (d < 0)
      return absl::InvalidArgumentError(absl::StrCat(what, ": dimension ", i, " is negative (", d, ")"));
    if (d != 0 && n > UINT64_MAX / static_cast<uint64_t>(d))
      return absl::InvalidArgumentError(absl::StrCat(what, ": shape overflows"));
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

std::string ShapeOf(const flatbuffers::Vector<int64_t>* shape) { return ShapeToString(plan::ToVector(shape)); }

// "buffer 7 (intermediate, 256 bytes)"
std::string DescribeBuffer(const plan::Plan& p, uint32_t b) {
  const plan::Buffer* buf = p.buffers()->Get(b);
  return absl::StrCat("buffer ", b, " (", KindName(buf->kind()), ", ", buf->size_bytes(), " bytes)");
}

using Specs = flatbuffers::Vector<flatbuffers::Offset<plan::TensorSpec>>;
using Launches = flatbuffers::Vector<flatbuffers::Offset<plan::Launch>>;

// The value range of an integer spec: consistent, representable, and
// containing the zeros the runtime pads with.
absl::Status CheckValueRange(const plan::TensorSpec& s, bool output, const std::string& where) {
  const plan::ValueRange* r = s.value_range();
  if (!r) return absl::OkStatus();
  std::string range = absl::StrCat("[", r->min(), ", ", r->max(), "]");
  if (output)
    return absl::InvalidArgumentError(absl::StrCat(where, ": outputs carry no value range (it has ", range, ")"));
  int64_t lo, hi;
  switch (s.dtype()) {
    case plan::DType::i32: lo = INT32_MIN, hi = INT32_MAX; break;
    case plan::DType::i64: lo = INT64_MIN, hi = INT64_MAX; break;
    case plan::DType::u8: lo = 0, hi = 255; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(where, ": value range ", range, " on a ",
                                                     DTypeName(static_cast<DType>(s.dtype())),
                                                     " tensor (only integer inputs have one)"));
  }
  if (r->min() > r->max())
    return absl::InvalidArgumentError(absl::StrCat(where, ": empty value range ", range));
  if (r->min() < lo || r->max() > hi)
    return absl::InvalidArgumentError(absl::StrCat(where, ": value range ", range, " does not fit ",
                                                   DTypeName(static_cast<DType>(s.dtype()))));
  const auto* syms = s.dim_symbols();
  for (uint32_t d = 0; d < Len(syms); ++d)
    if (syms->Get(d) >= 0 && (r->min() > 0 || r->max() < 0))
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": may be given smaller along dimension ", d,
          " and is then padded with zeros, but 0 is outside its value range ", range));
  return absl::OkStatus();
}

// `prefix` names the function ("" for forward, "function 'decode': " otherwise).
absl::Status CheckTensorSpecs(const plan::Plan& p, const Specs* specs, bool outputs,
                              const std::string& prefix) {
  const char* what = outputs ? "output" : "input";
  BufferKind want = outputs ? BufferKind::output : BufferKind::input;
  uint32_t nbuf = Len(p.buffers());
  for (uint32_t i = 0; i < Len(specs); ++i) {
    const plan::TensorSpec* s = specs->Get(i);
    std::string name = s->name()->str();
    std::string where = absl::StrCat(prefix, what, " ", i, " ('", name, "')");
    for (uint32_t j = 0; j < i; ++j)
      if (specs->Get(j)->name()->str() == name)
        return absl::InvalidArgumentError(absl::StrCat(where, ": duplicate name (also ", what, " ", j, ")"));
    if (!DTypeValid(static_cast<uint8_t>(s->dtype())))
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown dtype ", static_cast<int>(s->dtype())));
    if (s->buffer() >= nbuf)
      return absl::InvalidArgumentError(absl::StrCat(where, ": refers to buffer ", s->buffer(),
                                                     ", but the plan has ", nbuf, " buffers"));
    const plan::Buffer* b = p.buffers()->Get(s->buffer());
    if (b->kind() != want)
      return absl::InvalidArgumentError(absl::StrCat(where, ": buffer ", s->buffer(), " has kind ",
                                                     KindName(b->kind()), ", expected ", KindName(want)));
    auto bytes = TensorBytes(s->dtype(), s->shape(), where);
    if (!bytes.ok()) return bytes.status();
    if (*bytes != b->size_bytes())
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": ", DTypeName(static_cast<DType>(s->dtype())), " ", ShapeOf(s->shape()), " is ",
          *bytes, " bytes, but buffer ", s->buffer(), " is ", b->size_bytes(), " bytes"));
    if (Len(s->dim_symbols()) != 0 && Len(s->dim_symbols()) != Len(s->shape()))
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", Len(s->dim_symbols()),
                                                     " dim_symbols for a rank-", Len(s->shape()), " tensor"));
    if (auto st = CheckValueRange(*s, outputs, where); !st.ok()) return st;
    if (int32_t sym = s->range_max_grows_with(); sym >= 0) {
      // The symbol must size a dimension of one of the function's inputs;
      // the loosest bound (one position given) must fit the dtype.
      int64_t extent = plan::SymbolExtent(*specs, sym);
      if (outputs || !s->value_range() || extent < 1)
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": range_max_grows_with names symbol ", sym,
            outputs ? " on an output" : (!s->value_range() ? " without a value range"
                                                           : ", which sizes no input dimension")));
      if (s->value_range()->max() > INT32_MAX - (extent - 1))
        return absl::InvalidArgumentError(absl::StrCat(where, ": value range max ", s->value_range()->max(),
                                                       " grown by ", extent - 1, " does not fit its dtype"));
    } else if (sym < -1) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": range_max_grows_with is ", sym));
    }
  }
  return absl::OkStatus();
}

// Kernel k's own records: one access per binding, in-place pairs between
// state bindings, and well-formed grids.
absl::Status CheckKernel(const plan::Kernel& k, uint32_t index) {
  std::string where = absl::StrCat("kernel ", index, " ('", k.name()->str(), "')");
  uint32_t nb = k.num_buffers(), ns = k.num_scalars();
  const auto* access = k.binding_access();
  if (Len(access) != nb)
    return absl::InvalidArgumentError(absl::StrCat(where, ": binding_access has ", Len(access),
                                                   " entries for ", nb, " bindings"));
  for (uint32_t i = 0; i < nb; ++i)
    if (access->Get(i) > BindingAccess::MAX)
      return absl::InvalidArgumentError(absl::StrCat(where, ": binding ", i, " has unknown access ",
                                                     static_cast<int>(access->Get(i))));
  const auto* in_place = k.in_place_of();
  if (Len(in_place) != 0 && Len(in_place) != nb)
    return absl::InvalidArgumentError(absl::StrCat(where, ": in_place_of has ", Len(in_place),
                                                   " entries for ", nb, " bindings"));
  for (uint32_t i = 0; i < Len(in_place); ++i) {
    int32_t j = in_place->Get(i);
    if (j == -1) continue;
    if (j < 0 || static_cast<uint32_t>(j) >= nb || static_cast<uint32_t>(j) == i)
      return absl::InvalidArgumentError(absl::StrCat(where, ": binding ", i, " is in place of binding ", j,
                                                     ", which is not another of its ", nb, " bindings"));
    if (access->Get(i) != BindingAccess::state || access->Get(j) != BindingAccess::state)
      return absl::InvalidArgumentError(absl::StrCat(where, ": binding ", i, " updates binding ", j,
                                                     " in place, so both must have access 'state'"));
  }
  if (Len(k.grids()) == 0)
    return absl::InvalidArgumentError(absl::StrCat(where, ": no grids (the launch shapes it was generated for)"));
  for (uint32_t g = 0; g < k.grids()->size(); ++g) {
    const plan::KernelGrid* grid = k.grids()->Get(g);
    std::string gw = absl::StrCat(where, ": grid ", g, " (", grid->programs(), " programs)");
    if (Len(grid->scalar_min()) != ns || Len(grid->scalar_max()) != ns)
      return absl::InvalidArgumentError(absl::StrCat(gw, ": scalar ranges for ", Len(grid->scalar_min()), "/",
                                                     Len(grid->scalar_max()), " scalars, but the kernel takes ",
                                                     ns));
    for (uint32_t s = 0; s < ns; ++s)
      if (plan::Load(grid->scalar_min(), s) > plan::Load(grid->scalar_max(), s))
        return absl::InvalidArgumentError(absl::StrCat(gw, ": scalar ", s, " has an empty range [",
                                                       plan::Load(grid->scalar_min(), s), ", ",
                                                       plan::Load(grid->scalar_max(), s), "]"));
    if (Len(grid->binding_bytes()) != nb)
      return absl::InvalidArgumentError(absl::StrCat(gw, ": binding_bytes has ", Len(grid->binding_bytes()),
                                                     " entries for ", nb, " bindings"));
    if (Len(grid->table_entries()) != 0 && Len(grid->table_entries()) != nb)
      return absl::InvalidArgumentError(absl::StrCat(gw, ": table_entries has ", Len(grid->table_entries()),
                                                     " entries for ", nb, " bindings"));
  }
  return absl::OkStatus();
}

// A launch against one grid of its kernel: scalars in range, and every
// binding's buffer big enough (and a weight table exactly where the kernel
// reads one).
absl::Status CheckGrid(const plan::Plan& p, const plan::Launch& la, const plan::Kernel& k,
                       const plan::KernelGrid& g) {
  std::string kernel = absl::StrCat("kernel '", k.name()->str(), "' at ", g.programs(), " programs");
  if (const plan::TokenGrid* t = la.tokens()) {
    // The runtime runs a prefix of each batch row's programs and sets the
    // token scalars to any count up to the maxima: all must be valid.
    uint64_t tokens = t->max_batch() * t->max_seq();
    if (t->per_token() == 0 || t->max_batch() == 0 || t->max_seq() == 0 ||
        tokens / t->max_seq() != t->max_batch() || t->per_token() * tokens / t->per_token() != tokens ||
        t->per_token() * tokens != la.programs())
      return absl::InvalidArgumentError(absl::StrCat("tokens: ", t->per_token(), " programs per token x ",
                                                     t->max_batch(), " x ", t->max_seq(), " tokens is not the ",
                                                     la.programs(), " programs it runs"));
    for (auto [slot, most] : {std::pair<int32_t, uint64_t>{t->tokens_scalar(), tokens},
                              std::pair<int32_t, uint64_t>{t->seq_scalar(), t->max_seq()}}) {
      if (slot < 0) continue;
      if (static_cast<uint32_t>(slot) >= k.num_scalars())
        return absl::InvalidArgumentError(absl::StrCat("tokens: scalar ", slot, " of a kernel with ",
                                                       k.num_scalars(), " scalars"));
      int64_t lo = plan::Load(g.scalar_min(), slot), hi = plan::Load(g.scalar_max(), slot);
      if (lo > 1 || hi < 1 || static_cast<uint64_t>(hi) < most)
        return absl::InvalidArgumentError(absl::StrCat("tokens: scalar ", slot, " may be set to [1, ", most,
                                                       "], but ", kernel, " takes [", lo, ", ", hi, "]"));
    }
  }
  for (uint32_t s = 0; s < k.num_scalars(); ++s) {
    int64_t v = plan::Load(la.scalars(), s), lo = plan::Load(g.scalar_min(), s), hi = plan::Load(g.scalar_max(), s);
    if (v < lo || v > hi)
      return absl::InvalidArgumentError(absl::StrCat("scalar ", s, " is ", v, ", but ", kernel, " takes [", lo, ", ",
                                                     hi, "]"));
  }
  for (uint32_t i = 0; i < k.num_buffers(); ++i) {
    uint32_t b = la.bindings()->Get(i);
    const plan::Buffer* buf = p.buffers()->Get(b);
    uint64_t need = plan::Load(g.binding_bytes(), i);
    uint32_t entries = Len(g.table_entries()) ? g.table_entries()->Get(i) : 0;
    std::string at = absl::StrCat("binding ", i, " is ", DescribeBuffer(p, b));
    if (buf->size_bytes() < need)
      return absl::InvalidArgumentError(absl::StrCat(at, ", but ", kernel, " needs ", need, " bytes there"));
    if (entries == 0) {
      if (buf->kind() == BufferKind::weight_table)
        return absl::InvalidArgumentError(absl::StrCat(at, ", but ", kernel, " reads plain memory there"));
      continue;
    }
    if (buf->kind() != BufferKind::weight_table)
      return absl::InvalidArgumentError(absl::StrCat(at, ", but ", kernel, " reads a weight table of ", entries,
                                                     " entries there"));
    const auto* list = buf->weight_list();
    if (list->size() != entries)
      return absl::InvalidArgumentError(absl::StrCat(at, " listing ", list->size(), " weights, but ", kernel,
                                                     " reads a table of ", entries));
    for (uint32_t w = 0; w < entries; ++w) {
      const plan::Weight* wt = p.weights()->Get(list->Get(w));
      if (wt->size_bytes() < need / entries)
        return absl::InvalidArgumentError(absl::StrCat(at, ": its entry ", w, " (weight ", list->Get(w), " '",
                                                       wt->name()->str(), "') is ", wt->size_bytes(),
                                                       " bytes, but ", kernel, " reads ", need / entries,
                                                       " bytes of each entry"));
    }
  }
  return absl::OkStatus();
}

// A launch against its (verified) kernel: what each binding is used for,
// no written buffer aliasing another binding, and a matching grid.
absl::Status CheckLaunchSemantics(const plan::Plan& p, const plan::Launch& la, const plan::Kernel& k) {
  std::string kname = absl::StrCat("kernel '", k.name()->str(), "'");
  uint32_t nb = k.num_buffers();
  const auto* in_place = k.in_place_of();
  auto partner = [&](uint32_t i) { return Len(in_place) ? in_place->Get(i) : -1; };
  for (uint32_t i = 0; i < nb; ++i) {
    uint32_t b = la.bindings()->Get(i);
    const plan::Buffer* buf = p.buffers()->Get(b);
    BindingAccess access = k.binding_access()->Get(i);
    std::string at = absl::StrCat("binding ", i, " is ", DescribeBuffer(p, b));
    if (access == BindingAccess::write && buf->kind() != BufferKind::intermediate &&
        buf->kind() != BufferKind::output)
      return absl::InvalidArgumentError(absl::StrCat(at, ", but ", kname,
                                                     " writes it (only intermediate and output buffers may be "
                                                     "written)"));
    if (access == BindingAccess::state && buf->kind() != BufferKind::state)
      return absl::InvalidArgumentError(absl::StrCat(at, ", but ", kname,
                                                     " keeps persistent state there (a state buffer)"));
    if (int32_t j = partner(i); j >= 0 && la.bindings()->Get(j) != b)
      return absl::InvalidArgumentError(absl::StrCat("binding ", i, " updates binding ", j, " in place, so both must be ",
                                                     "the same buffer, but they are buffers ", b, " and ",
                                                     la.bindings()->Get(j)));
    if (access == BindingAccess::read) continue;
    // A written buffer is bound once (or twice, in place), and overlaps no
    // other buffer of the launch in the arena.
    for (uint32_t j = 0; j < nb; ++j) {
      uint32_t c = la.bindings()->Get(j);
      if (j == i || partner(i) == static_cast<int32_t>(j) || partner(j) == static_cast<int32_t>(i)) continue;
      if (c == b)
        return absl::InvalidArgumentError(absl::StrCat("bindings ", i, " and ", j, " are both buffer ", b, ", which ",
                                                       kname, " writes through binding ", i));
      const plan::Buffer* other = p.buffers()->Get(c);
      if (!IsArena(buf->kind()) || !IsArena(other->kind())) continue;
      if (buf->offset() < other->offset() + other->size_bytes() && other->offset() < buf->offset() + buf->size_bytes())
        return absl::InvalidArgumentError(absl::StrCat(
            "binding ", i, " (buffer ", b, ", arena [", buf->offset(), ", ", buf->offset() + buf->size_bytes(),
            "), written by ", kname, ") overlaps binding ", j, " (buffer ", c, ", arena [", other->offset(), ", ",
            other->offset() + other->size_bytes(), "))"));
    }
  }
  // The grid: one the kernel was generated for, with the launch's scalars
  // and buffers.
  std::vector<std::string> programs;
  absl::Status first = absl::OkStatus();
  for (const plan::KernelGrid* g : *k.grids()) {
    programs.push_back(absl::StrCat(g->programs()));
    if (g->programs() != la.programs()) continue;
    absl::Status s = CheckGrid(p, la, k, *g);
    if (s.ok()) return s;
    if (first.ok()) first = s;
  }
  if (!first.ok()) return first;
  return absl::InvalidArgumentError(absl::StrCat("runs ", la.programs(), " programs, but ", kname,
                                                 " was generated for grids of ", absl::StrJoin(programs, ", "),
                                                 " programs"));
}

absl::Status CheckFunction(const plan::Plan& p, const Launches* launches, const Specs* inputs,
                           const Specs* outputs, const std::string& prefix) {
  uint32_t nkernels = Len(p.kernels()), nbuf = Len(p.buffers());
  for (uint32_t l = 0; l < Len(launches); ++l) {
    const plan::Launch* la = launches->Get(l);
    std::string where = absl::StrCat(prefix, "launch ", l);
    if (la->location() && la->location()->size() > 0)
      absl::StrAppend(&where, " (", la->location()->str(), ")");
    if (la->kernel() >= nkernels)
      return absl::InvalidArgumentError(absl::StrCat(where, ": refers to kernel ", la->kernel(),
                                                     ", but the plan has ", nkernels, " kernels"));
    const plan::Kernel* k = p.kernels()->Get(la->kernel());
    if (la->block_x() > 1024 || la->block_x() % 32 != 0)
      return absl::InvalidArgumentError(absl::StrCat(where, ": block_x ", la->block_x(),
                                                     " is not a whole number of warps up to 1024"));
    if (Len(la->bindings()) != k->num_buffers())
      return absl::InvalidArgumentError(absl::StrCat(where, ": kernel '", k->name()->str(), "' takes ",
                                                     k->num_buffers(), " buffers, but the launch binds ",
                                                     Len(la->bindings())));
    if (Len(la->scalars()) != k->num_scalars())
      return absl::InvalidArgumentError(absl::StrCat(where, ": kernel '", k->name()->str(), "' takes ",
                                                     k->num_scalars(), " scalars, but the launch passes ",
                                                     Len(la->scalars())));
    for (uint32_t i = 0; i < Len(la->bindings()); ++i)
      if (la->bindings()->Get(i) >= nbuf)
        return absl::InvalidArgumentError(absl::StrCat(where, ": binding ", i, " refers to buffer ",
                                                       la->bindings()->Get(i), ", but the plan has ",
                                                       nbuf, " buffers"));
    if (auto s = CheckLaunchSemantics(p, *la, *k); !s.ok())
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
  }

  if (auto s = CheckTensorSpecs(p, inputs, false, prefix); !s.ok()) return s;
  if (auto s = CheckTensorSpecs(p, outputs, true, prefix); !s.ok()) return s;
  return absl::OkStatus();
}

// Executable e's checksum; an error naming it when the bytes changed.
// A CUDA entry point's tile variants (plan.fbs TileVariant): rows that
// cover every grid of the kernel, launch shapes the device accepts, and
// parameters that name the kernel's bindings, with tensor maps TMA can
// encode that stay inside their binding at every grid. The map's address
// (its alignment) is checked when the session encodes it.
absl::Status CheckTileVariants(const plan::EntryPoint& ep, const plan::Kernel& k, const std::string& where) {
  const auto* tiles = ep.tiles();
  const uint64_t per_row = ep.programs_per_row(), unit = ep.rows_per_unit();
  if (unit == 0) return absl::InvalidArgumentError(absl::StrCat(where, ": rows_per_unit 0"));
  if (per_row == 0)
    return absl::InvalidArgumentError(absl::StrCat(where, ": tile variants but programs_per_row 0"));
  if (Len(k.grids()) == 0) return absl::InvalidArgumentError(absl::StrCat(where, ": its kernel has no grids"));
  uint64_t max_rows = 0;
  for (const plan::KernelGrid* g : *k.grids()) {
    if (g->programs() % per_row != 0)
      return absl::InvalidArgumentError(absl::StrCat(where, ": a grid of ", g->programs(),
                                                     " programs is not whole rows of ", per_row));
    max_rows = std::max(max_rows, g->programs() / per_row * unit);
  }
  constexpr uint32_t kMaxDynamicShared = 227 * 1024;
  uint64_t prev = 0;
  for (uint32_t v = 0; v < tiles->size(); ++v) {
    const plan::TileVariant* t = tiles->Get(v);
    std::string at = absl::StrCat(where, ": tile variant ", v, " ('", t->name()->str(), "')");
    if (t->max_rows() <= prev)
      return absl::InvalidArgumentError(absl::StrCat(at, ": max_rows ", t->max_rows(),
                                                     " does not increase (previous ", prev, ")"));
    prev = t->max_rows();
    if (t->threads() == 0 || t->threads() > 1024 || t->threads() % 32 != 0)
      return absl::InvalidArgumentError(absl::StrCat(at, ": ", t->threads(),
                                                     " threads (a multiple of 32, at most 1024)"));
    if (t->dynamic_shared_bytes() > kMaxDynamicShared)
      return absl::InvalidArgumentError(absl::StrCat(at, ": ", t->dynamic_shared_bytes(),
                                                     " bytes of dynamic shared memory exceed ",
                                                     kMaxDynamicShared));
    if (t->rows_per_tile() == 0 || t->column_tiles() == 0)
      return absl::InvalidArgumentError(absl::StrCat(at, ": no tiles (rows_per_tile ", t->rows_per_tile(),
                                                     ", column_tiles ", t->column_tiles(), ")"));
    if (Len(t->params()) == 0) return absl::InvalidArgumentError(absl::StrCat(at, ": no parameters"));
    for (uint32_t i = 0; i < t->params()->size(); ++i) {
      const plan::TileParam* pr = t->params()->Get(i);
      std::string pat = absl::StrCat(at, ", parameter ", i);
      if (pr->kind() > plan::TileParamKind::MAX)
        return absl::InvalidArgumentError(absl::StrCat(pat, ": unknown kind ", static_cast<int>(pr->kind())));
      if (pr->kind() == plan::TileParamKind::rows || pr->kind() == plan::TileParamKind::first_row) continue;
      if (pr->binding() >= k.num_buffers())
        return absl::InvalidArgumentError(absl::StrCat(pat, ": binding ", pr->binding(), " of a kernel with ",
                                                       k.num_buffers()));
      if (pr->kind() == plan::TileParamKind::binding) {
        for (const plan::KernelGrid* g : *k.grids()) {
          const uint64_t rows = g->programs() / per_row * unit;
          if (pr->binding() < Len(g->binding_bytes()) && pr->row_bytes() > 0 &&
              (rows > UINT64_MAX / pr->row_bytes() || rows * pr->row_bytes() > g->binding_bytes()->Get(pr->binding())))
            return absl::InvalidArgumentError(absl::StrCat(pat, ": ", rows, " rows of ", pr->row_bytes(),
                                                           " bytes exceed binding ", pr->binding(), "'s ",
                                                           g->binding_bytes()->Get(pr->binding()), " bytes"));
        }
        continue;
      }
      if (pr->row_bytes() != 0)
        return absl::InvalidArgumentError(absl::StrCat(pat, ": a tensor map cannot advance by rows"));
      const plan::TensorMapSpec* m = pr->map();
      if (!m) return absl::InvalidArgumentError(absl::StrCat(pat, ": tensor map without its spec"));
      const uint32_t rank = Len(m->dims());
      size_t elem = DTypeValid(static_cast<uint8_t>(m->dtype())) ? DTypeSize(static_cast<DType>(m->dtype())) : 0;
      const hopper::Swizzle sw = SwizzleOf(m->swizzle_bytes());
      if (elem == 0 || rank < 1 || rank > 5 || Len(m->strides_bytes()) + 1 != rank || Len(m->box()) != rank ||
          (m->swizzle_bytes() != 0 && sw == hopper::Swizzle::kNone))
        return absl::InvalidArgumentError(absl::StrCat(pat, ": malformed tensor map (dtype ",
                                                       static_cast<int>(m->dtype()), ", ", rank, " dims, ",
                                                       Len(m->strides_bytes()), " strides, ", Len(m->box()),
                                                       " box extents, swizzle ", m->swizzle_bytes(), ")"));
      uint64_t dims[5], strides[5] = {0};
      uint32_t box[5];
      // One past the last byte of the map without its outermost dimension
      // (`inner`: a weight-table map's one weight), that dimension's step, and
      // one past the last byte of the whole map.
      uint64_t inner = elem, outer_step = elem, last_byte = elem;
      for (uint32_t d = 0; d < rank; ++d) {
        dims[d] = m->dims()->Get(d);
        box[d] = m->box()->Get(d);
        if (d > 0) strides[d - 1] = m->strides_bytes()->Get(d - 1);
        if (dims[d] == 0) return absl::InvalidArgumentError(absl::StrCat(pat, ": tensor map dimension ", d, " is 0"));
        const uint64_t step = d == 0 ? elem : strides[d - 1];
        if (step != 0 && dims[d] - 1 > (UINT64_MAX - last_byte) / step)
          return absl::InvalidArgumentError(absl::StrCat(pat, ": tensor map extent overflows"));
        inner = last_byte;
        outer_step = step;
        last_byte += (dims[d] - 1) * step;
      }
      if (const char* why = hopper::checkTensorMapBox(rank, dims, strides, box, static_cast<uint32_t>(elem), 0, sw))
        return absl::InvalidArgumentError(absl::StrCat(pat, ": tensor map: ", why));
      if (m->table()) {
        // One weight per entry, rank - 1 dimensions each.
        const uint64_t per_entry = inner;
        for (const plan::KernelGrid* g : *k.grids()) {
          const uint32_t entries =
              pr->binding() < Len(g->table_entries()) ? g->table_entries()->Get(pr->binding()) : 0;
          if (entries == 0 || entries != dims[rank - 1] || rank < 2)
            return absl::InvalidArgumentError(absl::StrCat(pat, ": a weight-table map of ", dims[rank - 1],
                                                           " entries over binding ", pr->binding(), ", which has ",
                                                           entries, " at a grid of ", g->programs(), " programs"));
          const uint64_t holds = g->binding_bytes()->Get(pr->binding()) / entries;
          if (per_entry > holds)
            return absl::InvalidArgumentError(absl::StrCat(pat, ": tensor map spans ", per_entry,
                                                           " bytes of each weight of binding ", pr->binding(),
                                                           ", which hold ", holds));
        }
        continue;
      }
      for (const plan::KernelGrid* g : *k.grids()) {
        // A rows dimension spans the grid's rows.
        uint64_t span = last_byte;
        if (m->rows_dim()) {
          const uint64_t rows = g->programs() / per_row * unit;
          if (rows == 0) continue;
          span = inner + (rows - 1) * outer_step;
        }
        if (pr->binding() < Len(g->binding_bytes()) && span > g->binding_bytes()->Get(pr->binding()))
          return absl::InvalidArgumentError(absl::StrCat(pat, ": tensor map spans ", span,
                                                         " bytes of binding ", pr->binding(), ", which holds ",
                                                         g->binding_bytes()->Get(pr->binding()), " at a grid of ",
                                                         g->programs(), " programs"));
      }
    }
  }
  if (prev < max_rows)
    return absl::InvalidArgumentError(absl::StrCat(where, ": tile variants hold up to ", prev,
                                                   " rows, but the kernel's grids have up to ", max_rows));
  return absl::OkStatus();
}

absl::Status CheckExecutableChecksum(const plan::Executable& x, uint32_t e) {
  uint64_t h = plan::ExecutableChecksum(x.binary() ? x.binary()->data() : nullptr, Len(x.binary()),
                                        x.ptx() ? x.ptx()->data() : nullptr, x.ptx() ? x.ptx()->size() : 0);
  if (h == x.checksum()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "executable ", e, " (", x.arch()->str(), "): checksum mismatch: its binary (", Len(x.binary()),
      " bytes) or PTX (", x.ptx() ? x.ptx()->size() : 0, " bytes) is damaged (XXH64 ", Hex(h), ", recorded ",
      Hex(x.checksum()), ")"));
}

// Plan.tokenizer and Plan.generation: present means usable.
absl::Status CheckGenerationAssets(const plan::Plan& p) {
  if (const plan::TokenizerData* t = p.tokenizer(); t && Len(t->json()) == 0)
    return absl::InvalidArgumentError("tokenizer: the tokenizer table holds no tokenizer.json bytes");
  const plan::GenerationConfig* g = p.generation();
  if (!g) return absl::OkStatus();
  for (uint32_t i = 0; i < Len(g->eos_token_ids()); ++i)
    if (g->eos_token_ids()->Get(i) < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("generation: eos_token_ids[", i, "] is ", g->eos_token_ids()->Get(i), " (a token id is >= 0)"));
  if (g->bos_token_id() < -1)
    return absl::InvalidArgumentError(
        absl::StrCat("generation: bos_token_id is ", g->bos_token_id(), " (a token id, or -1 for none)"));
  if (!(g->temperature() >= 0) || !(g->top_p() > 0 && g->top_p() <= 1) || g->top_k() < 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "generation: sampling defaults out of range (temperature ", g->temperature(), " must be >= 0, top_p ",
        g->top_p(), " in (0, 1], top_k ", g->top_k(), " >= 0)"));
  return absl::OkStatus();
}

absl::Status CheckSemantics(const plan::Plan& p) {
  uint32_t nkernels = Len(p.kernels()), nbuf = Len(p.buffers()), nweights = Len(p.weights());
  uint64_t weight_data = Len(p.weight_data());

  // Executables.
  for (uint32_t e = 0; e < Len(p.executables()); ++e) {
    const plan::Executable* x = p.executables()->Get(e);
    std::string where = absl::StrCat("executable ", e, " (", x->arch()->str(), ")");
    if (x->target() > plan::TargetKind::MAX)
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown target ", static_cast<int>(x->target())));
    if (auto s = CheckExecutableChecksum(*x, e); !s.ok()) return s;
    for (uint32_t j = 0; j < e; ++j)
      if (p.executables()->Get(j)->target() == x->target())
        return absl::InvalidArgumentError(absl::StrCat(where, ": duplicate target ",
                                                       plan::EnumNameTargetKind(x->target()),
                                                       " (also executable ", j, ")"));
    if (x->target() == plan::TargetKind::cpu && Len(x->binary()) == 0)
      return absl::InvalidArgumentError(absl::StrCat(where, ": CPU executable has no binary"));
    if (x->target() == plan::TargetKind::cuda && Len(x->binary()) == 0 &&
        (!x->ptx() || x->ptx()->size() == 0))
      return absl::InvalidArgumentError(absl::StrCat(where, ": CUDA executable has neither cubin nor PTX"));
    std::vector<int> seen(nkernels, -1);
    for (uint32_t i = 0; i < x->entry_points()->size(); ++i) {
      const plan::EntryPoint* ep = x->entry_points()->Get(i);
      if (ep->kernel() >= nkernels)
        return absl::InvalidArgumentError(absl::StrCat(where, ": entry point ", i, " ('", ep->name()->str(),
                                                       "') refers to kernel ", ep->kernel(),
                                                       ", but the plan has ", nkernels, " kernels"));
      if (seen[ep->kernel()] >= 0)
        return absl::InvalidArgumentError(absl::StrCat(where, ": kernel ", ep->kernel(),
                                                       " has two entry points (", seen[ep->kernel()],
                                                       " and ", i, ")"));
      const std::string& kname = p.kernels()->Get(ep->kernel())->name()->str();
      if (ep->name()->str() != kname)
        return absl::InvalidArgumentError(absl::StrCat(where, ": entry point ", i, " ('", ep->name()->str(),
                                                       "') is for kernel ", ep->kernel(), " ('", kname,
                                                       "'), but entry points are named after their kernel"));
      if (ep->block_x() == 0)
        return absl::InvalidArgumentError(absl::StrCat(where, ": entry point ", i, " ('",
                                                       ep->name()->str(), "') has block_x 0"));
      if (ep->phases() == 0 || ep->phases() > plan::kMaxEntryPhases ||
          (ep->phases() > 1 && x->target() != plan::TargetKind::cpu))
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": entry point ", i, " ('", ep->name()->str(), "') has ", ep->phases(),
                         " phases (CPU entry points have 1 to ", plan::kMaxEntryPhases, ", others 1)"));
      if (Len(ep->tiles()) > 0) {
        if (x->target() != plan::TargetKind::cuda)
          return absl::InvalidArgumentError(absl::StrCat(where, ": entry point ", i, " ('", ep->name()->str(),
                                                         "') has tile variants, which only CUDA runs"));
        if (auto s = CheckTileVariants(*ep, *p.kernels()->Get(ep->kernel()),
                                       absl::StrCat(where, ": entry point ", i, " ('", ep->name()->str(), "')"));
            !s.ok())
          return s;
      }
      seen[ep->kernel()] = static_cast<int>(i);
    }
    for (uint32_t k = 0; k < nkernels; ++k)
      if (seen[k] < 0)
        return absl::InvalidArgumentError(absl::StrCat(where, ": no entry point for kernel ", k, " ('",
                                                       p.kernels()->Get(k)->name()->str(), "')"));
  }

  // Kernels: distinct names (entry points are found by them).
  std::map<std::string, uint32_t> kernel_names;
  for (uint32_t k = 0; k < nkernels; ++k) {
    const plan::Kernel* kr = p.kernels()->Get(k);
    auto [it, inserted] = kernel_names.emplace(kr->name()->str(), k);
    if (!inserted)
      return absl::InvalidArgumentError(absl::StrCat("kernel ", k, " ('", kr->name()->str(),
                                                     "'): duplicate name (also kernel ", it->second, ")"));
    if (auto s = CheckKernel(*kr, k); !s.ok()) return s;
  }

  // Weights.
  for (uint32_t w = 0; w < nweights; ++w) {
    const plan::Weight* wt = p.weights()->Get(w);
    std::string where = absl::StrCat("weight ", w, " ('", wt->name()->str(), "')");
    if (!DTypeValid(static_cast<uint8_t>(wt->dtype())))
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown dtype ", static_cast<int>(wt->dtype())));
    auto bytes = TensorBytes(wt->dtype(), wt->shape(), where);
    if (!bytes.ok()) return bytes.status();
    if (*bytes != wt->size_bytes())
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": ", DTypeName(static_cast<DType>(wt->dtype())), " ", ShapeOf(wt->shape()), " is ",
          *bytes, " bytes, but size_bytes is ", wt->size_bytes()));
    if (wt->packed()) {
      if (wt->packed_offset() % 64 != 0)
        return absl::InvalidArgumentError(absl::StrCat(where, ": packed_offset ", wt->packed_offset(),
                                                       " is not 64-aligned"));
      if (wt->packed_offset() > weight_data || wt->size_bytes() > weight_data - wt->packed_offset())
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": packed bytes [", wt->packed_offset(), ", ", wt->packed_offset() + wt->size_bytes(),
            ") lie outside weight_data (", weight_data, " bytes)"));
    } else {
      const plan::ExternalData* ext = wt->external();
      // Neither packed nor external: a plan compiled with --no-weights, which
      // can be inspected but not run (ResolveWeights reports it).
      if (!ext) continue;
      if (ext->path()->size() == 0)
        return absl::InvalidArgumentError(absl::StrCat(where, ": external weight without a path"));
      if (ext->size() != wt->size_bytes())
        return absl::InvalidArgumentError(absl::StrCat(where, ": external size ", ext->size(),
                                                       " != size_bytes ", wt->size_bytes()));
      if (ext->offset() > ext->file_size() || ext->size() > ext->file_size() - ext->offset())
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": external range [", ext->offset(), ", ", ext->offset() + ext->size(),
            ") lies outside the file ('", ext->path()->str(), "', ", ext->file_size(), " bytes)"));
    }
  }
  // Weight file identities: one per path, sampling within limits, sized as
  // the weights that refer to the file say.
  std::map<std::string, uint32_t> file_index;
  for (uint32_t f = 0; f < Len(p.weight_files()); ++f) {
    const plan::WeightFile* wf = p.weight_files()->Get(f);
    std::string where = absl::StrCat("weight file ", f, " ('", wf->path()->str(), "')");
    if (wf->path()->size() == 0) return absl::InvalidArgumentError(absl::StrCat(where, ": empty path"));
    if (auto [it, fresh] = file_index.emplace(wf->path()->str(), f); !fresh)
      return absl::InvalidArgumentError(absl::StrCat(where, ": duplicate path (also weight file ", it->second, ")"));
    if (wf->sample_bytes() == 0 || wf->sample_bytes() > plan::kMaxSampleBytes || wf->sample_count() == 0 ||
        wf->sample_count() > plan::kMaxSampleCount)
      return absl::InvalidArgumentError(absl::StrCat(where, ": sampling ", wf->sample_count(), " chunks of ",
                                                     wf->sample_bytes(), " bytes is outside [1, ",
                                                     plan::kMaxSampleCount, "] chunks of [1, ",
                                                     plan::kMaxSampleBytes, "] bytes"));
  }
  for (uint32_t w = 0; w < nweights; ++w) {
    const plan::ExternalData* ext = p.weights()->Get(w)->external();
    if (p.weights()->Get(w)->packed() || !ext) continue;
    auto it = file_index.find(ext->path()->str());
    if (it == file_index.end()) continue;  // no identity recorded: hashed in full
    uint64_t size = p.weight_files()->Get(it->second)->size();
    if (size != ext->file_size())
      return absl::InvalidArgumentError(absl::StrCat("weight ", w, " ('", p.weights()->Get(w)->name()->str(),
                                                     "'): its file '", ext->path()->str(), "' has ",
                                                     ext->file_size(), " bytes, but weight file ", it->second,
                                                     " records ", size));
  }

  // State region.
  if (p.state_size() > p.arena_size())
    return absl::InvalidArgumentError(absl::StrCat("state_size ", p.state_size(),
                                                   " exceeds arena_size ", p.arena_size()));

  // Buffers.
  for (uint32_t b = 0; b < nbuf; ++b) {
    const plan::Buffer* buf = p.buffers()->Get(b);
    std::string where = absl::StrCat("buffer ", b);
    if (buf->kind() > BufferKind::MAX)
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown kind ", static_cast<int>(buf->kind())));
    if (buf->kind() == BufferKind::weight) {
      if (buf->weight() >= nweights)
        return absl::InvalidArgumentError(absl::StrCat(where, ": refers to weight ", buf->weight(),
                                                       ", but the plan has ", nweights, " weights"));
      const plan::Weight* wt = p.weights()->Get(buf->weight());
      if (wt->size_bytes() != buf->size_bytes())
        return absl::InvalidArgumentError(absl::StrCat(where, ": size_bytes ", buf->size_bytes(),
                                                       " != weight ", buf->weight(), " ('",
                                                       wt->name()->str(), "') size_bytes ",
                                                       wt->size_bytes()));
    } else if (buf->kind() == BufferKind::weight_table) {
      const auto* list = buf->weight_list();
      if (!list || list->size() == 0)
        return absl::InvalidArgumentError(absl::StrCat(where, ": weight_table without weights"));
      uint64_t total = 0;
      for (uint32_t i = 0; i < list->size(); ++i) {
        if (list->Get(i) >= nweights)
          return absl::InvalidArgumentError(absl::StrCat(where, ": weight_list[", i, "] refers to weight ",
                                                         list->Get(i), ", but the plan has ", nweights,
                                                         " weights"));
        total += p.weights()->Get(list->Get(i))->size_bytes();
      }
      if (total != buf->size_bytes())
        return absl::InvalidArgumentError(absl::StrCat(where, ": size_bytes ", buf->size_bytes(),
                                                       " != the sum of its weights' sizes ", total));
    } else {
      // Arena buffers: intermediate, input, output, state.
      if (buf->offset() % 256 != 0)
        return absl::InvalidArgumentError(absl::StrCat(where, " (", KindName(buf->kind()), "): arena offset ",
                                                       buf->offset(), " is not 256-aligned"));
      if (buf->offset() > p.arena_size() || buf->size_bytes() > p.arena_size() - buf->offset())
        return absl::InvalidArgumentError(absl::StrCat(
            where, " (", KindName(buf->kind()), "): [", buf->offset(), ", ",
            buf->offset() + buf->size_bytes(), ") overflows the arena (arena_size ", p.arena_size(), ")"));
      if (buf->kind() == BufferKind::state) {
        if (buf->offset() > p.state_size() || buf->size_bytes() > p.state_size() - buf->offset())
          return absl::InvalidArgumentError(absl::StrCat(
              where, " (state): [", buf->offset(), ", ", buf->offset() + buf->size_bytes(),
              ") lies outside the state region [0, ", p.state_size(), ")"));
      } else if (buf->offset() < p.state_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, " (", KindName(buf->kind()), "): offset ", buf->offset(),
            " lies inside the state region [0, ", p.state_size(), "), which only state buffers may use"));
      }
    }
  }

  // Functions: forward (the top level), then Plan.functions.
  if (auto s = CheckFunction(p, p.launches(), p.inputs(), p.outputs(), ""); !s.ok()) return s;
  const auto* fns = p.functions();
  for (uint32_t f = 0; f < Len(fns); ++f) {
    const plan::Function* fn = fns->Get(f);
    std::string name = fn->name()->str();
    if (name.empty())
      return absl::InvalidArgumentError(absl::StrCat("function ", f, ": empty name"));
    if (name == kForwardFunction)
      return absl::InvalidArgumentError(absl::StrCat(
          "function ", f, " is named 'forward', which is the top-level entry point "
          "(Plan.launches/inputs/outputs)"));
    for (uint32_t g = 0; g < f; ++g)
      if (fns->Get(g)->name()->str() == name)
        return absl::InvalidArgumentError(absl::StrCat("function ", f, " ('", name,
                                                       "'): duplicate name (also function ", g, ")"));
    if (auto s = CheckFunction(p, fn->launches(), fn->inputs(), fn->outputs(),
                               absl::StrCat("function '", name, "': "));
        !s.ok())
      return s;
  }
  return CheckGenerationAssets(p);
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

Plan::~Plan() = default;

absl::StatusOr<std::shared_ptr<const Plan>> Plan::Open(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok())
    return absl::Status(file.status().code(), absl::StrCat("plan: ", file.status().message()));
  std::unique_ptr<Plan> p(new Plan());
  p->data_ = (*file)->data();
  p->size_ = (*file)->size();
  p->file_ = std::move(*file);
  p->path_ = path;
  p->base_dir_ = DirName(path);
  return Finish(std::move(p));
}

absl::StatusOr<std::shared_ptr<const Plan>> Plan::OpenFromMemory(std::string_view bytes,
                                                                 std::string base_dir,
                                                                 std::string what) {
  std::unique_ptr<Plan> p(new Plan());
  size_t alloc = (bytes.size() + 63) / 64 * 64;
  void* mem = std::aligned_alloc(64, alloc > 0 ? alloc : 64);
  if (!mem) return absl::ResourceExhaustedError("plan: out of memory");
  if (!bytes.empty()) std::memcpy(mem, bytes.data(), bytes.size());
  p->owned_ = std::unique_ptr<uint8_t, void (*)(void*)>(static_cast<uint8_t*>(mem), std::free);
  p->data_ = p->owned_.get();
  p->size_ = bytes.size();
  p->path_ = std::move(what);
  p->base_dir_ = std::move(base_dir);
  return Finish(std::move(p));
}

namespace {
TensorInfo Describe(const plan::TensorSpec& s) {
  TensorInfo t;
  t.name = s.name()->str();
  t.dtype = static_cast<DType>(s.dtype());
  t.shape = plan::ToVector(s.shape());
  if (s.dim_symbols()) t.dim_symbols.assign(s.dim_symbols()->begin(), s.dim_symbols()->end());
  if (const plan::ValueRange* r = s.value_range()) {
    t.has_value_range = true;
    t.value_min = r->min();
    t.value_max = r->max();
  }
  return t;
}
}  // namespace

absl::StatusOr<std::shared_ptr<const Plan>> Plan::Finish(std::unique_ptr<Plan> p) {
  auto err = [&](absl::string_view msg) {
    return absl::InvalidArgumentError(absl::StrCat("plan '", p->path_, "': ", msg));
  };
  const uint8_t* data = p->data_;
  if (p->size_ < 8 + plan::kTrailerSize)
    return err(absl::StrCat("file too small to be a Kiln plan (", p->size_, " bytes)"));
  size_t fb_size = p->size_ - plan::kTrailerSize;  // the FlatBuffer, before the trailer
  if (fb_size >= FLATBUFFERS_MAX_BUFFER_SIZE)
    return err(absl::StrCat("file too large (", p->size_, " bytes; the limit is 2 GiB: keep weights external)"));
  if (!flatbuffers::BufferHasIdentifier(data, kPlanFileIdentifier)) {
    std::string found;
    for (int i = 4; i < 8; ++i) {
      char c = static_cast<char>(data[i]);
      found += (c >= 32 && c < 127) ? std::string(1, c) : absl::StrFormat("\\x%02x", data[i]);
    }
    return err(absl::StrCat("not a Kiln plan (file identifier '", found, "', expected '",
                            kPlanFileIdentifier, "')"));
  }
  auto verifies = [&](size_t size) {
    flatbuffers::Verifier verifier(data, size, /*max_depth=*/64, /*max_tables=*/100000000);
    return plan::VerifyPlanBuffer(verifier);
  };
  // The checksum trailer, before anything is parsed.
  uint64_t recorded = 0;
  if (!plan::ReadTrailer(data, p->size_, &recorded)) {
    // A plan of an older format (no trailer), or a truncated or damaged file.
    if (verifies(p->size_) && plan::GetPlan(data)->format_version() != kPlanFormatVersion)
      return err(absl::StrCat("unsupported format_version ", plan::GetPlan(data)->format_version(),
                              " (this runtime supports ", kPlanFormatVersion, "; recompile the model)"));
    return err(absl::StrCat("truncated or damaged: the file (", p->size_,
                            " bytes) does not end with the plan checksum trailer ('", plan::kTrailerMagic, "')"));
  }
  uint64_t actual = plan::Xxh64(data, fb_size);
  if (actual != recorded) {
    // Name the damaged part when the structure still allows it.
    std::string part;
    if (verifies(fb_size))
      for (uint32_t e = 0; e < Len(plan::GetPlan(data)->executables()); ++e)
        if (auto s = CheckExecutableChecksum(*plan::GetPlan(data)->executables()->Get(e), e);
            !s.ok() && part.empty())
          part = absl::StrCat("; ", s.message());
    return err(absl::StrCat("checksum mismatch: the file is damaged (XXH64 of its first ", fb_size, " bytes is ",
                            Hex(actual), ", the trailer records ", Hex(recorded), ")", part));
  }
  if (!verifies(fb_size))
    return err("corrupt plan: flatbuffers verification failed (the checksum matches: the writer produced an invalid plan)");
  p->root_ = plan::GetPlan(data);
  if (p->root_->format_version() != kPlanFormatVersion)
    return err(absl::StrCat("unsupported format_version ", p->root_->format_version(),
                            " (this runtime supports ", kPlanFormatVersion, ")"));
  if (auto s = CheckSemantics(*p->root_); !s.ok()) return err(s.message());
  // Entry points: forward (the top level), then Plan.functions.
  auto add = [&](std::string name, const Launches* launches, const Specs* inputs, const Specs* outputs) {
    Function f;
    f.name = std::move(name);
    for (uint32_t i = 0; i < Len(launches); ++i) f.launches.push_back(launches->Get(i));
    for (uint32_t i = 0; i < Len(inputs); ++i) f.inputs.push_back(inputs->Get(i));
    for (uint32_t i = 0; i < Len(outputs); ++i) f.outputs.push_back(outputs->Get(i));
    for (const plan::TensorSpec* spec : f.inputs) f.input_info.push_back(Describe(*spec));
    for (const plan::TensorSpec* spec : f.outputs) f.output_info.push_back(Describe(*spec));
    p->functions_.push_back(std::move(f));
  };
  const plan::Plan& root = *p->root_;
  add(kForwardFunction, root.launches(), root.inputs(), root.outputs());
  for (uint32_t i = 0; i < Len(root.functions()); ++i) {
    const plan::Function* fn = root.functions()->Get(i);
    add(fn->name()->str(), fn->launches(), fn->inputs(), fn->outputs());
  }
  return std::shared_ptr<const Plan>(std::move(p));
}

namespace {
// The path of an external weight's file: ExternalData.path, relative to the
// plan's directory unless absolute.
std::string ExternalPath(const plan::ExternalData& ext, const std::string& base_dir) {
  std::string rel = ext.path()->str();
  return (!rel.empty() && rel[0] == '/') ? rel : base_dir + "/" + rel;
}

std::string WeightWhere(const plan::Weight& wt) {
  return absl::StrCat("weight '", wt.name()->str(), "' in ", wt.external()->path()->str());
}

// XXH64 of the given weights' bytes against the plan: the first mismatch in
// plan order, with the count, or OK.
absl::Status HashWeights(const plan::Plan& p, const std::vector<uint32_t>& which,
                         const std::vector<WeightView>& views, const std::string& base_dir,
                         const WeightVerifyOptions& options) {
  std::vector<plan::HashJob> jobs;
  for (uint32_t w : which) jobs.push_back({views[w].data, views[w].size});
  std::function<void(const plan::HashProgress&)> progress;
  if (options.progress)
    progress = [&](const plan::HashProgress& pr) { options.progress(pr.done_bytes, pr.total_bytes); };
  std::vector<uint64_t> hashes =
      plan::ParallelXxh64(jobs, options.num_threads, progress, options.progress_interval_s);
  size_t bad = 0, first = 0;
  for (size_t i = which.size(); i-- > 0;)
    if (hashes[i] != p.weights()->Get(which[i])->external()->xxh64()) ++bad, first = i;
  if (bad == 0) return absl::OkStatus();
  const plan::Weight& wt = *p.weights()->Get(which[first]);
  return absl::FailedPreconditionError(absl::StrCat(
      WeightWhere(wt), ": file changed since compile (hash mismatch: XXH64 ", Hex(hashes[first]),
      ", the plan records ", Hex(wt.external()->xxh64()), ") [", ExternalPath(*wt.external(), base_dir), "]",
      bad > 1 ? absl::StrCat("; ", bad, " of ", which.size(), " weights differ") : ""));
}
}  // namespace

absl::StatusOr<const std::vector<WeightView>*> Plan::ResolveWeights() const {
  std::call_once(weights_once_, [this] {
    const plan::Plan& p = *root_;
    std::map<std::string, const plan::WeightFile*> identities;
    for (uint32_t f = 0; f < Len(p.weight_files()); ++f)
      identities[p.weight_files()->Get(f)->path()->str()] = p.weight_files()->Get(f);
    std::vector<WeightView> views;
    std::vector<uint32_t> unidentified;  // weights in files without a recorded identity
    std::map<std::string, MappedFile*> files;  // by full path: files are shared between weights
    struct Identify {
      const MappedFile* file;
      const plan::WeightFile* recorded;
      std::string where, full;  // the first weight in the file, for errors; its path
    };
    std::vector<Identify> to_identify;
    for (uint32_t w = 0; w < Len(p.weights()); ++w) {
      const plan::Weight* wt = p.weights()->Get(w);
      if (wt->packed()) {
        views.push_back({p.weight_data()->data() + wt->packed_offset(), wt->size_bytes()});
        continue;
      }
      const plan::ExternalData* ext = wt->external();
      if (!ext) {
        weights_status_ = absl::FailedPreconditionError(absl::StrCat(
            "weight '", wt->name()->str(),
            "' has no data: the plan was compiled with --no-weights and cannot run"));
        return;
      }
      std::string full = ExternalPath(*ext, base_dir_);
      std::string where = WeightWhere(*wt);
      MappedFile*& file = files[full];
      bool first_use = !file;
      if (first_use) {
        auto opened = MappedFile::Open(full);
        if (!opened.ok()) {
          weights_status_ = absl::Status(opened.status().code(),
                                         absl::StrCat(where, ": ", opened.status().message()));
          return;
        }
        weight_files_.push_back(std::move(*opened));
        file = weight_files_.back().get();
      }
      if (file->size() != ext->file_size()) {
        weights_status_ = absl::FailedPreconditionError(absl::StrCat(
            where, ": file changed since compile (size ", file->size(), " bytes, expected ",
            ext->file_size(), ") [", full, "]"));
        return;
      }
      auto id = identities.find(ext->path()->str());
      if (id == identities.end()) {
        unidentified.push_back(w);
      } else if (first_use) {
        to_identify.push_back({file, id->second, where, full});
      }
      views.push_back({file->data() + ext->offset(), ext->size()});
    }
    // Identities: every sampled range of every file prefetched first, so that
    // the disk reads them concurrently, then hashed in plan order.
    for (const Identify& f : to_identify)
      for (const auto& [offset, length] :
           plan::SampleRanges(f.file->size(), f.recorded->sample_bytes(), f.recorded->sample_count()))
        f.file->Prefetch(offset, length);
    for (const Identify& f : to_identify) {
      const plan::WeightFile& wf = *f.recorded;
      uint64_t h = plan::SampledXxh64(f.file->data(), f.file->size(), wf.sample_bytes(), wf.sample_count());
      if (h != wf.sample_xxh64()) {
        weights_status_ = absl::FailedPreconditionError(absl::StrCat(
            f.where, ": file changed since compile (its sampled contents differ: XXH64 of ", wf.sample_count(),
            " chunks of ", wf.sample_bytes(), " bytes is ", Hex(h), ", the plan records ", Hex(wf.sample_xxh64()),
            "; the file was replaced or rewritten) [", f.full, "]"));
        return;
      }
    }
    if (!unidentified.empty()) {
      weights_status_ = HashWeights(p, unidentified, views, base_dir_, {});
      if (!weights_status_.ok()) return;
    }
    weights_ = std::move(views);
  });
  if (!weights_status_.ok()) return weights_status_;
  return &weights_;
}

absl::Status Plan::VerifyWeights(const WeightVerifyOptions& options) const {
  auto views = ResolveWeights();
  if (!views.ok()) return views.status();
  std::vector<uint32_t> external;
  for (uint32_t w = 0; w < Len(root_->weights()); ++w)
    if (!root_->weights()->Get(w)->packed()) external.push_back(w);
  return HashWeights(*root_, external, **views, base_dir_, options);
}

namespace {
absl::StatusOr<size_t> FindSpec(const std::vector<const plan::TensorSpec*>& specs, std::string_view name_in,
                                const char* what, const std::string& function) {
  absl::string_view name(name_in.data(), name_in.size());
  std::vector<std::string> names;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i]->name()->string_view() == name_in) return i;
    names.push_back(absl::StrCat("'", specs[i]->name()->str(), "'"));
  }
  std::string prefix = function == kForwardFunction ? "" : absl::StrCat("function '", function, "': ");
  return absl::NotFoundError(absl::StrCat(prefix, "unknown ", what, " '", name, "'; the ",
                                          prefix.empty() ? "plan's" : "function's", " ", what,
                                          "s are: ", names.empty() ? "(none)" : absl::StrJoin(names, ", ")));
}
}  // namespace

const char* Version() { return KILN_VERSION; }

bool Plan::HasTokenizer() const { return root_->tokenizer() != nullptr; }

absl::StatusOr<std::unique_ptr<Tokenizer>> Plan::LoadTokenizer() const {
  const plan::TokenizerData* t = root_->tokenizer();
  if (!t)
    return absl::NotFoundError(absl::StrCat(
        "plan '", path_, "' carries no tokenizer: compile a Hugging Face checkpoint directory that has a "
        "tokenizer.json (kiln-compile warns when it cannot carry one), or give token ids"));
  std::string what = absl::StrCat("plan '", path_, "': tokenizer (from ",
                                  t->source() ? t->source()->str() : std::string("tokenizer.json"), ")");
  auto tok = Tokenizer::FromJson(
      std::string_view(reinterpret_cast<const char*>(t->json()->data()), t->json()->size()), what);
  if (!tok.ok()) return tok.status();
  return std::move(*tok);
}

std::optional<GenerationDefaults> Plan::Generation() const {
  const plan::GenerationConfig* g = root_->generation();
  if (!g) return std::nullopt;
  GenerationDefaults d;
  for (uint32_t i = 0; i < Len(g->eos_token_ids()); ++i) d.eos_token_ids.push_back(g->eos_token_ids()->Get(i));
  d.bos_token_id = g->bos_token_id();
  if (g->eos_source()) d.eos_source = g->eos_source()->str();
  if (g->bos_source()) d.bos_source = g->bos_source()->str();
  d.do_sample = g->do_sample();
  d.temperature = g->temperature();
  d.top_k = g->top_k();
  d.top_p = g->top_p();
  return d;
}

std::vector<std::string> Plan::FunctionNames() const {
  std::vector<std::string> names;
  for (const Function& f : functions_) names.push_back(f.name);
  return names;
}

absl::StatusOr<const Function*> Plan::FindFunction(std::string_view name) const {
  for (const Function& f : functions_)
    if (f.name == name) return &f;
  return absl::NotFoundError(absl::StrCat("plan has no function '", absl::string_view(name.data(), name.size()),
                                          "'; functions: ", absl::StrJoin(FunctionNames(), ", ")));
}

absl::StatusOr<size_t> Plan::FindInput(std::string_view name) const {
  return FindInput(kForwardFunction, name);
}
absl::StatusOr<size_t> Plan::FindOutput(std::string_view name) const {
  return FindOutput(kForwardFunction, name);
}
absl::StatusOr<size_t> Plan::FindInput(std::string_view function, std::string_view name) const {
  auto f = FindFunction(function);
  if (!f.ok()) return f.status();
  return FindSpec((*f)->inputs, name, "input", (*f)->name);
}
absl::StatusOr<size_t> Plan::FindOutput(std::string_view function, std::string_view name) const {
  auto f = FindFunction(function);
  if (!f.ok()) return f.status();
  return FindSpec((*f)->outputs, name, "output", (*f)->name);
}

}  // namespace kiln
