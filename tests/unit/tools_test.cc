// End-to-end checks of kiln-run and kiln-inspect on a generated plan.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <sys/wait.h>

#include <cstdio>

#include "kiln/npy.h"
#include "test_plan_builder.h"

namespace kiln::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::ContainsRegex;

struct Result {
  int code = -1;
  std::string output;
};

Result Shell(const std::string& cmd) {
  Result r;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) r.output.append(buf, n);
  int status = pclose(f);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class ToolsTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void SetUp() override {
    dir_ = MakeTempDir();
    plan_path_ = dir_ + "/model.kplan";
    WriteFile(plan_path_, Serialize(MakeAddPlan(dir_)));
    HostTensor x = MakeTensor(DType::kF32, {1, 8});
    for (int i = 0; i < 8; ++i) x.data<float>()[i] = 1.0f;
    ASSERT_TRUE(WriteNpy(dir_ + "/x.npy", x).ok());
  }
  std::string dir_, plan_path_;
};

TEST_F(ToolsTest, KilnRunWritesOutputs) {
  Result r = Shell(std::string(KILN_RUN_EXE) + " " + plan_path_ + " --input x=" + dir_ +
                 "/x.npy --output y=" + dir_ + "/y.npy --threads 2 --repeat 3");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("y: float32 [1, 8]"));
  auto y = ReadNpy(dir_ + "/y.npy");
  ASSERT_TRUE(y.ok()) << y.status();
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(y->data<float>()[i], 1.0f + 21.0f * i);
}

TEST_F(ToolsTest, KilnRunErrors) {
  // Exit codes: 3 bad input, 4 a plan that cannot be opened (tools/common/tool_cli.h).
  Result missing = Shell(std::string(KILN_RUN_EXE) + " " + plan_path_);
  EXPECT_EQ(missing.code, 3);
  EXPECT_THAT(missing.output, HasSubstr("kiln-run: error: missing input 'x'"));
  Result bad_out = Shell(std::string(KILN_RUN_EXE) + " " + plan_path_ + " --input x=" + dir_ +
                       "/x.npy --output nope=" + dir_ + "/n.npy");
  EXPECT_EQ(bad_out.code, 3);
  EXPECT_THAT(bad_out.output, HasSubstr("kiln-run: error: unknown output 'nope'"));
  Result no_plan = Shell(std::string(KILN_RUN_EXE) + " " + dir_ + "/none.kplan");
  EXPECT_EQ(no_plan.code, 4);
  EXPECT_THAT(no_plan.output, HasSubstr("kiln-run: error: plan: cannot open"));
}

TEST_F(ToolsTest, KilnInspect) {
  Result text = Shell(std::string(KILN_INSPECT_EXE) + " " + plan_path_);
  ASSERT_EQ(text.code, 0) << text.output;
  EXPECT_THAT(text.output, HasSubstr("add_scaled"));
  EXPECT_THAT(text.output, HasSubstr("weights.bin"));
  Result json = Shell(std::string(KILN_INSPECT_EXE) + " " + plan_path_ + " --json");
  ASSERT_EQ(json.code, 0) << json.output;
  EXPECT_THAT(json.output, HasSubstr("\"format_version\": 3"));
  EXPECT_THAT(json.output, HasSubstr("\"name\": \"add_scaled_f32\""));
  WriteFile(plan_path_, "garbage!garbage!");
  Result bad = Shell(std::string(KILN_INSPECT_EXE) + " " + plan_path_);
  EXPECT_EQ(bad.code, 4);
  EXPECT_THAT(bad.output, HasSubstr("kiln-inspect: error: plan '"));
}

// kiln-run --function and --generate, kiln-inspect on functions and state.
class ToolsFunctionTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void SetUp() override { dir_ = MakeTempDir(); }
  std::string Write(const TPlan& p, const std::string& name = "model.kplan") {
    std::string path = dir_ + "/" + name;
    WriteFile(path, Serialize(p));
    return path;
  }
  std::string Prompt(std::vector<int64_t> shape, const std::vector<int32_t>& ids, DType dtype = DType::kI32) {
    HostTensor t = MakeTensor(dtype, std::move(shape));
    for (size_t i = 0; i < ids.size(); ++i) t.data<int32_t>()[i] = ids[i];
    std::string path = dir_ + "/prompt.npy";
    EXPECT_TRUE(WriteNpy(path, t).ok());
    return path;
  }
  Result Run(const std::string& args) { return Shell(std::string(KILN_RUN_EXE) + " " + args); }
  // kiln-inspect's text and JSON views of a plan it must accept.
  std::pair<std::string, std::string> Inspect(const std::string& plan) {
    Result text = Shell(std::string(KILN_INSPECT_EXE) + " " + plan);
    Result json = Shell(std::string(KILN_INSPECT_EXE) + " " + plan + " --json");
    EXPECT_EQ(text.code, 0) << text.output;
    EXPECT_EQ(json.code, 0) << json.output;
    return {text.output, json.output};
  }
  std::string dir_;
};

TEST_F(ToolsFunctionTest, KilnRunFunction) {
  std::string plan = Write(MakeStatePlan());
  HostTensor x = MakeTensor(DType::kF32, {4});
  for (int i = 0; i < 4; ++i) x.data<float>()[i] = 1.0f + i;
  ASSERT_TRUE(WriteNpy(dir_ + "/x.npy", x).ok());
  // A fresh session: state is zero, so decode's y = x; forward's y = 2x.
  Result r = Run(plan + " --function decode --input x=" + dir_ + "/x.npy --output y=" + dir_ + "/y.npy");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("(function decode)"));
  EXPECT_THAT(r.output, HasSubstr("y: float32 [4] = [1, 2, 3, 4]"));
  auto y = ReadNpy(dir_ + "/y.npy");
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->data<float>()[3], 4.0f);
  r = Run(plan + " --input x=" + dir_ + "/x.npy");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("y: float32 [4] = [2, 4, 6, 8]"));
  r = Run(plan + " --function decod --input x=" + dir_ + "/x.npy");
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.output, HasSubstr("kiln-run: error: plan has no function 'decod'; functions: forward, decode"));
  r = Run(plan + " --function decode");
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.output, HasSubstr("missing input 'x' of function 'decode'"));
  r = Run(plan + " --function decode --input x=" + dir_ + "/x.npy --output z=" + dir_ + "/z.npy");
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.output, HasSubstr("function 'decode': unknown output 'z'"));
}

TEST_F(ToolsFunctionTest, KilnRunGenerateThroughDecode) {
  // B 2, S 8, V 50; a prompt of 3 tokens (< S) is fed through decode.
  std::string plan = Write(MakeToyLmPlan(2, 8, 50));
  std::string prompt = Prompt({2, 3}, {5, 6, 7, 40, 46, 47});
  Result r = Run(plan + " --generate 4 --threads 2 --input tokens=" + prompt);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("prefill: 2 x 3 tokens (decode, one token at a time)"));
  EXPECT_THAT(r.output, HasSubstr("generated[0]: 8 9 10 11\n"));
  EXPECT_THAT(r.output, HasSubstr("generated[1]: 48 49 0 1\n"));
  EXPECT_THAT(r.output, HasSubstr("decode: 3 step(s), median"));
  EXPECT_THAT(r.output, HasSubstr("tokens/s per row"));
  EXPECT_THAT(r.output, HasSubstr("stopped: row 0: token budget (4) after 4 token(s); row 1: token budget (4) "
                                  "after 4 token(s)"));
}

TEST_F(ToolsFunctionTest, KilnRunGenerateStopsAtSequenceLength) {
  std::string plan = Write(MakeToyLmPlan(1, 4, 10));
  // L == S: one forward, then the position (4) is already past the cache:
  // exit code 5, what was generated still printed.
  Result r = Run(plan + " --generate 3 --input tokens=" + Prompt({1, 4}, {1, 2, 3, 4}));
  ASSERT_EQ(r.code, 5) << r.output;
  EXPECT_THAT(r.output, HasSubstr("prefill: 1 x 4 tokens (forward)"));
  EXPECT_THAT(r.output, HasSubstr("generated[0]: 5\n"));
  EXPECT_THAT(r.output, HasSubstr("stopped: the KV cache is full (4 positions: 4 prompt + 0 decoded; compile "
                                  "with a larger --max-seq) after 1 token(s)"));
  // L == 2: decode at positions 2 and 3, then stop.
  r = Run(plan + " --generate 9 --input tokens=" + Prompt({1, 2}, {8, 9}));
  ASSERT_EQ(r.code, 5) << r.output;
  EXPECT_THAT(r.output, HasSubstr("generated[0]: 0 1 2\n"));
  EXPECT_THAT(r.output, HasSubstr("(4 positions: 2 prompt + 2 decoded; compile with a larger --max-seq) after 3 "
                                  "token(s)"));
  // A budget the cache holds exactly is the budget: exit 0.
  r = Run(plan + " --generate 3 --input tokens=" + Prompt({1, 2}, {8, 9}));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("stopped: token budget (3) after 3 token(s)"));
}

TEST_F(ToolsFunctionTest, KilnRunDecodeEach) {
  std::string plan = Write(MakeToyLmPlan(2, 4, 10));
  std::string out = dir_ + "/steps.npy";
  Result r = Run(plan + " --decode-each " + out + " --input tokens=" + Prompt({2, 3}, {1, 2, 3, 7, 8, 9}));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("logits: float32 [2, 3, 10]"));
  auto logits = ReadNpy(out);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->shape, (std::vector<int64_t>{2, 3, 10}));
  const int next[2][3] = {{2, 3, 4}, {8, 9, 0}};
  for (int b = 0; b < 2; ++b)
    for (int p = 0; p < 3; ++p)
      for (int v = 0; v < 10; ++v)
        EXPECT_EQ(logits->data<float>()[(b * 3 + p) * 10 + v], v == next[b][p] ? 1.0f : 0.0f) << b << p << v;
}

TEST_F(ToolsFunctionTest, KilnRunGenerateErrors) {
  std::string plan = Write(MakeToyLmPlan(1, 4, 10));
  Result r = Run(plan + " --generate 2 --input tokens=" + Prompt({1, 5}, {1, 2, 3, 4, 5}));
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.output, HasSubstr("the prompt has 5 tokens per row; the plan takes 1 to 4"));
  r = Run(plan + " --generate 2 --input tokens=" + Prompt({2, 2}, {1, 2, 3, 4}));
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.output, HasSubstr("is int32 [2, 2], expected int32 [1, L] with 1 <= L <= 4"));
  r = Run(plan + " --generate 2 --input tokens=" + Prompt({1, 2}, {1, 12}));
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.output, HasSubstr("prompt token 12 at [0, 1] is outside the vocabulary [0, 10)"));
  r = Run(plan + " --generate 2 --input x=" + Prompt({1, 2}, {1, 2}));
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.output, HasSubstr("--generate needs exactly one input: --input tokens=PROMPT.npy"));
  // A plan without the convention.
  std::string add = Write(MakeAddPlan(dir_), "add.kplan");
  r = Run(add + " --generate 2 --input tokens=" + Prompt({1, 2}, {1, 2}));
  EXPECT_EQ(r.code, 4);
  EXPECT_THAT(r.output, HasSubstr("does not follow the generation calling convention (function 'forward' "
                                  "input 'tokens' int32 [B, S]): the function has no input 'tokens'"));
  TPlan wrong = MakeToyLmPlan(1, 4, 10);
  wrong.functions[0].inputs[1].dtype = plan::DType::i64;
  wrong.buffers[4].size_bytes = 8;
  r = Run(Write(wrong, "wrong.kplan") + " --generate 2 --input tokens=" + Prompt({1, 2}, {1, 2}));
  EXPECT_EQ(r.code, 4);
  EXPECT_THAT(r.output, HasSubstr("(function 'decode' input 'position' int32 [B]): it is int64 [1]"));
  TPlan no_decode = MakeToyLmPlan(1, 4, 10);
  no_decode.functions.clear();
  r = Run(Write(no_decode, "nodecode.kplan") + " --generate 2 --input tokens=" + Prompt({1, 2}, {1, 2}));
  EXPECT_EQ(r.code, 4);
  EXPECT_THAT(r.output, HasSubstr("plan has no function 'decode'; functions: forward"));
}

// A position outside the KV cache: an error naming the row and the value,
// and an error exit, before any kernel runs.
TEST_F(ToolsFunctionTest, KilnRunRefusesBadPosition) {
  std::string plan = Write(MakeToyLmPlan(2, 4, 10));
  std::string tokens = Prompt({2, 1}, {1, 2});
  HostTensor pos = MakeTensor(DType::kI32, {2});
  pos.data<int32_t>()[0] = 1;
  pos.data<int32_t>()[1] = -16;
  ASSERT_TRUE(WriteNpy(dir_ + "/pos.npy", pos).ok());
  Result r = Run(plan + " --function decode --input tokens=" + tokens + " --input position=" + dir_ + "/pos.npy");
  EXPECT_EQ(r.code, 3) << r.output;
  EXPECT_THAT(r.output, HasSubstr("kiln-run: error: function 'decode': input 'position' row 1: value -16 is outside "
                                  "[0, 3] (the KV cache holds 4 positions)"));
  EXPECT_THAT(r.output, Not(HasSubstr("ran ")));
  pos.data<int32_t>()[1] = 3;
  ASSERT_TRUE(WriteNpy(dir_ + "/pos.npy", pos).ok());
  r = Run(plan + " --function decode --input tokens=" + tokens + " --input position=" + dir_ + "/pos.npy");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST_F(ToolsFunctionTest, KilnInspectShowsValueRangesAndGrids) {
  auto [text, json] = Inspect(Write(MakeToyLmPlan(2, 4, 10)));
  EXPECT_THAT(text, HasSubstr("position                 int32      [2]  values [0, 3] (the KV cache holds 4 "
                              "positions)"));
  EXPECT_THAT(text, HasSubstr("bindings [read, write]; grids: 8 programs scalars 10: bytes [32, 320]; "
                              "2 programs scalars 10: bytes [8, 80]"));
  EXPECT_THAT(json, HasSubstr("\"value_range\": {\n"));
  EXPECT_THAT(json, HasSubstr("\"range_note\": \"it indexes a table of 10 rows\""));
  EXPECT_THAT(json, HasSubstr("\"max_programs\": 8"));
  EXPECT_THAT(json, ContainsRegex("\"xxh64\": \"[0-9a-f]{16}\""));
}

TEST_F(ToolsFunctionTest, KilnInspectShowsFunctionsAndState) {
  auto [text, json] = Inspect(Write(MakeStatePlan()));
  EXPECT_THAT(text, HasSubstr("state 256 B"));
  EXPECT_THAT(text, HasSubstr("state region [0, 256): 1 state buffer(s): #0 [0, +16 B)"));
  EXPECT_THAT(text, HasSubstr("\nfunctions\n"));
  EXPECT_THAT(text, HasSubstr("decode:"));
  EXPECT_THAT(text, HasSubstr("dec:2"));
  EXPECT_THAT(json, HasSubstr("\"state_bytes\": 256"));
  EXPECT_THAT(json, HasSubstr("\"functions\": [\n    {\n      \"name\": \"decode\""));
  EXPECT_THAT(json, HasSubstr("\"location\": \"dec:1\""));
  EXPECT_THAT(json, HasSubstr("\"kind\": \"state\""));
  // Kernel launch counts cover every function (copy: 1 in forward + 1 in decode).
  EXPECT_THAT(json, ContainsRegex("\"name\": \"copy_f32\",[^}]*\"launches\": 2,"));
}


// kiln-run --prompt on the toy model with a tokenizer the plan carries: one
// token per letter a..j (ids 0..9), so the model's next token after a letter
// is the next letter.
TPlan ToyLmWithTokenizer(int64_t S, std::vector<int32_t> eos) {
  TPlan p = MakeToyLmPlan(1, S, 10);
  p.has_tokenizer = true;
  p.tokenizer_json =
      R"({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
          "decoder": {"type": "Fuse"},
          "model": {"type": "BPE", "dropout": null, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null,
                    "vocab": {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, "f": 5, "g": 6, "h": 7, "i": 8,
                              "j": 9},
                    "merges": []}})";
  p.has_generation = true;
  p.generation.eos_token_ids = std::move(eos);
  return p;
}

TEST_F(ToolsFunctionTest, KilnRunPromptStreamsText) {
  std::string plan = Write(ToyLmWithTokenizer(8, {5}));
  // "abc" -> 3 4 5: "de", then the end-of-sequence token 5 ("f", not shown).
  Result r = Run(plan + " --prompt abc");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("de\n"));
  EXPECT_THAT(r.output, Not(HasSubstr("def")));
  EXPECT_THAT(r.output, HasSubstr("prompt: 3 tokens"));
  EXPECT_THAT(r.output, HasSubstr("stopped: end of sequence (token 5) after 3 token(s)"));
  EXPECT_THAT(r.output, ContainsRegex("decode: 2 step\\(s\\), median [0-9.]+ ms/token, [0-9.]+ tokens/s"));
  // Stdout holds the text alone.
  Result out = Shell("(" + std::string(KILN_RUN_EXE) + " " + plan + " --prompt abc 2>/dev/null)");
  EXPECT_EQ(out.output, "de\n");
  // --ignore-eos without a budget: until the cache (8 positions) is full, exit 5.
  r = Run(plan + " --prompt abc --ignore-eos");
  EXPECT_EQ(r.code, 5) << r.output;
  EXPECT_THAT(r.output, HasSubstr("defghi\n"));
  EXPECT_THAT(r.output, HasSubstr("stopped: the KV cache is full (8 positions: 3 prompt + 5 decoded"));
  r = Run(plan + " --prompt abc --ignore-eos --max-new-tokens 2");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("stopped: token budget (2) after 2 token(s)"));
  // Sampling: a seed repeats the text.
  std::string sample = "(" + std::string(KILN_RUN_EXE) + " " + plan +
                       " --prompt a --ignore-eos --max-new-tokens 6 --temperature 2 --seed 3 2>/dev/null)";
  Result s1 = Shell(sample), s2 = Shell(sample);
  EXPECT_EQ(s1.code, 0) << s1.output;
  EXPECT_EQ(s1.output, s2.output);
  // A prompt longer than the plan takes is bad input.
  r = Run(plan + " --prompt abcdefghij");
  EXPECT_EQ(r.code, 3) << r.output;
  EXPECT_THAT(r.output, HasSubstr("the prompt has 10 tokens per row; the plan takes 1 to 8"));
  // A plan without a tokenizer cannot take text.
  r = Run(Write(MakeToyLmPlan(1, 8, 10), "plain.kplan") + " --prompt abc");
  EXPECT_EQ(r.code, 4) << r.output;
  EXPECT_THAT(r.output, HasSubstr("carries no tokenizer"));
}

TEST_F(ToolsFunctionTest, KilnRunUsageErrors) {
  std::string plan = Write(ToyLmWithTokenizer(8, {5}));
  std::string prompt = Prompt({1, 2}, {1, 2});
  for (const std::string& args : {
           std::string("--prompt abc --repeat 3"),
           "--generate 2 --input tokens=" + prompt + " --repeat 2",
           "--decode-each x.npy --input tokens=" + prompt + " --repeat 2",
           "--generate 2 --input tokens=" + prompt + " --max-new-tokens 3",
           std::string("--prompt abc --generate 2"),
           std::string("--prompt abc --function decode"),
           std::string("--temperature 1 --input tokens=") + prompt,
           std::string("--prompt abc --top-p 0"),
           std::string("--prompt abc --temperature -1"),
           std::string("--prompt abc --max-new-tokens 0"),
           std::string("--no-such-flag"),
           std::string("--prompt"),
       }) {
    Result r = Run(plan + " " + args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr("kiln-run: error: ")) << args;
    EXPECT_THAT(r.output, HasSubstr("Run 'kiln-run --help' for the options.")) << args;
  }
  Result r = Run("");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.output, HasSubstr("no PLAN given"));
  r = Run(plan + " --prompt abc --repeat 3");
  EXPECT_THAT(r.output, HasSubstr("--repeat does not apply to --prompt (it applies to function runs)"));
}

TEST(ToolsConventionsTest, HelpAndVersion) {
  for (const char* exe : {KILN_RUN_EXE, KILN_INSPECT_EXE}) {
    Result help = Shell(std::string(exe) + " --help");
    EXPECT_EQ(help.code, 0) << help.output;
    EXPECT_THAT(help.output, HasSubstr("usage: "));
    EXPECT_THAT(help.output, HasSubstr("Exit codes: 0 success"));
    EXPECT_THAT(help.output, HasSubstr("4 the plan cannot be opened or"));
    Result version = Shell(std::string(exe) + " --version");
    EXPECT_EQ(version.code, 0) << version.output;
    EXPECT_THAT(version.output, ContainsRegex("^kiln-(run|inspect) \\(kiln [0-9]+\\.[0-9]+\\.[0-9]+\\)\n"
                                              "reads plan format version [0-9]+\n$"));
    Result bad = Shell(std::string(exe) + " --bogus");
    EXPECT_EQ(bad.code, 2) << bad.output;
  }
  Result run_help = Shell(std::string(KILN_RUN_EXE) + " --help");
  for (const char* flag : {"--prompt", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed",
                           "--ignore-eos", "--generate", "--repeat", "--device", "5 generation stopped"})
    EXPECT_THAT(run_help.output, HasSubstr(flag));
  Result two = Shell(std::string(KILN_INSPECT_EXE) + " a.kplan b.kplan");
  EXPECT_EQ(two.code, 2);
  Result none = Shell(std::string(KILN_INSPECT_EXE));
  EXPECT_EQ(none.code, 2);
}

TEST_F(ToolsFunctionTest, KilnInspectShowsGeneration) {
  auto [text, json] = Inspect(Write(ToyLmWithTokenizer(8, {5, 7})));
  EXPECT_THAT(text, HasSubstr("tokenizer         10 tokens"));
  EXPECT_THAT(text, HasSubstr("eos_token_ids     [5, 7] (generation_config.json)"));
  EXPECT_THAT(text, HasSubstr("sampling          greedy (do_sample false)"));
  EXPECT_THAT(json, HasSubstr("\"vocab_size\": 10"));
  auto [plain, plain_json] = Inspect(Write(MakeToyLmPlan(1, 4, 10), "plain.kplan"));
  EXPECT_THAT(plain, HasSubstr("no tokenizer, no generation defaults"));
  EXPECT_THAT(plain_json, HasSubstr("\"generation\": null"));
}

}  // namespace
}  // namespace kiln::test
