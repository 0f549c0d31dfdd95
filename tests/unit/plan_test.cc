// Plan::Open: structure, version and semantic verification.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "kiln/runtime.h"
#include "plan_support.h"
#include "tile_launch.h"
#include "weight_hash.h"
#include "test_plan_builder.h"

namespace kiln::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class PlanTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void SetUp() override { dir_ = MakeTempDir(); plan_ = MakeAddPlan(dir_); }
  // Serializes plan_ (or `bytes`) to a file and opens it.
  absl::StatusOr<std::shared_ptr<const Plan>> Open() { return OpenBytes(Serialize(plan_)); }
  absl::StatusOr<std::shared_ptr<const Plan>> OpenBytes(const std::string& bytes) {
    std::string path = dir_ + "/model.kplan";
    WriteFile(path, bytes);
    return Plan::Open(path);
  }
  std::string ErrorOf(const absl::StatusOr<std::shared_ptr<const Plan>>& r) {
    EXPECT_FALSE(r.ok()) << "expected an error";
    return r.ok() ? "" : std::string(r.status().message());
  }
  std::string dir_;
  TPlan plan_;
};

TEST_F(PlanTest, ValidPlanOpens) {
  auto p = Open();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->fb().format_version(), 3u);
  EXPECT_EQ((*p)->fb().launches()->size(), 2u);
  EXPECT_EQ((*p)->base_dir(), dir_);
  auto mem = Plan::OpenFromMemory(Serialize(plan_), dir_);
  ASSERT_TRUE(mem.ok()) << mem.status();
}

TEST_F(PlanTest, MissingFile) {
  auto r = Plan::Open(dir_ + "/nope.kplan");
  EXPECT_THAT(ErrorOf(r), HasSubstr("nope.kplan"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PlanTest, Truncated) {
  std::string bytes = Serialize(plan_);
  for (size_t cut : {size_t{0}, size_t{7}, size_t{23}, size_t{24}, size_t{64}, bytes.size() / 2,
                     bytes.size() - 16, bytes.size() - 1}) {
    SCOPED_TRACE(cut);
    std::string msg = ErrorOf(OpenBytes(bytes.substr(0, cut)));
    if (cut < 24)
      EXPECT_THAT(msg, HasSubstr("file too small to be a Kiln plan (" + std::to_string(cut) + " bytes)"));
    else
      EXPECT_THAT(msg, HasSubstr("truncated or damaged: the file (" + std::to_string(cut) +
                                 " bytes) does not end with the plan checksum trailer ('KPLNXX64')"));
  }
}

TEST_F(PlanTest, CorruptMiddle) {
  std::string bytes = Serialize(plan_);
  // Overwrite a stretch of the table/vtable area with garbage offsets.
  for (size_t i = 8; i < 72 && i < bytes.size(); ++i) bytes[i] = static_cast<char>(0xff);
  EXPECT_THAT(ErrorOf(OpenBytes(bytes)), HasSubstr("checksum mismatch: the file is damaged (XXH64 of its first"));
  // The same damage with a matching checksum (a writer's bug): the
  // structure is verified still.
  EXPECT_THAT(ErrorOf(OpenBytes(Reseal(bytes))), HasSubstr("corrupt plan: flatbuffers verification failed"));
}

// Every single flipped bit of the file is refused, with an error that says
// where the damage shows.
TEST_F(PlanTest, FlippedByteAnywhere) {
  const std::string bytes = Serialize(plan_);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string damaged = bytes;
    damaged[i] = static_cast<char>(damaged[i] ^ (1 << (i % 8)));
    auto r = Plan::OpenFromMemory(damaged, dir_);
    ASSERT_FALSE(r.ok()) << "a flip at byte " << i << " of " << bytes.size() << " was accepted";
    std::string msg(r.status().message());
    if (i >= 4 && i < 8)
      EXPECT_THAT(msg, HasSubstr("not a Kiln plan (file identifier")) << i;
    else if (i >= bytes.size() - 8)
      EXPECT_THAT(msg, HasSubstr("does not end with the plan checksum trailer")) << i;
    else
      EXPECT_THAT(msg, HasSubstr("checksum mismatch: the file is damaged")) << i;
  }
}

// The executable's own checksum names it, with or without the plan's.
TEST_F(PlanTest, FlippedByteInExecutable) {
  std::string bytes = Serialize(plan_);
  const std::string& so = plan_.executables[0].binary;
  size_t at = bytes.find(so);
  ASSERT_NE(at, std::string::npos);
  bytes[at + so.size() / 2] ^= 0x10;
  std::string exe = "executable 0 (x86_64): checksum mismatch: its binary (" + std::to_string(so.size()) +
                    " bytes) or PTX (0 bytes) is damaged";
  std::string msg = ErrorOf(OpenBytes(bytes));
  EXPECT_THAT(msg, HasSubstr("checksum mismatch: the file is damaged"));
  EXPECT_THAT(msg, HasSubstr(exe));
  msg = ErrorOf(OpenBytes(Reseal(bytes)));
  EXPECT_THAT(msg, HasSubstr(exe));
  EXPECT_THAT(msg, Not(HasSubstr("the file is damaged")));
  // A PTX byte, likewise.
  const std::string ptx = "// ptx text of the kernels";
  plan_.executables.push_back(
      {plan::TargetKind::cuda, "sm_90a", "", ptx, {{"add_f32", 0, 64}, {"add_scaled_f32", 1, 64}}});
  bytes = Serialize(plan_);
  ASSERT_TRUE(OpenBytes(bytes).ok());
  at = bytes.find("ptx text");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = 'P';
  EXPECT_THAT(ErrorOf(OpenBytes(Reseal(bytes))),
              HasSubstr("executable 1 (sm_90a): checksum mismatch: its binary (0 bytes) or PTX (" +
                        std::to_string(ptx.size()) + " bytes) is damaged"));
}

TEST_F(PlanTest, WrongIdentifier) {
  std::string bytes = Serialize(plan_);
  bytes.replace(4, 4, "ABCD");
  EXPECT_THAT(ErrorOf(OpenBytes(bytes)), HasSubstr("file identifier 'ABCD', expected 'KPLN'"));
}

TEST_F(PlanTest, WrongFormatVersion) {
  plan_.format_version = 4;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("unsupported format_version 4 (this runtime supports 3)"));
  // A version 1 plan has no trailer: named as such, not as a damaged file.
  plan_.format_version = 1;
  std::string v1 = Serialize(plan_);
  v1.resize(v1.size() - plan::kTrailerSize);
  EXPECT_THAT(ErrorOf(OpenBytes(v1)),
              HasSubstr("unsupported format_version 1 (this runtime supports 3; recompile the model)"));
}

TEST_F(PlanTest, BindingOutOfRange) {
  plan_.launches[1].bindings[2] = 17;
  EXPECT_THAT(ErrorOf(Open()),
              HasSubstr("launch 1 (test.py:2): binding 2 refers to buffer 17, but the plan has 5 buffers"));
}

TEST_F(PlanTest, KernelOutOfRange) {
  plan_.launches[0].kernel = 9;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 0 (test.py:1): refers to kernel 9, but the plan has 2 kernels"));
}

TEST_F(PlanTest, BindingCountMismatch) {
  plan_.launches[0].bindings.pop_back();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("kernel 'add_f32' takes 3 buffers, but the launch binds 2"));
}

TEST_F(PlanTest, ScalarCountMismatch) {
  plan_.launches[1].scalars.clear();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("kernel 'add_scaled_f32' takes 1 scalars, but the launch passes 0"));
}

TEST_F(PlanTest, ArenaOverflow) {
  plan_.buffers[2].offset = 768;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("buffer 2 (output): [768, 800) overflows the arena (arena_size 768)"));
}

TEST_F(PlanTest, UnalignedArenaOffset) {
  plan_.buffers[1].offset = 100;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("buffer 1 (intermediate): arena offset 100 is not 256-aligned"));
}

TEST_F(PlanTest, WeightIndexOutOfRange) {
  plan_.buffers[4].weight = 5;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("buffer 4: refers to weight 5, but the plan has 2 weights"));
}

TEST_F(PlanTest, PackedWeightOutsideWeightData) {
  plan_.weights[0].packed_offset = 128;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("weight 0 ('wp'): packed bytes [128, 160) lie outside weight_data"));
}

TEST_F(PlanTest, ExternalWeightWithoutPath) {
  plan_.weights[1].path = "";
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("weight 1 ('we'): external weight without a path"));
}

TEST_F(PlanTest, WeightSizeDisagreesWithShape) {
  plan_.weights[1].shape = {9};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("weight 1 ('we'): float32 [9] is 36 bytes, but size_bytes is 32"));
}

TEST_F(PlanTest, MissingEntryPointForKernel) {
  plan_.executables[0].entries.pop_back();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("no entry point for kernel 1 ('add_scaled_f32')"));
}

TEST_F(PlanTest, EntryPhasesChecked) {
  plan_.executables[0].entries[1].phases = 0;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("entry point 1 ('add_scaled_f32') has 0 phases (CPU entry "
                                         "points have 1 to 8, others 1)"));
  plan_.executables[0].entries[1].phases = 9;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("has 9 phases"));
  plan_.executables[0].entries[1].phases = 8;
  EXPECT_TRUE(Open().ok());
  // Only CPU entry points have phases.
  plan_.executables[0].entries[1].phases = 1;
  plan_.executables.push_back(
      {plan::TargetKind::cuda, "sm_90a", "", "// ptx", {{"add_f32", 0, 64, 2}, {"add_scaled_f32", 1, 64}}});
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("executable 1 (sm_90a): entry point 0 ('add_f32') has 2 phases"));
}

// A CUDA executable whose add_f32 entry has tile variants: up to 2 rows and
// up to 8 (the grid's 8 programs, one per row), with a tensor map over the
// 32-byte weight binding (1) and the other bindings and the rows as plain
// parameters.
void AddTiledCudaExecutable(TPlan& p) {
  TTileParam map;
  map.kind = plan::TileParamKind::tensor_map;
  map.binding = 1;
  map.dims = {8};
  map.box = {8};
  TTileParam in, out, rows;
  in.binding = 0;
  in.row_bytes = 4;  // 8 rows of one f32
  out.binding = 2;
  out.row_bytes = 4;
  rows.kind = plan::TileParamKind::rows;
  TEntry e{"add_f32", 0, 64};
  e.programs_per_row = 1;
  e.tiles = {{"add_f32_tile0", 2, 128, 0, 1, 1, {map, in, out, rows}},
             {"add_f32_tile1", 8, 384, 100 * 1024, 4, 2, {map, in, out, rows}}};
  p.executables.push_back({plan::TargetKind::cuda, "sm_90a", "", "// ptx", {e, {"add_scaled_f32", 1, 64}}});
}

TEST_F(PlanTest, TileVariantsAreVerified) {
  AddTiledCudaExecutable(plan_);
  ASSERT_TRUE(Open().ok()) << ErrorOf(Open());
  auto edit = [&](auto change) {
    plan_ = MakeAddPlan(dir_);
    AddTiledCudaExecutable(plan_);
    TEntry& e = plan_.executables[1].entries[0];
    change(e);
    return ErrorOf(Open());
  };
  const std::string at = "executable 1 (sm_90a): entry point 0 ('add_f32')";
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[1].max_rows = 4; }),
              HasSubstr(at + ": tile variants hold up to 4 rows, but the kernel's grids have up to 8"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[1].max_rows = 2; }),
              HasSubstr(at + ": tile variant 1 ('add_f32_tile1'): max_rows 2 does not increase (previous 2)"));
  EXPECT_THAT(edit([](TEntry& e) { e.programs_per_row = 3; }),
              HasSubstr("a grid of 8 programs is not whole rows of 3"));
  EXPECT_THAT(edit([](TEntry& e) { e.programs_per_row = 0; }), HasSubstr("programs_per_row 0"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[0].threads = 1000; }),
              HasSubstr("tile variant 0 ('add_f32_tile0'): 1000 threads (a multiple of 32, at most 1024)"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[1].dynamic_shared_bytes = 300000; }),
              HasSubstr("300000 bytes of dynamic shared memory exceed 232448"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[0].column_tiles = 0; }), HasSubstr("no tiles"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[0].params[2].binding = 5; }),
              HasSubstr("tile variant 0 ('add_f32_tile0'), parameter 2: binding 5 of a kernel with 3"));
  // The map may not reach past its binding at any grid (8 f32 = 32 bytes).
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[1].params[0].dims = {16}; }),
              HasSubstr("parameter 0: tensor map spans 64 bytes of binding 1, which holds 32 at a grid of 8 "
                        "programs"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[0].params[0].box = {300}; }), HasSubstr("parameter 0: tensor map: "));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[0].params[0].strides_bytes = {32}; }),
              HasSubstr("malformed tensor map (dtype 0, 1 dims, 1 strides, 1 box extents, swizzle 0)"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[0].params[0].swizzle_bytes = 48; }), HasSubstr("swizzle 48"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[0].params.clear(); }), HasSubstr("no parameters"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[0].params[1].row_bytes = 8; }),
              HasSubstr("parameter 1: 8 rows of 8 bytes exceed binding 0's 32 bytes"));
  EXPECT_THAT(edit([](TEntry& e) { e.tiles[0].params[0].row_bytes = 4; }),
              HasSubstr("parameter 0: a tensor map cannot advance by rows"));
  // A map whose outer dimension is the launch's rows spans each grid's rows
  // (the input, 8 rows of one f32), whatever its dims say.
  auto rowsMap = [](TEntry& e, uint64_t rows) {
    TTileParam m = e.tiles[1].params[0];
    m.binding = 0;
    m.dims = {1, rows};
    m.strides_bytes = {16};  // rows 16 bytes apart: 8 of them overrun 32 bytes
    m.box = {4, 1};
    m.dims[0] = 4;
    m.rows_dim = true;
    TTileParam first;
    first.kind = plan::TileParamKind::first_row;
    e.tiles[1].params.push_back(m);
    e.tiles[1].params.push_back(first);
  };
  EXPECT_THAT(edit([&](TEntry& e) { rowsMap(e, 1000); }),
              HasSubstr("parameter 4: tensor map spans 128 bytes of binding 0, which holds 32 at a grid of 8"));
  // One f32 per row, 1000 rows said: the grid's 8 rows are its 32 bytes.
  plan_ = MakeAddPlan(dir_);
  AddTiledCudaExecutable(plan_);
  rowsMap(plan_.executables[1].entries[0], 1000);
  TTileParam& m = plan_.executables[1].entries[0].tiles[1].params[4];
  m.dims = {1000};
  m.strides_bytes = {};
  m.box = {8};
  EXPECT_TRUE(Open().ok()) << ErrorOf(Open());
  m.rows_dim = false;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("parameter 4: tensor map spans 4000 bytes of binding 0"));
  // Units of rows (grouped kernels' layout blocks): 8 programs of 2 rows
  // each overrun the bindings' 8 rows, and the variants' 8.
  EXPECT_THAT(edit([](TEntry& e) { e.rows_per_unit = 2; }),
              HasSubstr("parameter 1: 16 rows of 4 bytes exceed binding 0's 32 bytes"));
  EXPECT_THAT(edit([](TEntry& e) {
                e.rows_per_unit = 2;
                for (TTile& t : e.tiles)
                  for (TTileParam& q : t.params) q.row_bytes = 0;
              }),
              HasSubstr("tile variants hold up to 8 rows, but the kernel's grids have up to 16"));
  EXPECT_THAT(edit([](TEntry& e) { e.rows_per_unit = 0; }), HasSubstr("rows_per_unit 0"));
  // A weight-table map needs a weight-table binding of as many entries.
  EXPECT_THAT(edit([](TEntry& e) {
                TTileParam& m = e.tiles[0].params[0];
                m.table = true;
                m.dims = {8, 1};
                m.strides_bytes = {32};
                m.box = {8, 1};
              }),
              HasSubstr("parameter 0: a weight-table map of 1 entries over binding 1, which has 0 at a grid of 8"));
  // Only CUDA runs tile variants.
  plan_ = MakeAddPlan(dir_);
  plan_.executables[0].entries[0].tiles = {{"add_f32_tile0", 8, 128, 0, 1, 1, {}}};
  plan_.executables[0].entries[0].programs_per_row = 1;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("has tile variants, which only CUDA runs"));
}

// How the CUDA executor runs a launch through its tile variants
// (tile_launch.h): rows up to the last program given, the first variant
// that holds them, one persistent block per tile up to the SM count, the
// tensor map's encode arguments.
TEST_F(PlanTest, TileLaunchArithmetic) {
  AddTiledCudaExecutable(plan_);
  plan_.executables[1].entries[0].programs_per_row = 2;
  plan_.executables[1].entries[0].tiles[1].max_rows = 4;
  auto opened = Open();
  ASSERT_TRUE(opened.ok()) << ErrorOf(opened);
  const plan::EntryPoint& ep = *(*opened)->fb().executables()->Get(1)->entry_points()->Get(0);
  using Runs = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(TileRowRuns({{0, 8}}, 2), (Runs{{0, 4}}));  // a whole grid: one run
  EXPECT_EQ(TileRowRuns({{0, 5}}, 2), (Runs{{0, 3}}));  // ending inside row 2 runs it
  // A window of two batch rows giving 2 of 4 positions (4 programs each
  // here): one run per batch row; touching ranges merge.
  EXPECT_EQ(TileRowRuns({{0, 4}, {8, 12}}, 2), (Runs{{0, 2}, {4, 6}}));
  EXPECT_EQ(TileRowRuns({{0, 4}, {4, 8}, {9, 9}}, 2), (Runs{{0, 4}}));
  EXPECT_EQ(ChooseTileVariant(ep, 1), 0);
  EXPECT_EQ(ChooseTileVariant(ep, 2), 0);
  EXPECT_EQ(ChooseTileVariant(ep, 3), 1);
  EXPECT_EQ(ChooseTileVariant(ep, 4), 1);
  EXPECT_EQ(ChooseTileVariant(ep, 5), -1);
  const plan::TileVariant& big = *ep.tiles()->Get(1);  // 4 rows per tile, 2 column tiles
  EXPECT_EQ(TileGrid(big, 4, 132), 2u);
  EXPECT_EQ(TileGrid(big, 5, 132), 4u);
  EXPECT_EQ(TileGrid(big, 4000, 132), 132u);  // persistent: at most one block per SM
  EXPECT_EQ(TileGrid(big, 4000, 78), 78u);
  TensorMapArgs a = TensorMapArgsOf(*big.params()->Get(0)->map());
  EXPECT_EQ(a.rank, 1u);
  EXPECT_EQ(a.dtype, cuda::CU_TENSOR_MAP_DATA_TYPE_FLOAT32);
  EXPECT_EQ(a.swizzle, cuda::CU_TENSOR_MAP_SWIZZLE_NONE);
  EXPECT_EQ(a.dims[0], 8u);
  EXPECT_EQ(a.box[0], 8u);
}

TEST_F(PlanTest, EntryKernelOutOfRange) {
  plan_.executables[0].entries[1].kernel = 4;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("entry point 1 ('add_scaled_f32') refers to kernel 4"));
}

TEST_F(PlanTest, InputSpecChecks) {
  plan_.inputs[0].shape = {2, 8};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): float32 [2, 8] is 64 bytes, but buffer 0 is 32 bytes"));
  plan_ = MakeAddPlan(dir_);
  plan_.inputs[0].buffer = 1;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): buffer 1 has kind intermediate, expected input"));
  plan_ = MakeAddPlan(dir_);
  plan_.outputs[0].buffer = 42;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("output 0 ('y'): refers to buffer 42"));
  plan_ = MakeAddPlan(dir_);
  plan_.outputs[0].dtype = static_cast<plan::DType>(99);
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("output 0 ('y'): unknown dtype 99"));
}

// Reference values of the xxHash64 specification (seed 0 unless given).
TEST_F(PlanTest, Xxh64KnownValues) {
  EXPECT_EQ(plan::Xxh64("", 0), 0xef46db3751d8e999ull);
  EXPECT_EQ(plan::Xxh64("a", 1), 0xd24ec4f1a98c6e5bull);
  EXPECT_EQ(plan::Xxh64("abc", 3), 0x44bc2cf5ad770999ull);
  // 39 bytes: one 32-byte stripe, then 8-, 4- and 1-byte tails.
  const char* s = "Nobody inspects the spammish repetition";
  EXPECT_EQ(plan::Xxh64(s, std::strlen(s)), 0xfbcea83c8a378bf1ull);
  // The seed changes the hash; the same bytes at another alignment do not.
  EXPECT_NE(plan::Xxh64(s, std::strlen(s), 1), plan::Xxh64(s, std::strlen(s)));
  std::string shifted = std::string("x") + s;
  EXPECT_EQ(plan::Xxh64(shifted.data() + 1, std::strlen(s)), 0xfbcea83c8a378bf1ull);
}

TEST_F(PlanTest, Xxh64InPiecesEqualsOneShot) {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  for (size_t size : {0, 1, 31, 32, 33, 64, 100, 1000})
    for (size_t piece : {1, 5, 31, 32, 33, 200}) {
      plan::Xxh64State h(size % 3);
      for (size_t at = 0; at < size; at += piece) h.Update(data.data() + at, std::min(piece, size - at));
      EXPECT_EQ(h.Digest(), plan::Xxh64(data.data(), size, size % 3)) << size << " in pieces of " << piece;
    }
}

TEST_F(PlanTest, SampledIdentity) {
  std::vector<uint8_t> file(10000, 3);
  // Small files: the whole file, seeded with its size.
  EXPECT_EQ(plan::SampledXxh64(file.data(), 100, 16, 8), plan::Xxh64(file.data(), 100, 100));
  // 4 chunks of 10: at 0, 3330, 6660, 9990 (the last ends at the file's end).
  EXPECT_EQ(plan::SampleOffset(10000, 10, 4, 0), 0u);
  EXPECT_EQ(plan::SampleOffset(10000, 10, 4, 1), 3330u);
  EXPECT_EQ(plan::SampleOffset(10000, 10, 4, 3), 9990u);
  EXPECT_EQ(plan::SampleOffset(uint64_t{700} << 30, 65536, 16, 15), (uint64_t{700} << 30) - 65536);
  uint64_t h = plan::SampledXxh64(file.data(), file.size(), 10, 4);
  file[3335] ^= 1;  // sampled
  EXPECT_NE(plan::SampledXxh64(file.data(), file.size(), 10, 4), h);
  file[3335] ^= 1;
  file[5000] ^= 1;  // between chunks: the full check's job
  EXPECT_EQ(plan::SampledXxh64(file.data(), file.size(), 10, 4), h);
  // The size is part of the identity.
  EXPECT_NE(plan::SampledXxh64(file.data(), 9999, 10, 4), h);
}

TEST_F(PlanTest, ParallelHashesEqualSerialOnes) {
  std::vector<uint8_t> data(20 << 20);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  std::vector<plan::HashJob> jobs;
  for (size_t at = 0, n = 1; at + n <= data.size(); at += n, n = n * 3 + 1) jobs.push_back({data.data() + at, n});
  jobs.push_back({data.data(), data.size()});  // two 16 MiB slices
  jobs.push_back({nullptr, 0});
  for (int threads : {1, 2, 5}) {
    int calls = 0;
    plan::HashProgress last;
    auto hashes = plan::ParallelXxh64(jobs, threads, [&](const plan::HashProgress& p) { ++calls, last = p; });
    ASSERT_EQ(hashes.size(), jobs.size());
    for (size_t j = 0; j < jobs.size(); ++j) EXPECT_EQ(hashes[j], plan::Xxh64(jobs[j].data, jobs[j].size)) << j;
    EXPECT_GE(calls, 1);
    EXPECT_TRUE(last.finished);
    EXPECT_EQ(last.done_bytes, last.total_bytes);
  }
  EXPECT_EQ(plan::ParallelXxh64(jobs, 1)[0], plan::Xxh64(jobs[0].data, jobs[0].size));
}

TEST_F(PlanTest, E4M3NaNCodesAreFoundAsWeightsAreHashed) {
  // Finite e4m3 codes everywhere (0x7F / 0xFF are the NaNs), then NaN codes
  // planted at chosen offsets: past the first 1 MiB piece and 16 MiB slice.
  std::vector<uint8_t> data(18 << 20);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(i % 0x7F) | (i & 0x80);
  EXPECT_EQ(plan::FirstE4M3NaN(data.data(), data.size()), data.size());
  data[(17 << 20) + 5] = 0xFF;
  data[(3 << 20) + 1] = 0x7F;
  std::vector<plan::HashJob> jobs = {{data.data(), data.size(), true},
                                     {data.data(), data.size(), false},
                                     {data.data() + (16 << 20), 2 << 20, true},
                                     {data.data(), 1 << 20, true}};
  for (int threads : {1, 3}) {
    std::vector<uint64_t> nan_at;
    auto hashes = plan::ParallelXxh64(jobs, threads, {}, 1.0, &nan_at);
    ASSERT_EQ(nan_at.size(), jobs.size());
    EXPECT_EQ(nan_at[0], uint64_t{(3 << 20) + 1});
    EXPECT_EQ(nan_at[1], plan::HashJob::kNoNaN); // not an e4m3 range
    EXPECT_EQ(nan_at[2], uint64_t{(1 << 20) + 5});
    EXPECT_EQ(nan_at[3], plan::HashJob::kNoNaN);
    // Scanning does not change the hashes.
    for (size_t j = 0; j < jobs.size(); ++j)
      EXPECT_EQ(hashes[j], plan::Xxh64(jobs[j].data, jobs[j].size)) << j;
  }
}

// --- Launches against what their kernel was generated for ---------------

// A token grid must describe the launch's programs, and the scalars the
// runtime sets from a request must be valid for every count it may set.
TEST_F(PlanTest, TokenGridChecks) {
  plan_.launches[0].tokens = {1, 1, 8, -1, 0, -1, -1};
  EXPECT_TRUE(Open().ok()) << "a token grid of 1 x 8 tokens x 1 program";
  plan_.launches[0].tokens.per_token = 2;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 0 (test.py:1): tokens: 2 programs per token x 1 x 8 tokens "
                                         "is not the 8 programs it runs"));
  plan_ = MakeAddPlan(dir_);
  plan_.launches[0].tokens = {1, 1, 8, -1, 0, 0, -1};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("tokens: scalar 0 of a kernel with 0 scalars"));
  // add_scaled_f32's scalar was compiled as exactly 2: a request could set
  // it to 1..8.
  plan_ = MakeAddPlan(dir_);
  plan_.launches[1].tokens = {1, 1, 8, -1, 0, 0, -1};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 1 (test.py:2): tokens: scalar 0 may be set to [1, 8], but "
                                         "kernel 'add_scaled_f32' at 8 programs takes [2, 2]"));
}

TEST_F(PlanTest, LaunchBlockSize) {
  plan_.launches[0].block_x = 64;
  EXPECT_TRUE(Open().ok());
  plan_.launches[0].block_x = 48;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 0 (test.py:1): block_x 48 is not a whole number of warps"));
  plan_.launches[0].block_x = 2048;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("block_x 2048 is not a whole number of warps up to 1024"));
}

TEST_F(PlanTest, ProgramCountEnlarged) {
  plan_.launches[0].programs = 9;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 0 (test.py:1): runs 9 programs, but kernel 'add_f32' was "
                                         "generated for grids of 8 programs"));
  // A kernel generated for two grids names both.
  plan_ = MakeAddPlan(dir_);
  plan_.kernels[0].grids.push_back(plan_.kernels[0].grids[0]);
  plan_.kernels[0].grids[1].programs = 4;
  plan_.launches[0].programs = 16;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("runs 16 programs, but kernel 'add_f32' was generated for grids of 8, "
                                         "4 programs"));
}

TEST_F(PlanTest, BindingToSmallerBuffer) {
  // Another intermediate of 16 bytes; the first launch's output re-pointed
  // to it.
  plan_.buffers.push_back({plan::BufferKind::intermediate, 16, 768, 0});
  plan_.arena_size = 1024;
  plan_.launches[0].bindings[2] = 5;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 0 (test.py:1): binding 2 is buffer 5 (intermediate, 16 bytes), "
                                         "but kernel 'add_f32' at 8 programs needs 32 bytes there"));
  // The same through a buffer's recorded size.
  plan_ = MakeAddPlan(dir_);
  plan_.buffers[1].size_bytes = 28;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 0 (test.py:1): binding 2 is buffer 1 (intermediate, 28 bytes), "
                                         "but kernel 'add_f32' at 8 programs needs 32 bytes there"));
}

TEST_F(PlanTest, KernelIndexChanged) {
  // decode's logits launch pointed at the kernel that stores the state:
  // same binding and scalar counts, other uses.
  plan_ = MakeToyLmPlan(2, 4, 10);
  plan_.functions[0].launches[0].kernel = 1;
  EXPECT_THAT(ErrorOf(Open()),
              HasSubstr("function 'decode': launch 0 (toy:decode): binding 1 is buffer 5 (output, 80 bytes), "
                        "but kernel 'toy_store_last' keeps persistent state there (a state buffer)"));
  // The other way round: a grid the kernel was not generated for.
  plan_ = MakeToyLmPlan(2, 4, 10);
  plan_.functions[0].launches[1].kernel = 0;
  plan_.functions[0].launches[1].bindings = {3, 5};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("function 'decode': launch 1 (toy:decode): scalar 0 is 1, but kernel "
                                         "'toy_logits' at 2 programs takes [10, 10]"));
}

TEST_F(PlanTest, ScalarOutsideItsRange) {
  plan_.launches[1].scalars = {3};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 1 (test.py:2): scalar 0 is 3, but kernel 'add_scaled_f32' at 8 "
                                         "programs takes [2, 2]"));
}

TEST_F(PlanTest, EntryNameChanged) {
  plan_.executables[0].entries[1].name = "add_f32_v2";
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("executable 0 (x86_64): entry point 1 ('add_f32_v2') is for kernel 1 "
                                         "('add_scaled_f32'), but entry points are named after their kernel"));
  // Swapped kernel indices: each entry now runs the other kernel's code.
  plan_ = MakeAddPlan(dir_);
  std::swap(plan_.executables[0].entries[0].kernel, plan_.executables[0].entries[1].kernel);
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("entry point 0 ('add_f32') is for kernel 1 ('add_scaled_f32')"));
}

TEST_F(PlanTest, WrittenBindingMustBeAnIntermediateOrOutput) {
  plan_.launches[0].bindings[2] = 3;  // the output onto the packed weight
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 0 (test.py:1): binding 2 is buffer 3 (weight, 32 bytes), but "
                                         "kernel 'add_f32' writes it (only intermediate and output buffers may "
                                         "be written)"));
  plan_ = MakeAddPlan(dir_);
  plan_.launches[0].bindings[2] = 0;  // onto the input
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("binding 2 is buffer 0 (input, 32 bytes), but kernel 'add_f32' writes it"));
}

TEST_F(PlanTest, WrittenBufferAliasesAnotherBinding) {
  plan_.launches[1].bindings[2] = 1;  // y = t + 2 we, in place over t
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("launch 1 (test.py:2): bindings 2 and 0 are both buffer 1, which kernel "
                                         "'add_scaled_f32' writes through binding 2"));
  // Distinct buffers at overlapping arena bytes.
  plan_ = MakeAddPlan(dir_);
  plan_.buffers[2].offset = 256;
  EXPECT_THAT(ErrorOf(Open()),
              HasSubstr("launch 1 (test.py:2): binding 2 (buffer 2, arena [256, 288), written by kernel "
                        "'add_scaled_f32') overlaps binding 0 (buffer 1, arena [256, 288))"));
}

TEST_F(PlanTest, KernelRecordsAreVerified) {
  plan_.kernels[1].grids.clear();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("kernel 1 ('add_scaled_f32'): no grids (the launch shapes it was "
                                         "generated for)"));
  plan_ = MakeAddPlan(dir_);
  plan_.kernels[0].access.pop_back();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("kernel 0 ('add_f32'): binding_access has 2 entries for 3 bindings"));
  plan_ = MakeAddPlan(dir_);
  plan_.kernels[1].grids[0].binding_bytes.pop_back();
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("kernel 1 ('add_scaled_f32'): grid 0 (8 programs): binding_bytes has 2 "
                                         "entries for 3 bindings"));
  plan_ = MakeAddPlan(dir_);
  plan_.kernels[1].grids[0].scalar_min = {5};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("grid 0 (8 programs): scalar 0 has an empty range [5, 2]"));
  plan_ = MakeAddPlan(dir_);
  plan_.kernels[0].in_place_of = {-1, -1, 0};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("kernel 0 ('add_f32'): binding 2 updates binding 0 in place, so both "
                                         "must have access 'state'"));
}

// --- Value ranges of integer inputs ------------------------------------------

TEST_F(PlanTest, ValueRangesAreVerified) {
  auto ranged = [&](plan::DType dtype, int64_t lo, int64_t hi) {
    plan_ = MakeAddPlan(dir_);
    plan_.inputs[0].dtype = dtype;
    plan_.inputs[0].has_range = true;
    plan_.inputs[0].range_min = lo;
    plan_.inputs[0].range_max = hi;
  };
  ranged(plan::DType::i32, 0, 7);
  auto ok = Open();
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_NE((*ok)->fb().inputs()->Get(0)->value_range(), nullptr);
  EXPECT_EQ((*ok)->fb().inputs()->Get(0)->value_range()->max(), 7);
  ranged(plan::DType::f32, 0, 7);
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): value range [0, 7] on a float32 tensor (only integer "
                                         "inputs have one)"));
  ranged(plan::DType::i32, 3, 2);
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): empty value range [3, 2]"));
  ranged(plan::DType::i32, 0, int64_t{1} << 40);
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): value range [0, 1099511627776] does not fit int32"));
  // Zero padding must be a valid value.
  ranged(plan::DType::i32, 1, 7);
  plan_.inputs[0].dim_symbols = {0, -1};
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): may be given smaller along dimension 0 and is then "
                                         "padded with zeros, but 0 is outside its value range [1, 7]"));
  plan_.inputs[0].dim_symbols = {-1, -1};
  EXPECT_TRUE(Open().ok());
  plan_ = MakeAddPlan(dir_);
  plan_.outputs[0].has_range = true;
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("output 0 ('y'): outputs carry no value range (it has [0, 0])"));
}

TEST_F(PlanTest, RangesThatGrowWithTheTokensGivenAreVerified) {
  // Input 0 ('x', [2, 4]) with a range whose max grows along symbol 1.
  auto grows = [&](int32_t sym, bool range, std::vector<int32_t> dims) {
    plan_ = MakeAddPlan(dir_);
    plan_.inputs[0].dtype = plan::DType::i32;
    plan_.inputs[0].has_range = range;
    plan_.inputs[0].range_max = 5;
    plan_.inputs[0].dim_symbols = std::move(dims);
    plan_.inputs[0].range_max_grows_with = sym;
  };
  grows(1, true, {0, 1});
  auto ok = Open();
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->fb().inputs()->Get(0)->range_max_grows_with(), 1);
  grows(1, false, {0, 1});
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): range_max_grows_with names symbol 1 without a value range"));
  grows(3, true, {0, 1});
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): range_max_grows_with names symbol 3, which sizes no "
                                         "input dimension"));
  grows(-2, true, {0, 1});
  EXPECT_THAT(ErrorOf(Open()), HasSubstr("input 0 ('x'): range_max_grows_with is -2"));
}

}  // namespace
}  // namespace kiln::test
