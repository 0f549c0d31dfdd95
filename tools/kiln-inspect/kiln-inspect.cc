// kiln-inspect: shows what a compiled plan contains.
//
//   kiln-inspect PLAN [--json]
#include <elf.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <memory>
#include <cctype>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kiln/runtime.h"
#include "plan_generated.h"
#include "plan_support.h"
#include "tool_cli.h"
#include "kiln/tokenizer.h"

namespace {

namespace fb = kiln::plan;

// A tiny JSON tree: null, bool, number (as text), string, array, object.
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  std::string text;  // number text, string value, or "true"/"false"
  std::vector<std::pair<std::string, Json>> items;  // arrays use empty keys

  static Json Str(std::string s) { Json j; j.kind = kString; j.text = std::move(s); return j; }
  template <typename T> static Json Num(T v) { Json j; j.kind = kNumber; j.text = absl::StrCat(v); return j; }
  static Json Bool(bool b) { Json j; j.kind = kBool; j.text = b ? "true" : "false"; return j; }
  static Json Arr() { Json j; j.kind = kArray; return j; }
  static Json Obj() { Json j; j.kind = kObject; return j; }
  Json& Add(std::string key, Json v) { items.emplace_back(std::move(key), std::move(v)); return *this; }
  Json& Push(Json v) { items.emplace_back("", std::move(v)); return *this; }
};

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) out += absl::StrFormat("\\u%04x", c);
        else out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

void Write(const Json& j, int indent, std::string* out) {
  std::string pad(indent + 2, ' ');
  switch (j.kind) {
    case Json::kNull: *out += "null"; return;
    case Json::kBool: case Json::kNumber: *out += j.text; return;
    case Json::kString: *out += Quote(j.text); return;
    case Json::kArray: case Json::kObject: {
      bool obj = j.kind == Json::kObject;
      if (j.items.empty()) { *out += obj ? "{}" : "[]"; return; }
      *out += obj ? "{\n" : "[\n";
      for (size_t i = 0; i < j.items.size(); ++i) {
        *out += pad;
        if (obj) *out += Quote(j.items[i].first) + ": ";
        Write(j.items[i].second, indent + 2, out);
        *out += i + 1 < j.items.size() ? ",\n" : "\n";
      }
      *out += std::string(indent, ' ') + (obj ? "}" : "]");
    }
  }
}

std::string Str(const flatbuffers::String* s) { return s ? s->str() : ""; }
template <typename T> uint32_t Len(const flatbuffers::Vector<T>* v) { return v ? v->size() : 0; }

std::vector<int64_t> Shape(const flatbuffers::Vector<int64_t>* v) { return fb::ToVector(v); }
std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }
Json ShapeJson(const flatbuffers::Vector<int64_t>* v) {
  Json a = Json::Arr();
  for (int64_t d : Shape(v)) a.Push(Json::Num(d));
  return a;
}
const char* DTypeName(fb::DType d) { return kiln::DTypeName(static_cast<kiln::DType>(d)); }

// Sizes of function symbols in an ELF64 image (CPU shared objects, cubins);
// empty when the image is not a well-formed ELF64 file.
std::map<std::string, uint64_t> ElfSymbolSizes(const uint8_t* data, size_t size) {
  std::map<std::string, uint64_t> out;
  if (size < sizeof(Elf64_Ehdr) || std::memcmp(data, ELFMAG, SELFMAG) != 0 || data[EI_CLASS] != ELFCLASS64)
    return out;
  Elf64_Ehdr eh;
  std::memcpy(&eh, data, sizeof(eh));
  if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shoff > size ||
      static_cast<uint64_t>(eh.e_shnum) * sizeof(Elf64_Shdr) > size - eh.e_shoff)
    return out;
  auto section = [&](uint32_t i) {
    Elf64_Shdr sh;
    std::memcpy(&sh, data + eh.e_shoff + i * sizeof(Elf64_Shdr), sizeof(sh));
    return sh;
  };
  for (uint32_t i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh = section(i);
    if ((sh.sh_type != SHT_SYMTAB && sh.sh_type != SHT_DYNSYM) || sh.sh_link >= eh.e_shnum) continue;
    Elf64_Shdr strtab = section(sh.sh_link);
    if (sh.sh_offset > size || sh.sh_size > size - sh.sh_offset || strtab.sh_offset > size ||
        strtab.sh_size > size - strtab.sh_offset)
      continue;
    for (uint64_t off = 0; off + sizeof(Elf64_Sym) <= sh.sh_size; off += sizeof(Elf64_Sym)) {
      Elf64_Sym sym;
      std::memcpy(&sym, data + sh.sh_offset + off, sizeof(sym));
      if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_name >= strtab.sh_size) continue;
      const char* name = reinterpret_cast<const char*>(data + strtab.sh_offset + sym.st_name);
      size_t max = strtab.sh_size - sym.st_name;
      out[std::string(name, strnlen(name, max))] = sym.st_size;
    }
  }
  return out;
}

Json BuildJson(const kiln::Plan& plan) {
  const fb::Plan& p = plan.fb();
  Json root = Json::Obj();
  root.Add("plan", Json::Str(plan.path()));
  root.Add("name", Json::Str(Str(p.name())));
  root.Add("format_version", Json::Num(p.format_version()));
  root.Add("file_bytes", Json::Num(plan.size()));
  uint64_t checksum = 0;
  fb::ReadTrailer(plan.data(), plan.size(), &checksum);  // verified when the plan was opened
  root.Add("xxh64", Json::Str(Hex(checksum)));

  // Launch counts per kernel, over every function.
  std::vector<uint64_t> uses(Len(p.kernels()), 0);
  for (const kiln::Function& f : plan.functions())
    for (const fb::Launch* la : f.launches) ++uses[la->kernel()];

  Json targets = Json::Arr();
  std::vector<std::map<std::string, uint64_t>> sym_sizes;
  for (uint32_t e = 0; e < Len(p.executables()); ++e) {
    const fb::Executable* x = p.executables()->Get(e);
    sym_sizes.push_back(ElfSymbolSizes(x->binary() ? x->binary()->data() : nullptr, Len(x->binary())));
    Json t = Json::Obj();
    t.Add("target", Json::Str(fb::EnumNameTargetKind(x->target())));
    t.Add("arch", Json::Str(Str(x->arch())));
    t.Add("binary_bytes", Json::Num(Len(x->binary())));
    t.Add("ptx_bytes", Json::Num(x->ptx() ? x->ptx()->size() : 0));
    t.Add("entry_points", Json::Num(x->entry_points()->size()));
    if (x->cpu()) t.Add("cpu", Json::Str(Str(x->cpu())));
    if (x->features()) {
      Json features = Json::Arr();
      for (uint32_t i = 0; i < x->features()->size(); ++i) features.Push(Json::Str(x->features()->Get(i)->str()));
      t.Add("features", std::move(features));
    }
    t.Add("xxh64", Json::Str(Hex(x->checksum())));
    targets.Push(std::move(t));
  }
  root.Add("targets", std::move(targets));

  Json kernels = Json::Arr();
  for (uint32_t k = 0; k < Len(p.kernels()); ++k) {
    const fb::Kernel* kr = p.kernels()->Get(k);
    Json j = Json::Obj();
    j.Add("index", Json::Num(k));
    j.Add("name", Json::Str(Str(kr->name())));
    Json ops = Json::Arr();
    for (uint32_t i = 0; i < Len(kr->source_ops()); ++i) ops.Push(Json::Str(kr->source_ops()->Get(i)->str()));
    j.Add("source_ops", std::move(ops));
    j.Add("config", Json::Str(Str(kr->config())));
    j.Add("num_buffers", Json::Num(kr->num_buffers()));
    j.Add("num_scalars", Json::Num(kr->num_scalars()));
    j.Add("launches", Json::Num(uses[k]));
    // What each binding must be and hold (checked for every launch).
    Json access = Json::Arr(), in_place = Json::Arr(), grids = Json::Arr();
    for (uint32_t i = 0; i < Len(kr->binding_access()); ++i)
      access.Push(Json::Str(fb::EnumNameBindingAccess(kr->binding_access()->Get(i))));
    for (uint32_t i = 0; i < Len(kr->in_place_of()); ++i) in_place.Push(Json::Num(kr->in_place_of()->Get(i)));
    uint64_t max_programs = 0;
    for (uint32_t g = 0; g < Len(kr->grids()); ++g) {
      const fb::KernelGrid* grid = kr->grids()->Get(g);
      max_programs = std::max<uint64_t>(max_programs, grid->programs());
      Json gj = Json::Obj(), scalars = Json::Arr(), bytes = Json::Arr(), entries = Json::Arr();
      gj.Add("programs", Json::Num(grid->programs()));
      for (uint32_t i = 0; i < Len(grid->scalar_min()); ++i) {
        Json r = Json::Arr();
        r.Push(Json::Num(fb::Load(grid->scalar_min(), i)));
        r.Push(Json::Num(fb::Load(grid->scalar_max(), i)));
        scalars.Push(std::move(r));
      }
      for (uint32_t i = 0; i < Len(grid->binding_bytes()); ++i) bytes.Push(Json::Num(fb::Load(grid->binding_bytes(), i)));
      for (uint32_t i = 0; i < Len(grid->table_entries()); ++i) entries.Push(Json::Num(grid->table_entries()->Get(i)));
      gj.Add("scalar_ranges", std::move(scalars));
      gj.Add("binding_bytes", std::move(bytes));
      gj.Add("table_entries", std::move(entries));
      grids.Push(std::move(gj));
    }
    j.Add("binding_access", std::move(access));
    j.Add("in_place_of", std::move(in_place));
    j.Add("max_programs", Json::Num(max_programs));
    j.Add("grids", std::move(grids));
    Json eps = Json::Arr();
    for (uint32_t e = 0; e < Len(p.executables()); ++e) {
      const fb::Executable* x = p.executables()->Get(e);
      for (const fb::EntryPoint* ep : *x->entry_points()) {
        if (ep->kernel() != k) continue;
        Json ej = Json::Obj();
        ej.Add("target", Json::Str(fb::EnumNameTargetKind(x->target())));
        ej.Add("name", Json::Str(Str(ep->name())));
        // The entry and its private helpers, which CPU emitters name
        // "ENTRY.<suffix>" (compiler/lib/Codegen/CPU/Emitter.h).
        std::string entry = Str(ep->name());
        auto it = sym_sizes[e].find(entry);
        uint64_t bytes = it != sym_sizes[e].end() ? it->second : 0;
        for (auto h = sym_sizes[e].lower_bound(entry + ".");
             h != sym_sizes[e].end() && h->first.compare(0, entry.size() + 1, entry + ".") == 0; ++h)
          bytes += h->second;
        ej.Add("code_bytes", it != sym_sizes[e].end() ? Json::Num(bytes) : Json());
        if (x->target() == fb::TargetKind::cuda) ej.Add("block_x", Json::Num(ep->block_x()));
        if (ep->phases() > 1) ej.Add("phases", Json::Num(ep->phases()));
        auto resources = [](const fb::KernelResources* r) {
          Json rj = Json::Obj();
          rj.Add("registers", Json::Num(r->registers()));
          rj.Add("spill_store_bytes", Json::Num(r->spill_store_bytes()));
          rj.Add("spill_load_bytes", Json::Num(r->spill_load_bytes()));
          rj.Add("shared_bytes", Json::Num(r->shared_bytes()));
          rj.Add("const_bytes", Json::Num(r->const_bytes()));
          return rj;
        };
        if (const fb::KernelResources* r = ep->resources()) ej.Add("resources", resources(r));
        if (ep->tiles() && ep->tiles()->size() > 0) {
          // The tile kernels that run this entry's launches, by rows.
          Json tiles = Json::Arr();
          for (const fb::TileVariant* t : *ep->tiles()) {
            Json tj = Json::Obj();
            tj.Add("name", Json::Str(Str(t->name())));
            tj.Add("max_rows", Json::Num(t->max_rows()));
            tj.Add("config", Json::Str(Str(t->config())));
            tj.Add("threads", Json::Num(t->threads()));
            tj.Add("dynamic_shared_bytes", Json::Num(t->dynamic_shared_bytes()));
            tj.Add("rows_per_tile", Json::Num(t->rows_per_tile()));
            tj.Add("column_tiles", Json::Num(t->column_tiles()));
            auto cs = sym_sizes[e].find(Str(t->name()));
            tj.Add("code_bytes", cs != sym_sizes[e].end() ? Json::Num(cs->second) : Json());
            if (t->resources()) tj.Add("resources", resources(t->resources()));
            Json params = Json::Arr();
            for (uint32_t i = 0; t->params() && i < t->params()->size(); ++i) {
              const fb::TileParam* q = t->params()->Get(i);
              Json qj = Json::Obj();
              qj.Add("kind", Json::Str(fb::EnumNameTileParamKind(q->kind())));
              if (q->kind() != fb::TileParamKind::rows) qj.Add("binding", Json::Num(q->binding()));
              if (q->row_bytes()) qj.Add("row_bytes", Json::Num(q->row_bytes()));
              if (const fb::TensorMapSpec* m = q->map()) {
                Json dims = Json::Arr(), box = Json::Arr();
                for (uint32_t d = 0; m->dims() && d < m->dims()->size(); ++d) dims.Push(Json::Num(m->dims()->Get(d)));
                for (uint32_t d = 0; m->box() && d < m->box()->size(); ++d) box.Push(Json::Num(m->box()->Get(d)));
                qj.Add("dtype", Json::Str(fb::EnumNameDType(m->dtype())));
                qj.Add("dims", std::move(dims));
                qj.Add("box", std::move(box));
                qj.Add("swizzle_bytes", Json::Num(m->swizzle_bytes()));
                if (m->rows_dim()) qj.Add("rows_dim", Json::Bool(true));
                if (m->table()) qj.Add("table", Json::Bool(true));
              }
              params.Push(std::move(qj));
            }
            tj.Add("params", std::move(params));
            tiles.Push(std::move(tj));
          }
          ej.Add("programs_per_row", Json::Num(ep->programs_per_row()));
          if (ep->rows_per_unit() != 1) ej.Add("rows_per_unit", Json::Num(ep->rows_per_unit()));
          ej.Add("tiles", std::move(tiles));
        }
        eps.Push(std::move(ej));
      }
    }
    j.Add("entry_points", std::move(eps));
    kernels.Push(std::move(j));
  }
  root.Add("kernels", std::move(kernels));

  auto launch_list = [&](const std::vector<const fb::Launch*>& v) {
    Json launches = Json::Arr();
    for (uint32_t l = 0; l < v.size(); ++l) {
      const fb::Launch* la = v[l];
      Json j = Json::Obj();
      j.Add("index", Json::Num(l));
      j.Add("kernel", Json::Str(Str(p.kernels()->Get(la->kernel())->name())));
      j.Add("programs", Json::Num(la->programs()));
      Json b = Json::Arr(), s = Json::Arr();
      for (uint32_t i = 0; i < Len(la->bindings()); ++i) b.Push(Json::Num(la->bindings()->Get(i)));
      for (uint32_t i = 0; i < Len(la->scalars()); ++i) s.Push(Json::Num(fb::Load(la->scalars(), i)));
      j.Add("bindings", std::move(b));
      j.Add("scalars", std::move(s));
      j.Add("location", Json::Str(Str(la->location())));
      if (la->block_x()) j.Add("block_x", Json::Num(la->block_x()));
      if (const fb::TokenGrid* t = la->tokens()) {
        Json g = Json::Obj();
        g.Add("per_token", Json::Num(t->per_token()));
        g.Add("max_batch", Json::Num(t->max_batch()));
        g.Add("max_seq", Json::Num(t->max_seq()));
        g.Add("batch_symbol", Json::Num(t->batch_symbol()));
        g.Add("seq_symbol", Json::Num(t->seq_symbol()));
        g.Add("tokens_scalar", Json::Num(t->tokens_scalar()));
        g.Add("seq_scalar", Json::Num(t->seq_scalar()));
        j.Add("tokens", std::move(g));
      }
      // Bytes the launch reads and writes: every bound buffer once (an
      // upper bound for kernels that read only the rows they need, such as
      // the routed experts' weights).
      uint64_t bytes = 0;
      for (uint32_t i = 0; i < Len(la->bindings()); ++i)
        bytes += p.buffers()->Get(la->bindings()->Get(i))->size_bytes();
      j.Add("bytes", Json::Num(bytes));
      launches.Push(std::move(j));
    }
    return launches;
  };
  // Launches per transformer layer ("model.layers.N" in the location), the
  // rest counted as "other".
  auto per_layer = [&](const std::vector<const fb::Launch*>& v) {
    std::map<int64_t, uint64_t> counts;
    uint64_t other = 0;
    for (const fb::Launch* la : v) {
      std::string loc = Str(la->location());
      size_t at = loc.find("model.layers.");
      int64_t layer = -1;
      if (at != std::string::npos) {
        size_t b = at + 13, e = b;
        while (e < loc.size() && std::isdigit(static_cast<unsigned char>(loc[e]))) ++e;
        if (e > b) layer = std::stoll(loc.substr(b, e - b));
      }
      if (layer < 0) ++other; else ++counts[layer];
    }
    Json j = Json::Obj();
    Json layers = Json::Obj();
    for (const auto& [l, c] : counts) layers.Add(std::to_string(l), Json::Num(c));
    j.Add("layers", std::move(layers));
    j.Add("other", Json::Num(other));
    return j;
  };
  // The top level is the "forward" function.
  root.Add("launches", launch_list(plan.functions()[0].launches));
  root.Add("launches_per_layer", per_layer(plan.functions()[0].launches));

  Json mem = Json::Obj();
  mem.Add("arena_bytes", Json::Num(p.arena_size()));
  mem.Add("peak_live_bytes", Json::Num(p.peak_live_bytes()));
  mem.Add("state_bytes", Json::Num(p.state_size()));
  Json bufs = Json::Arr();
  for (uint32_t b = 0; b < Len(p.buffers()); ++b) {
    const fb::Buffer* buf = p.buffers()->Get(b);
    if (buf->kind() == fb::BufferKind::weight || buf->kind() == fb::BufferKind::weight_table) continue;
    Json j = Json::Obj();
    j.Add("index", Json::Num(b));
    j.Add("kind", Json::Str(fb::EnumNameBufferKind(buf->kind())));
    j.Add("offset", Json::Num(buf->offset()));
    j.Add("size_bytes", Json::Num(buf->size_bytes()));
    j.Add("first_use", Json::Num(buf->first_use()));
    j.Add("last_use", Json::Num(buf->last_use()));
    bufs.Push(std::move(j));
  }
  mem.Add("buffers", std::move(bufs));
  // KV caches: state buffers of shape [batch, capacity, ...]; bytes per
  // token are over all of them (every layer).
  Json caches = Json::Arr();
  uint64_t per_token = 0;
  std::set<std::string> cache_dtypes;
  for (uint32_t b = 0; b < Len(p.buffers()); ++b) {
    const fb::Buffer* buf = p.buffers()->Get(b);
    if (buf->kind() != fb::BufferKind::state || !buf->name() || Len(buf->shape()) < 2) continue;
    int64_t rows = fb::Load(buf->shape(), 0), cap = fb::Load(buf->shape(), 1);
    if (rows <= 0 || cap <= 0) continue;
    Json j = Json::Obj();
    j.Add("name", Json::Str(Str(buf->name())));
    j.Add("dtype", Json::Str(DTypeName(buf->dtype())));
    j.Add("shape", ShapeJson(buf->shape()));
    j.Add("size_bytes", Json::Num(buf->size_bytes()));
    uint64_t bpt = buf->size_bytes() / static_cast<uint64_t>(rows * cap);
    j.Add("bytes_per_token", Json::Num(bpt));
    per_token += bpt;
    cache_dtypes.insert(DTypeName(buf->dtype()));
    caches.Push(std::move(j));
  }
  mem.Add("caches", std::move(caches));
  mem.Add("cache_bytes_per_token", Json::Num(per_token));
  mem.Add("cache_dtype", Json::Str(absl::StrJoin(cache_dtypes, ",")));
  root.Add("memory", std::move(mem));

  auto specs = [&](const std::vector<const fb::TensorSpec*>& v) {
    Json a = Json::Arr();
    for (uint32_t i = 0; i < v.size(); ++i) {
      const fb::TensorSpec* s = v[i];
      Json j = Json::Obj();
      j.Add("name", Json::Str(Str(s->name())));
      j.Add("dtype", Json::Str(DTypeName(s->dtype())));
      j.Add("shape", ShapeJson(s->shape()));
      j.Add("buffer", Json::Num(s->buffer()));
      if (const fb::ValueRange* r = s->value_range()) {
        Json rj = Json::Obj();
        rj.Add("min", Json::Num(r->min()));
        rj.Add("max", Json::Num(r->max()));
        j.Add("value_range", std::move(rj));
        j.Add("range_note", Json::Str(Str(s->range_note())));
      } else {
        j.Add("value_range", Json());
      }
      a.Push(std::move(j));
    }
    return a;
  };
  root.Add("inputs", specs(plan.functions()[0].inputs));
  root.Add("outputs", specs(plan.functions()[0].outputs));
  // Entry points beyond forward (Plan.functions), in the same format.
  Json functions = Json::Arr();
  for (size_t i = 1; i < plan.functions().size(); ++i) {
    const kiln::Function& f = plan.functions()[i];
    Json j = Json::Obj();
    j.Add("name", Json::Str(f.name));
    j.Add("launches", launch_list(f.launches));
    j.Add("launches_per_layer", per_layer(f.launches));
    j.Add("inputs", specs(f.inputs));
    j.Add("outputs", specs(f.outputs));
    functions.Push(std::move(j));
  }
  root.Add("functions", std::move(functions));

  Json weights = Json::Obj();
  uint64_t packed_bytes = 0, external_bytes = 0, packed_count = 0;
  std::map<std::string, uint64_t> by_dtype;
  Json list = Json::Arr();
  for (uint32_t w = 0; w < Len(p.weights()); ++w) {
    const fb::Weight* wt = p.weights()->Get(w);
    by_dtype[DTypeName(wt->dtype())] += wt->size_bytes();
    (wt->packed() ? packed_bytes : external_bytes) += wt->size_bytes();
    packed_count += wt->packed();
    Json j = Json::Obj();
    j.Add("name", Json::Str(Str(wt->name())));
    j.Add("dtype", Json::Str(DTypeName(wt->dtype())));
    j.Add("shape", ShapeJson(wt->shape()));
    j.Add("size_bytes", Json::Num(wt->size_bytes()));
    if (wt->packed()) {
      j.Add("source", Json::Str("packed"));
      j.Add("packed_offset", Json::Num(wt->packed_offset()));
    } else if (!wt->external()) {
      j.Add("source", Json::Str("none (compiled with --no-weights)"));
    } else {
      j.Add("source", Json::Str(Str(wt->external()->path())));
      j.Add("file_offset", Json::Num(wt->external()->offset()));
      j.Add("xxh64", Json::Str(Hex(wt->external()->xxh64())));
    }
    list.Push(std::move(j));
  }
  weights.Add("count", Json::Num(Len(p.weights())));
  weights.Add("packed_count", Json::Num(packed_count));
  weights.Add("packed_bytes", Json::Num(packed_bytes));
  weights.Add("external_bytes", Json::Num(external_bytes));
  Json dt = Json::Obj();
  for (const auto& [name, bytes] : by_dtype) dt.Add(name, Json::Num(bytes));
  weights.Add("bytes_by_dtype", std::move(dt));
  weights.Add("weights", std::move(list));
  // The identity of each file, checked when a session starts (plan.fbs WeightFile).
  Json files = Json::Arr();
  for (uint32_t f = 0; f < Len(p.weight_files()); ++f) {
    const fb::WeightFile* wf = p.weight_files()->Get(f);
    Json j = Json::Obj();
    j.Add("path", Json::Str(Str(wf->path())));
    j.Add("size", Json::Num(wf->size()));
    j.Add("sample_count", Json::Num(wf->sample_count()));
    j.Add("sample_bytes", Json::Num(wf->sample_bytes()));
    j.Add("sample_xxh64", Json::Str(Hex(wf->sample_xxh64())));
    files.Push(std::move(j));
  }
  weights.Add("files", std::move(files));
  root.Add("weights", std::move(weights));

  Json prov = Json::Obj();
  if (const fb::Provenance* pv = p.provenance()) {
    prov.Add("compiler_version", Json::Str(Str(pv->compiler_version())));
    prov.Add("flags", Json::Str(Str(pv->flags())));
    prov.Add("source_path", Json::Str(Str(pv->source_path())));
    prov.Add("source_hash", Json::Str(Str(pv->source_hash())));
    prov.Add("created_unix", Json::Num(pv->created_unix()));
  }
  root.Add("provenance", std::move(prov));

  // Generation assets (Plan.tokenizer, Plan.generation); null when absent.
  Json gen;
  if (const fb::TokenizerData* t = p.tokenizer()) {
    gen = Json::Obj();
    Json tok = Json::Obj();
    tok.Add("source", Json::Str(Str(t->source())));
    tok.Add("bytes", Json::Num(Len(t->json())));
    auto loaded = plan.LoadTokenizer();
    if (loaded.ok())
      tok.Add("vocab_size", Json::Num((*loaded)->VocabSize()));
    else
      tok.Add("error", Json::Str(std::string(loaded.status().message())));
    gen.Add("tokenizer", std::move(tok));
  }
  if (auto g = plan.Generation()) {
    if (gen.kind == Json::kNull) gen = Json::Obj();
    Json eos = Json::Arr();
    for (int32_t id : g->eos_token_ids) eos.Push(Json::Num(id));
    gen.Add("eos_token_ids", std::move(eos));
    gen.Add("eos_source", Json::Str(g->eos_source));
    gen.Add("bos_token_id", Json::Num(g->bos_token_id));
    gen.Add("bos_source", Json::Str(g->bos_source));
    gen.Add("do_sample", Json::Bool(g->do_sample));
    gen.Add("temperature", Json::Num(g->temperature));
    gen.Add("top_k", Json::Num(g->top_k));
    gen.Add("top_p", Json::Num(g->top_p));
  }
  root.Add("generation", std::move(gen));
  return root;
}

// --- Text view: rendered from the JSON tree so both views agree. ---------------

const Json& Get(const Json& j, const std::string& key) {
  static const Json kNull;
  for (const auto& [k, v] : j.items)
    if (k == key) return v;
  return kNull;
}
std::string T(const Json& j) {  // compact text of a scalar or array
  if (j.kind == Json::kArray) {
    std::vector<std::string> parts;
    for (const auto& [k, v] : j.items) parts.push_back(T(v));
    return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
  }
  return j.kind == Json::kNull ? "-" : j.text;
}
// A launch's programs; "/tok" marks a token-major launch, which runs only
// the tokens a request gives (Launch.tokens).
std::string Programs(const Json& l) {
  std::string p = T(Get(l, "programs"));
  return Get(l, "tokens").kind == Json::kNull ? p : p + "/tok";
}
std::string Bytes(const Json& j) {
  if (j.kind != Json::kNumber) return "-";
  double b = std::stod(j.text);
  if (b < 1024) return absl::StrCat(j.text, " B");
  if (b < 1024 * 1024) return absl::StrFormat("%.1f KiB", b / 1024);
  if (b < 1024.0 * 1024 * 1024) return absl::StrFormat("%.1f MiB", b / (1024 * 1024));
  return absl::StrFormat("%.2f GiB", b / (1024.0 * 1024 * 1024));
}

void PrintText(const Json& r) {
  std::printf("plan %s  (%s, format_version %s, %s, xxh64 %s)\n", T(Get(r, "plan")).c_str(),
              Get(r, "name").text.empty() ? "unnamed" : Get(r, "name").text.c_str(),
              T(Get(r, "format_version")).c_str(), Bytes(Get(r, "file_bytes")).c_str(),
              Get(r, "xxh64").text.c_str());

  std::printf("\ntargets\n");
  for (const auto& [_, t] : Get(r, "targets").items)
    std::printf("  %-5s %-8s binary %-12s ptx %-12s %s entry points  xxh64 %s\n", T(Get(t, "target")).c_str(),
                T(Get(t, "arch")).c_str(), Bytes(Get(t, "binary_bytes")).c_str(),
                Bytes(Get(t, "ptx_bytes")).c_str(), T(Get(t, "entry_points")).c_str(),
                Get(t, "xxh64").text.c_str());
  for (const auto& [_, t] : Get(r, "targets").items) {
    if (Get(t, "cpu").kind == Json::kNull) continue;
    std::vector<std::string> features;
    for (const auto& [__, f] : Get(t, "features").items) features.push_back(f.text);
    std::printf("  %-5s cpu %s, needs %s\n", T(Get(t, "target")).c_str(), T(Get(t, "cpu")).c_str(),
                features.empty() ? "no extensions" : absl::StrJoin(features, " ").c_str());
  }

  std::printf("\nkernels\n");
  for (const auto& [_, k] : Get(r, "kernels").items) {
    std::printf("  #%-3s %-32s launches %-4s buffers %s scalars %s  ops %s  config '%s'\n",
                T(Get(k, "index")).c_str(), T(Get(k, "name")).c_str(), T(Get(k, "launches")).c_str(),
                T(Get(k, "num_buffers")).c_str(), T(Get(k, "num_scalars")).c_str(),
                T(Get(k, "source_ops")).c_str(), Get(k, "config").text.c_str());
    for (const auto& [__, e] : Get(k, "entry_points").items) {
      std::string extra;
      const Json& res = Get(e, "resources");
      if (res.kind == Json::kObject)
        extra = absl::StrCat("  regs ", T(Get(res, "registers")), ", spills ", T(Get(res, "spill_store_bytes")),
                             "/", T(Get(res, "spill_load_bytes")), " B, shared ", T(Get(res, "shared_bytes")), " B");
      if (Get(e, "block_x").kind == Json::kNumber) extra += absl::StrCat("  block_x ", T(Get(e, "block_x")));
      if (Get(e, "phases").kind == Json::kNumber) extra += absl::StrCat("  phases ", T(Get(e, "phases")));
      std::printf("         %-5s %-32s code %s%s\n", T(Get(e, "target")).c_str(), T(Get(e, "name")).c_str(),
                  Bytes(Get(e, "code_bytes")).c_str(), extra.c_str());
      for (const auto& [___, t] : Get(e, "tiles").items) {
        const Json& tr = Get(t, "resources");
        std::string regs = tr.kind == Json::kObject
                               ? absl::StrCat("  regs ", T(Get(tr, "registers")), ", spills ",
                                              T(Get(tr, "spill_store_bytes")), "/", T(Get(tr, "spill_load_bytes")),
                                              " B")
                               : "";
        std::printf("           tile  up to %s rows: %s  %s threads, %s B dynamic shared%s\n",
                    T(Get(t, "max_rows")).c_str(), Get(t, "config").text.c_str(), T(Get(t, "threads")).c_str(),
                    T(Get(t, "dynamic_shared_bytes")).c_str(), regs.c_str());
      }
    }
    std::vector<std::string> grids;
    for (const auto& [__, g] : Get(k, "grids").items) {
      std::string scalars;
      for (const auto& [___, range] : Get(g, "scalar_ranges").items) {
        std::string lo = T(range.items[0].second), hi = T(range.items[1].second);
        absl::StrAppend(&scalars, scalars.empty() ? " scalars " : ", ", lo == hi ? lo : absl::StrCat("[", lo, ", ", hi, "]"));
      }
      grids.push_back(absl::StrCat(T(Get(g, "programs")), " programs", scalars, ": bytes ", T(Get(g, "binding_bytes"))));
    }
    std::printf("         bindings %s; grids: %s\n", T(Get(k, "binding_access")).c_str(),
                absl::StrJoin(grids, "; ").c_str());
  }

  std::printf("\nlaunches\n  %-5s %-32s %-10s %-20s %-12s %s\n", "#", "kernel", "programs", "bindings",
              "scalars", "location");
  for (const auto& [_, l] : Get(r, "launches").items)
    std::printf("  %-5s %-32s %-10s %-20s %-12s %s\n", T(Get(l, "index")).c_str(), T(Get(l, "kernel")).c_str(),
                Programs(l).c_str(), T(Get(l, "bindings")).c_str(), T(Get(l, "scalars")).c_str(),
                Get(l, "location").text.c_str());

  const Json& m = Get(r, "memory");
  std::printf("\nmemory: arena %s, peak live %s, state %s\n  %-5s %-13s %-12s %-12s %s\n",
              Bytes(Get(m, "arena_bytes")).c_str(), Bytes(Get(m, "peak_live_bytes")).c_str(),
              Bytes(Get(m, "state_bytes")).c_str(), "buf", "kind", "offset", "size", "live");
  for (const auto& [_, b] : Get(m, "buffers").items)
    std::printf("  %-5s %-13s %-12s %-12s [%s, %s]\n", T(Get(b, "index")).c_str(), T(Get(b, "kind")).c_str(),
                T(Get(b, "offset")).c_str(), Bytes(Get(b, "size_bytes")).c_str(), T(Get(b, "first_use")).c_str(),
                T(Get(b, "last_use")).c_str());

  std::vector<std::string> state;
  for (const auto& [_, b] : Get(m, "buffers").items)
    if (Get(b, "kind").text == "state")
      state.push_back(absl::StrCat("#", T(Get(b, "index")), " [", T(Get(b, "offset")), ", +",
                                   Bytes(Get(b, "size_bytes")), ")"));
  if (!state.empty() || Get(m, "state_bytes").text != "0")
    std::printf("  state region [0, %s): %zu state buffer(s)%s%s\n", T(Get(m, "state_bytes")).c_str(), state.size(),
                state.empty() ? "" : ": ", absl::StrJoin(state, ", ").c_str());
  if (!Get(m, "caches").items.empty()) {
    const Json& first = Get(m, "caches").items.front().second;
    const auto& shape = Get(first, "shape").items;
    std::printf("  KV caches: %zu, %s, %s per token (all layers), capacity %s x %s tokens\n",
                Get(m, "caches").items.size(), Get(m, "cache_dtype").text.c_str(),
                Bytes(Get(m, "cache_bytes_per_token")).c_str(), shape[0].second.text.c_str(),
                shape[1].second.text.c_str());
  }

  auto print_specs = [](const Json& f, const char* indent) {
    for (const char* which : {"inputs", "outputs"}) {
      std::printf("%s%s\n", indent, which);
      for (const auto& [_, s] : Get(f, which).items) {
        std::string range;
        if (const Json& vr = Get(s, "value_range"); vr.kind == Json::kObject) {
          range = absl::StrCat("  values [", T(Get(vr, "min")), ", ", T(Get(vr, "max")), "]");
          if (!Get(s, "range_note").text.empty()) absl::StrAppend(&range, " (", Get(s, "range_note").text, ")");
        }
        std::printf("%s  %-24s %-10s %s%s\n", indent, T(Get(s, "name")).c_str(), T(Get(s, "dtype")).c_str(),
                    T(Get(s, "shape")).c_str(), range.c_str());
      }
    }
  };
  std::printf("\nfunctions\n  %-16s %-9s %-7s %s\n", "name", "launches", "inputs", "outputs");
  auto names = [](const Json& v) {
    std::vector<std::string> n;
    for (const auto& [_, s] : v.items) n.push_back(T(Get(s, "name")));
    return absl::StrJoin(n, ", ");
  };
  std::printf("  %-16s %-9zu %-7s %s\n", "forward", Get(r, "launches").items.size(), names(Get(r, "inputs")).c_str(),
              names(Get(r, "outputs")).c_str());
  for (const auto& [_, f] : Get(r, "functions").items)
    std::printf("  %-16s %-9zu %-7s %s\n", T(Get(f, "name")).c_str(), Get(f, "launches").items.size(),
                names(Get(f, "inputs")).c_str(), names(Get(f, "outputs")).c_str());

  // Launches per layer, runs of equal counts collapsed: "layers 3-60: 22".
  auto print_per_layer = [&](const char* fn, const Json& pl) {
    std::printf("  %s:", fn);
    int64_t run_start = -1, prev = -1;
    std::string run_count;
    auto flush = [&]() {
      if (run_start < 0) return;
      if (run_start == prev) std::printf(" layer %lld: %s;", (long long)run_start, run_count.c_str());
      else std::printf(" layers %lld-%lld: %s;", (long long)run_start, (long long)prev, run_count.c_str());
    };
    std::vector<std::pair<int64_t, std::string>> layers;
    for (const auto& [k, v] : Get(pl, "layers").items) layers.push_back({std::stoll(k), T(v)});
    std::sort(layers.begin(), layers.end());
    for (const auto& [l, c] : layers) {
      if (run_start >= 0 && c == run_count && l == prev + 1) { prev = l; continue; }
      flush();
      run_start = prev = l;
      run_count = c;
    }
    flush();
    std::printf(" other: %s\n", T(Get(pl, "other")).c_str());
  };
  std::printf("\nlaunches per layer\n");
  print_per_layer("forward", Get(r, "launches_per_layer"));
  for (const auto& [_, f] : Get(r, "functions").items)
    print_per_layer(T(Get(f, "name")).c_str(), Get(f, "launches_per_layer"));

  std::printf("\nforward:\n");
  print_specs(r, "  ");
  for (const auto& [_, f] : Get(r, "functions").items) {
    std::printf("\n%s:\n", T(Get(f, "name")).c_str());
    print_specs(f, "  ");
    std::printf("  launches\n");
    for (const auto& [__, l] : Get(f, "launches").items)
      std::printf("    %-5s %-32s %-10s %-20s %-12s %s\n", T(Get(l, "index")).c_str(), T(Get(l, "kernel")).c_str(),
                  Programs(l).c_str(), T(Get(l, "bindings")).c_str(), T(Get(l, "scalars")).c_str(),
                  Get(l, "location").text.c_str());
  }

  const Json& w = Get(r, "weights");
  std::printf("\nweights: %s (%s packed: %s; by reference: %s)\n", T(Get(w, "count")).c_str(),
              T(Get(w, "packed_count")).c_str(), Bytes(Get(w, "packed_bytes")).c_str(),
              Bytes(Get(w, "external_bytes")).c_str());
  for (const auto& [dtype, bytes] : Get(w, "bytes_by_dtype").items)
    std::printf("  %-10s %s\n", dtype.c_str(), Bytes(bytes).c_str());
  for (const auto& [_, x] : Get(w, "weights").items)
    std::printf("  %-40s %-10s %-18s %-12s %s\n", T(Get(x, "name")).c_str(), T(Get(x, "dtype")).c_str(),
                T(Get(x, "shape")).c_str(), Bytes(Get(x, "size_bytes")).c_str(), T(Get(x, "source")).c_str());
  for (const auto& [_, x] : Get(w, "files").items)
    std::printf("  file %s: %s, identity XXH64 %s of %s x %s sampled bytes\n", T(Get(x, "path")).c_str(),
                Bytes(Get(x, "size")).c_str(), T(Get(x, "sample_xxh64")).c_str(), T(Get(x, "sample_count")).c_str(),
                Bytes(Get(x, "sample_bytes")).c_str());

  const Json& g = Get(r, "generation");
  std::printf("\ngeneration\n");
  if (g.kind == Json::kNull) std::printf("  no tokenizer, no generation defaults\n");
  const Json& tok = Get(g, "tokenizer");
  if (g.kind != Json::kNull && tok.kind == Json::kNull) std::printf("  tokenizer         none\n");
  if (tok.kind != Json::kNull)
    std::printf("  tokenizer         %s, %s (from %s)\n",
                Get(tok, "error").kind == Json::kNull
                    ? absl::StrCat(T(Get(tok, "vocab_size")), " tokens").c_str()
                    : absl::StrCat("cannot load: ", T(Get(tok, "error"))).c_str(),
                Bytes(Get(tok, "bytes")).c_str(), T(Get(tok, "source")).c_str());
  if (Get(g, "eos_token_ids").kind != Json::kNull) {
    auto from = [&](const char* key) {
      std::string src = T(Get(g, key));
      return src.empty() ? std::string() : absl::StrCat(" (", src, ")");
    };
    std::printf("  eos_token_ids     %s%s\n", T(Get(g, "eos_token_ids")).c_str(), from("eos_source").c_str());
    std::printf("  bos_token_id      %s%s\n", T(Get(g, "bos_token_id")).c_str(), from("bos_source").c_str());
    if (T(Get(g, "do_sample")) == "true")
      std::printf("  sampling          temperature %s, top_k %s, top_p %s\n", T(Get(g, "temperature")).c_str(),
                  T(Get(g, "top_k")).c_str(), T(Get(g, "top_p")).c_str());
    else
      std::printf("  sampling          greedy (do_sample false)\n");
  }

  const Json& p = Get(r, "provenance");
  std::printf("\nprovenance\n");
  for (const auto& [k, v] : p.items) std::printf("  %-17s %s\n", k.c_str(), T(v).c_str());
}

}  // namespace

constexpr char kUsage[] =
    "usage: kiln-inspect PLAN [--json]\n"
    "  Verifies PLAN and shows what it contains: targets and executables, kernels with their\n"
    "  grids and binding uses, the memory plan and KV caches, functions with their inputs,\n"
    "  outputs and launches, weights, the tokenizer and generation defaults, provenance.\n"
    "  --json     the same as JSON (for tools)\n"
    "  --help, --version\n"
    "Exit codes: 0 success, 1 failure while printing, 2 usage, 4 the plan cannot be opened or\n"
    "  verified (the error says why).\n";

int main(int argc, char** argv) {
  using namespace kiln::tools;
  std::string path;
  bool json = false;
  auto usage = [](const std::string& msg) {
    std::fprintf(stderr, "kiln-inspect: error: %s\nRun 'kiln-inspect --help' for the options.\n", msg.c_str());
    return kExitUsage;
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    } else if (a == "--version") {
      PrintVersion("kiln-inspect");
      return kExitOk;
    } else if (!a.empty() && a[0] == '-') {
      return usage(absl::StrCat("unknown option '", a, "'"));
    } else if (path.empty()) {
      path = a;
    } else {
      return usage(absl::StrCat("unexpected argument '", a, "' (one PLAN only)"));
    }
  }
  if (path.empty()) return usage("no PLAN given");
  auto plan = kiln::Plan::Open(path);
  if (!plan.ok()) {
    std::fprintf(stderr, "kiln-inspect: error: %s\n", std::string(plan.status().message()).c_str());
    return kExitBadPlan;
  }
  Json root = BuildJson(**plan);
  if (json) {
    std::string out;
    Write(root, 0, &out);
    std::printf("%s\n", out.c_str());
  } else {
    PrintText(root);
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "kiln-inspect: error: cannot write the output\n");
    return kExitRunFailed;
  }
  return kExitOk;
}
