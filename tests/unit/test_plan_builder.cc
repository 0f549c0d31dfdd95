#include "test_plan_builder.h"

#include <stdlib.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "kiln/runtime.h"
#include "plan_support.h"

namespace kiln::test {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string MakeTempDir() {
  char tmpl[] = "/tmp/kiln-test-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::string Serialize(const TPlan& p) {
  flatbuffers::FlatBufferBuilder b;
  using namespace flatbuffers;
  auto bytes = [&](const std::string& s) {
    b.ForceVectorAlignment(s.size(), 1, 64);  // force_align: 64
    return b.CreateVector(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  std::vector<Offset<plan::Executable>> exes;
  for (const auto& x : p.executables) {
    std::vector<Offset<plan::EntryPoint>> eps;
    for (const auto& e : x.entries) {
      std::vector<Offset<plan::TileVariant>> tiles;
      for (const TTile& t : e.tiles) {
        std::vector<Offset<plan::TileParam>> params;
        for (const TTileParam& q : t.params) {
          Offset<plan::TensorMapSpec> map = 0;
          if (q.kind == plan::TileParamKind::tensor_map)
            map = plan::CreateTensorMapSpecDirect(b, q.dtype, &q.dims, &q.strides_bytes, &q.box, q.swizzle_bytes, q.rows_dim, q.table);
          params.push_back(plan::CreateTileParam(b, q.kind, q.binding, map, q.row_bytes));
        }
        tiles.push_back(plan::CreateTileVariantDirect(b, t.name.c_str(), t.max_rows, t.threads,
                                                      t.dynamic_shared_bytes, t.rows_per_tile, t.column_tiles,
                                                      &params));
      }
      eps.push_back(plan::CreateEntryPoint(b, b.CreateString(e.name), e.kernel, e.block_x, 0, e.phases,
                                           tiles.empty() ? 0 : b.CreateVector(tiles), e.programs_per_row,
                                           e.rows_per_unit));
    }
    auto bin = bytes(x.binary);
    auto ptx = x.ptx.empty() ? 0 : b.CreateString(x.ptx);
    uint64_t checksum = plan::ExecutableChecksum(reinterpret_cast<const uint8_t*>(x.binary.data()),
                                                 x.binary.size(), x.ptx.data(), x.ptx.size());
    auto arch = b.CreateString(x.arch);
    auto entries = b.CreateVector(eps);
    plan::ExecutableBuilder eb(b);  // named fields: the table grows
    eb.add_target(x.target);
    eb.add_arch(arch);
    eb.add_binary(bin);
    if (!x.ptx.empty()) eb.add_ptx(ptx);
    eb.add_entry_points(entries);
    eb.add_checksum(checksum);
    exes.push_back(eb.Finish());
  }
  std::vector<Offset<plan::Kernel>> kernels;
  for (const auto& k : p.kernels) {
    std::vector<Offset<String>> ops = {b.CreateString("test.op")};
    std::vector<Offset<plan::KernelGrid>> grids;
    for (const TGrid& g : k.grids)
      grids.push_back(plan::CreateKernelGrid(b, g.programs, b.CreateVector(g.scalar_min),
                                             b.CreateVector(g.scalar_max), b.CreateVector(g.binding_bytes),
                                             g.table_entries.empty() ? 0 : b.CreateVector(g.table_entries)));
    std::vector<uint8_t> access;
    for (plan::BindingAccess a : k.access) access.push_back(static_cast<uint8_t>(a));
    kernels.push_back(plan::CreateKernel(
        b, b.CreateString(k.name), b.CreateVector(ops), 0, b.CreateString("tile=1"), k.num_buffers,
        k.num_scalars,
        b.CreateVector(reinterpret_cast<const plan::BindingAccess*>(access.data()), access.size()),
        k.in_place_of.empty() ? 0 : b.CreateVector(k.in_place_of), b.CreateVector(grids)));
  }
  std::vector<Offset<plan::Buffer>> buffers;
  for (const auto& buf : p.buffers)
    buffers.push_back(plan::CreateBuffer(b, buf.kind, buf.size_bytes, buf.offset, buf.weight,
                                         buf.weight_list.empty() ? 0 : b.CreateVector(buf.weight_list),
                                         0, 1));
  auto make_launches = [&](const std::vector<TLaunch>& v) {
    std::vector<Offset<plan::Launch>> out;
    for (const auto& l : v) {
      const TLaunch::Tokens& t = l.tokens;
      auto tokens = t.per_token ? plan::CreateTokenGrid(b, t.per_token, t.max_batch, t.max_seq, t.batch_symbol,
                                                        t.seq_symbol, t.tokens_scalar, t.seq_scalar)
                                : 0;
      out.push_back(plan::CreateLaunch(b, l.kernel, b.CreateVector(l.bindings), b.CreateVector(l.scalars),
                                       l.programs, b.CreateString(l.location), tokens, l.block_x));
    }
    return b.CreateVector(out);
  };
  auto launches = make_launches(p.launches);
  auto specs = [&](const std::vector<TSpec>& v) {
    std::vector<Offset<plan::TensorSpec>> out;
    for (const auto& s : v) {
      plan::ValueRange range(s.range_min, s.range_max);
      out.push_back(plan::CreateTensorSpec(b, b.CreateString(s.name), s.dtype, b.CreateVector(s.shape), s.buffer,
                                           s.dim_symbols.empty() ? 0 : b.CreateVector(s.dim_symbols),
                                           s.has_range ? &range : nullptr,
                                           s.range_note.empty() ? 0 : b.CreateString(s.range_note), 0,
                                           s.range_max_grows_with));
    }
    return b.CreateVector(out);
  };
  auto inputs = specs(p.inputs);
  auto outputs = specs(p.outputs);
  std::vector<Offset<plan::Weight>> weights;
  for (const auto& w : p.weights) {
    Offset<plan::ExternalData> ext = 0;
    if (!w.packed)
      ext = plan::CreateExternalData(b, b.CreateString(w.path), w.ext_offset, w.ext_size,
                                     w.file_size, w.xxh64);
    weights.push_back(plan::CreateWeight(b, b.CreateString(w.name), w.dtype, b.CreateVector(w.shape),
                                         w.size_bytes, ext, w.packed_offset, w.packed));
  }
  auto wdata = bytes(p.weight_data);
  auto prov = plan::CreateProvenance(b, b.CreateString("kiln-test 0.1"), b.CreateString("--test"),
                                     b.CreateString("test.py"), b.CreateString("0123456789abcdef"),
                                     1700000000);
  std::vector<Offset<plan::Function>> functions;
  for (const auto& f : p.functions) {
    auto fl = make_launches(f.launches);
    auto fi = specs(f.inputs);
    auto fo = specs(f.outputs);
    functions.push_back(plan::CreateFunction(b, b.CreateString(f.name), fl, fi, fo));
  }
  auto fns = p.functions.empty() ? 0 : b.CreateVector(functions);
  Offset<plan::TokenizerData> tok = 0;
  if (p.has_tokenizer)
    tok = plan::CreateTokenizerData(
        b, b.CreateVector(reinterpret_cast<const uint8_t*>(p.tokenizer_json.data()), p.tokenizer_json.size()),
        b.CreateString("test/tokenizer.json"));
  Offset<plan::GenerationConfig> gen = 0;
  if (p.has_generation) {
    const TGeneration& g = p.generation;
    gen = plan::CreateGenerationConfig(b, b.CreateVector(g.eos_token_ids), g.bos_token_id,
                                       b.CreateString("generation_config.json"), b.CreateString("config.json"),
                                       g.do_sample, g.temperature, g.top_k, g.top_p);
  }
  std::vector<Offset<plan::WeightFile>> files;
  for (const auto& f : p.weight_files)
    files.push_back(plan::CreateWeightFile(b, b.CreateString(f.path), f.size, f.sample_bytes, f.sample_count,
                                           f.sample_xxh64));
  auto wfiles = files.empty() ? 0 : b.CreateVector(files);
  auto root = plan::CreatePlan(b, p.format_version, b.CreateString("test"), b.CreateVector(exes),
                               b.CreateVector(kernels), b.CreateVector(buffers), p.arena_size,
                               p.arena_size, launches, inputs, outputs,
                               b.CreateVector(weights), wdata, prov, p.state_size, fns, tok, gen, wfiles);
  plan::FinishPlanBuffer(b, root);
  std::string out(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
  plan::AppendTrailer(&out);
  return out;
}

std::string Reseal(std::string bytes) {
  bytes.resize(bytes.size() - plan::kTrailerSize);
  plan::AppendTrailer(&bytes);
  return bytes;
}

void CompleteKernels(TPlan& p) {
  std::vector<const TLaunch*> launches;
  for (const TLaunch& l : p.launches) launches.push_back(&l);
  for (const TFunction& f : p.functions)
    for (const TLaunch& l : f.launches) launches.push_back(&l);
  for (uint32_t k = 0; k < p.kernels.size(); ++k) {
    TKernel& kernel = p.kernels[k];
    bool derive_access = kernel.access.empty(), derive_grids = kernel.grids.empty();
    for (const TLaunch* l : launches) {
      if (l->kernel != k || l->bindings.size() != kernel.num_buffers) continue;
      if (derive_access && kernel.access.empty()) {
        for (size_t i = 0; i < l->bindings.size(); ++i) {
          plan::BufferKind kind = p.buffers[l->bindings[i]].kind;
          int32_t partner = -1;
          for (size_t j = 0; j < i; ++j)
            if (l->bindings[j] == l->bindings[i] && kind == plan::BufferKind::state &&
                i + kernel.num_written >= kernel.num_buffers)
              partner = static_cast<int32_t>(j);
          kernel.in_place_of.push_back(partner);
          bool written = i + kernel.num_written >= kernel.num_buffers;
          kernel.access.push_back(kind == plan::BufferKind::state ? plan::BindingAccess::state
                                  : written                       ? plan::BindingAccess::write
                                                                  : plan::BindingAccess::read);
        }
        for (int32_t j : kernel.in_place_of)
          if (j >= 0) kernel.access[static_cast<size_t>(j)] = plan::BindingAccess::state;
        bool any = false;
        for (int32_t j : kernel.in_place_of) any |= j >= 0;
        if (!any) kernel.in_place_of.clear();
      }
      if (!derive_grids) continue;
      TGrid g;
      g.programs = l->programs;
      g.scalar_min = g.scalar_max = l->scalars;
      bool tables = false;
      for (uint32_t b : l->bindings) {
        const TBuffer& buf = p.buffers[b];
        g.binding_bytes.push_back(buf.size_bytes);
        g.table_entries.push_back(static_cast<uint32_t>(buf.weight_list.size()));
        tables |= !buf.weight_list.empty();
      }
      if (!tables) g.table_entries.clear();
      bool seen = false;
      for (const TGrid& o : kernel.grids)
        seen |= o.programs == g.programs && o.scalar_min == g.scalar_min && o.binding_bytes == g.binding_bytes;
      if (!seen) kernel.grids.push_back(g);
    }
  }
}

void RederiveKernels(TPlan& p) {
  for (TKernel& k : p.kernels) {
    k.access.clear();
    k.in_place_of.clear();
    k.grids.clear();
  }
  CompleteKernels(p);
}

TPlan MakeAddPlan(const std::string& dir) {
  TPlan p;
  TExecutable cpu;
  cpu.binary = ReadFile(KILN_TEST_KERNELS_SO);
  cpu.entries = {{"add_f32", 0, 1}, {"add_scaled_f32", 1, 1}};
  p.executables.push_back(cpu);
  p.kernels = {{"add_f32", 3, 0}, {"add_scaled_f32", 3, 1}};
  // Buffers: 0 x (input), 1 t (intermediate), 2 y (output), 3 wp, 4 we.
  p.buffers = {{plan::BufferKind::input, 32, 0, 0},
               {plan::BufferKind::intermediate, 32, 256, 0},
               {plan::BufferKind::output, 32, 512, 0},
               {plan::BufferKind::weight, 32, 0, 0},
               {plan::BufferKind::weight, 32, 0, 1}};
  p.arena_size = 768;
  p.launches = {{0, {0, 3, 1}, {}, 8, "test.py:1"}, {1, {1, 4, 2}, {2}, 8, "test.py:2"}};
  p.inputs = {{"x", plan::DType::f32, {1, 8}, 0}};
  p.outputs = {{"y", plan::DType::f32, {1, 8}, 2}};

  float wp[8], we[8];
  for (int i = 0; i < 8; ++i) {
    wp[i] = static_cast<float>(i);
    we[i] = static_cast<float>(10 * i);
  }
  p.weight_data.assign(64, '\0');  // packed weight at offset 64
  p.weight_data.append(reinterpret_cast<const char*>(wp), sizeof(wp));
  TWeight packed;
  packed.name = "wp";
  packed.shape = {8};
  packed.size_bytes = 32;
  packed.packed = true;
  packed.packed_offset = 64;

  std::string file(16, 'h');  // a 16-byte "header", then the data
  file.append(reinterpret_cast<const char*>(we), sizeof(we));
  file.append(8, 't');
  WriteFile(dir + "/weights.bin", file);
  TWeight ext;
  ext.name = "we";
  ext.shape = {8};
  ext.size_bytes = 32;
  ext.path = "weights.bin";
  ext.ext_offset = 16;
  ext.ext_size = 32;
  ext.file_size = file.size();
  ext.xxh64 = plan::Xxh64(file.data() + 16, 32);
  p.weights = {packed, ext};
  CompleteKernels(p);
  return p;
}

TPlan MakeStatePlan() {
  TPlan p;
  TExecutable cpu;
  cpu.binary = ReadFile(KILN_TEST_KERNELS_SO);
  cpu.entries = {{"add_f32", 0, 1}, {"copy_f32", 1, 1}};
  p.executables.push_back(cpu);
  p.kernels = {{"add_f32", 3, 0}, {"copy_f32", 2, 0}};
  // Buffers: 0 s (state), 1 x (input), 2 y (output).
  p.buffers = {{plan::BufferKind::state, 16, 0, 0},
               {plan::BufferKind::input, 16, 256, 0},
               {plan::BufferKind::output, 16, 512, 0}};
  p.arena_size = 768;
  p.state_size = 256;
  p.launches = {{1, {1, 0}, {}, 4, "fwd:1"}, {0, {1, 0, 2}, {}, 4, "fwd:2"}};
  p.inputs = {{"x", plan::DType::f32, {4}, 1}};
  p.outputs = {{"y", plan::DType::f32, {4}, 2}};
  TFunction decode;
  decode.name = "decode";
  decode.launches = {{0, {1, 0, 2}, {}, 4, "dec:1"}, {1, {2, 0}, {}, 4, "dec:2"}};
  decode.inputs = {{"x", plan::DType::f32, {4}, 1}};
  decode.outputs = {{"y", plan::DType::f32, {4}, 2}};
  p.functions = {decode};
  CompleteKernels(p);
  return p;
}

TPlan MakeToyLmPlan(int64_t B, int64_t S, int64_t V, bool last_position_logits) {
  auto align = [](uint64_t n) { return (n + 255) / 256 * 256; };
  TPlan p;
  TExecutable cpu;
  cpu.binary = ReadFile(KILN_TEST_KERNELS_SO);
  cpu.entries = {{"toy_logits", 0, 1}, {"toy_store_last", 1, 1}};
  p.executables.push_back(cpu);
  p.kernels = {{"toy_logits", 2, 1}, {"toy_store_last", 2, 1}};
  uint64_t B_ = static_cast<uint64_t>(B), S_ = static_cast<uint64_t>(S), V_ = static_cast<uint64_t>(V);
  // Buffers: 0 state int32 [B]; forward 1 tokens [B, S], 2 logits [B, S, V];
  // decode 3 tokens [B, 1], 4 position [B], 5 logits [B, 1, V].
  uint64_t off = align(4 * B_);
  p.state_size = off;
  p.buffers.push_back({plan::BufferKind::state, 4 * B_, 0, 0});
  auto arena = [&](plan::BufferKind kind, uint64_t size) {
    p.buffers.push_back({kind, size, off, 0});
    off += align(size);
  };
  arena(plan::BufferKind::input, 4 * B_ * S_);
  arena(plan::BufferKind::output, 4 * B_ * S_ * V_);
  arena(plan::BufferKind::input, 4 * B_);
  arena(plan::BufferKind::input, 4 * B_);
  arena(plan::BufferKind::output, 4 * B_ * V_);
  p.arena_size = off;
  p.launches = {{0, {1, 2}, {V}, B_ * S_, "toy:forward"}, {1, {1, 0}, {S}, B_, "toy:forward"}};
  auto ranged = [](TSpec s, int64_t lo, int64_t hi, std::string note) {
    s.has_range = true;
    s.range_min = lo;
    s.range_max = hi;
    s.range_note = std::move(note);
    return s;
  };
  std::string vocab = "it indexes a table of " + std::to_string(V) + " rows";
  std::string cache = "the KV cache holds " + std::to_string(S) + " positions";
  p.inputs = {ranged({"tokens", plan::DType::i32, {B, S}, 1}, 0, V - 1, vocab)};
  p.outputs = {{"logits", plan::DType::f32, {B, S, V}, 2}};
  TFunction decode;
  decode.name = "decode";
  decode.launches = {{0, {3, 5}, {V}, B_, "toy:decode"}, {1, {3, 0}, {1}, B_, "toy:decode"}};
  decode.inputs = {ranged({"tokens", plan::DType::i32, {B, 1}, 3}, 0, V - 1, vocab),
                   ranged({"position", plan::DType::i32, {B}, 4}, 0, S - 1, cache)};
  decode.outputs = {{"logits", plan::DType::f32, {B, 1, V}, 5}};
  if (last_position_logits) {
    // forward: the state (the last token of each row) -> logits [B, V].
    p.buffers[2].size_bytes = 4 * B_ * V_;
    p.launches = {{1, {1, 0}, {S}, B_, "toy:forward"}, {0, {0, 2}, {V}, B_, "toy:forward"}};
    p.outputs[0].shape = {B, V};
    decode.outputs[0].shape = {B, V};
    // toy_logits reads the state here and an input in decode: plain reads.
    p.kernels[0].access = {plan::BindingAccess::read, plan::BindingAccess::write};
  }
  p.functions = {decode};
  CompleteKernels(p);
  return p;
}

}  // namespace kiln::test
