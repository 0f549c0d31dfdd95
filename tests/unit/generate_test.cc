// The generation API (kiln/generate.h): the sampler against distributions
// derived by hand, the RNG against an independent implementation's values,
// and generation on the toy language model (test_plan_builder.h), whose next
// token after t is (t + 1) % V.
#include "kiln/generate.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "test_plan_builder.h"

namespace kiln::test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// --- Rng ---------------------------------------------------------------------

// The first outputs, from a separate Python implementation of SplitMix64 and
// xoshiro256** written from their published definitions (SplitMix64 from 0
// first gives 0xe220a8397b1dcdaf, which seeds the state's first word).
TEST(RngTest, KnownValues) {
  Rng zero(0);
  EXPECT_EQ(zero.Next(), 0x99ec5f36cb75f2b4ull);
  EXPECT_EQ(zero.Next(), 0xbf6e1f784956452aull);
  EXPECT_EQ(zero.Next(), 0x1a5f849d4933e6e0ull);
  Rng answer(42);
  EXPECT_EQ(answer.Next(), 0x15780b2e0c2ec716ull);
  EXPECT_EQ(answer.Next(), 0x6104d9866d113a7eull);
  EXPECT_EQ(answer.Next(), 0xae17533239e499a1ull);
  Rng u(0);
  EXPECT_EQ(u.Uniform(), static_cast<double>(0x99ec5f36cb75f2b4ull >> 11) * 0x1.0p-53);
  for (int i = 0; i < 1000; ++i) {
    double x = u.Uniform();
    ASSERT_GE(x, 0.0);
    ASSERT_LT(x, 1.0);
  }
}

// --- Sampler -----------------------------------------------------------------

std::vector<float> LogProbs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(x > 0 ? static_cast<float>(std::log(x)) : -INFINITY);
  return l;
}

std::vector<float> RandomLogits(Rng& rng, int n) {
  std::vector<float> l(static_cast<size_t>(n));
  for (float& x : l) x = static_cast<float>(8 * rng.Uniform() - 4);
  return l;
}

int32_t Argmax(const std::vector<float>& l) {
  int32_t best = 0;
  for (size_t i = 1; i < l.size(); ++i)
    if (l[i] > l[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  return best;
}

TEST(SamplerTest, TemperatureZeroIsGreedy) {
  Rng data(7);
  for (uint64_t seed : {0ull, 1ull, 99ull}) {
    SamplingOptions o;
    o.temperature = 0;
    o.top_k = 5;  // ignored when greedy
    o.seed = seed;
    Sampler s(o);
    EXPECT_TRUE(s.greedy());
    for (int i = 0; i < 50; ++i) {
      std::vector<float> l = RandomLogits(data, 37);
      auto t = s.Sample(l.data(), 37);
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ(*t, Argmax(l));
    }
  }
  // Ties: the lowest id.
  std::vector<float> tie = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(*Sampler({}).Sample(tie.data(), 4), 1);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  Rng data(8);
  for (float t : {0.5f, 1.0f, 3.0f}) {
    SamplingOptions o;
    o.temperature = t;
    o.top_k = 1;
    o.seed = 5;
    Sampler s(o);
    EXPECT_FALSE(s.greedy());
    for (int i = 0; i < 100; ++i) {
      std::vector<float> l = RandomLogits(data, 50);
      EXPECT_EQ(*s.Sample(l.data(), 50), Argmax(l));
    }
  }
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingTheMass) {
  // Probabilities 0.4, 0.1, 0.3, 0.2 (ids 0..3): sorted 0, 2, 3, 1 with
  // cumulative 0.4, 0.7, 0.9, 1.0.
  std::vector<float> l = LogProbs({0.4, 0.1, 0.3, 0.2});
  auto dist = [&](float top_p, int32_t top_k = 0) {
    SamplingOptions o;
    o.temperature = 1;
    o.top_p = top_p;
    o.top_k = top_k;
    return *Sampler(o).Distribution(l.data(), 4);
  };
  auto ids = [](const std::vector<std::pair<int32_t, double>>& d) {
    std::vector<int32_t> v;
    for (const auto& [id, p] : d) v.push_back(id);
    return v;
  };
  EXPECT_THAT(ids(dist(0.3f)), ElementsAre(0));
  EXPECT_THAT(ids(dist(0.39f)), ElementsAre(0));  // (exact boundaries are float rounding)
  EXPECT_THAT(ids(dist(0.5f)), ElementsAre(0, 2));
  EXPECT_THAT(ids(dist(0.69f)), ElementsAre(0, 2));
  EXPECT_THAT(ids(dist(0.75f)), ElementsAre(0, 2, 3));
  EXPECT_THAT(ids(dist(1.0f)), ElementsAre(0, 2, 3, 1));
  auto half = dist(0.5f);  // renormalized over the kept mass 0.7
  EXPECT_NEAR(half[0].second, 0.4 / 0.7, 1e-6);
  EXPECT_NEAR(half[1].second, 0.3 / 0.7, 1e-6);
  // top-k first, then top-p over the renormalized k: {0, 2} -> 0.571, 0.429.
  auto k2 = dist(0.5f, 2);
  EXPECT_THAT(ids(k2), ElementsAre(0));
  EXPECT_THAT(ids(dist(0.6f, 2)), ElementsAre(0, 2));
}

TEST(SamplerTest, SameSeedSameTokens) {
  Rng data(9);
  std::vector<std::vector<float>> steps;
  for (int i = 0; i < 200; ++i) steps.push_back(RandomLogits(data, 64));
  auto run = [&](uint64_t seed) {
    SamplingOptions o;
    o.temperature = 1.3f;
    o.top_k = 20;
    o.top_p = 0.9f;
    o.seed = seed;
    Sampler s(o);
    std::vector<int32_t> out;
    for (const auto& l : steps) out.push_back(*s.Sample(l.data(), 64));
    return out;
  };
  EXPECT_EQ(run(123), run(123));
  EXPECT_NE(run(123), run(124));
}

// Frequencies of 40,000 draws with a fixed seed against the probabilities
// (derived by hand from the options), within 5 standard deviations of a
// binomial count.
void ExpectFrequencies(const SamplingOptions& o, const std::vector<float>& logits,
                       const std::vector<double>& expected) {
  const int n = 40000;
  Sampler s(o);
  std::vector<int> count(logits.size());
  for (int i = 0; i < n; ++i) ++count[static_cast<size_t>(*s.Sample(logits.data(), static_cast<int64_t>(logits.size())))];
  for (size_t v = 0; v < logits.size(); ++v) {
    double p = expected[v], sd = std::sqrt(n * p * (1 - p));
    if (p == 0) {
      EXPECT_EQ(count[v], 0) << "token " << v;
    } else {
      EXPECT_NEAR(count[v], n * p, 5 * sd + 1) << "token " << v;
    }
  }
}

TEST(SamplerTest, DrawsFollowTheDistribution) {
  std::vector<double> p = {0.05, 0.4, 0.1, 0.25, 0.2};
  std::vector<float> l = LogProbs(p);
  SamplingOptions o;
  o.temperature = 1;
  o.seed = 2024;
  ExpectFrequencies(o, l, p);
  // Temperature 2: p^(1/2), renormalized.
  o.temperature = 2;
  std::vector<double> sq;
  double sum = 0;
  for (double x : p) sum += std::sqrt(x);
  for (double x : p) sq.push_back(std::sqrt(x) / sum);
  ExpectFrequencies(o, l, sq);
  // Top-k 2 at temperature 1: ids 1 and 3 only, 0.4 : 0.25.
  o.temperature = 1;
  o.top_k = 2;
  ExpectFrequencies(o, l, {0, 0.4 / 0.65, 0, 0.25 / 0.65, 0});
  // Top-p 0.8: ids 1, 3, 4 (0.4 + 0.25 + 0.2 = 0.85 >= 0.8).
  o.top_k = 0;
  o.top_p = 0.8f;
  ExpectFrequencies(o, l, {0, 0.4 / 0.85, 0, 0.25 / 0.85, 0.2 / 0.85});
  // The tests can tell distributions apart: uniform draws fail here.
  EXPECT_GT(std::abs(0.4 / 0.85 - 1.0 / 3) * 40000, 5 * std::sqrt(40000 * 0.25) + 1);
}

TEST(SamplerTest, Errors) {
  SamplingOptions o;
  o.top_p = 0;
  EXPECT_THAT(Sampler::Check(o).message(), HasSubstr("top_p 0 is outside (0, 1]"));
  o.top_p = 1;
  o.top_k = -1;
  EXPECT_THAT(Sampler::Check(o).message(), HasSubstr("top_k -1 is negative"));
  o.top_k = 0;
  o.temperature = NAN;
  EXPECT_THAT(Sampler::Check(o).message(), HasSubstr("temperature is NaN"));
  std::vector<float> nan = {0, NAN, 1};
  EXPECT_THAT(Sampler({}).Sample(nan.data(), 3).status().message(), HasSubstr("logit of token 1 is NaN"));
  std::vector<float> none = {-INFINITY, -INFINITY};
  o.temperature = 1;
  EXPECT_THAT(Sampler(o).Sample(none.data(), 2).status().message(), HasSubstr("all 2 logits are -infinity"));
  // -infinity logits are never drawn.
  std::vector<float> masked = {-INFINITY, 0, -INFINITY, 0};
  Sampler s(o);
  for (int i = 0; i < 200; ++i) {
    int32_t t = *s.Sample(masked.data(), 4);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
}

// --- Generator ---------------------------------------------------------------

class GeneratorTest : public ::testing::Test {
 protected:
  // A session and generator on the toy model.
  void Open(const TPlan& p) {
    auto plan = Plan::OpenFromMemory(Serialize(p));
    ASSERT_TRUE(plan.ok()) << plan.status();
    auto s = Session::Create(*plan, Device::kCpu);
    ASSERT_TRUE(s.ok()) << s.status();
    session_ = std::move(*s);
    auto g = Generator::Create(*session_);
    ASSERT_TRUE(g.ok()) << g.status();
    gen_ = std::move(*g);
  }
  std::unique_ptr<Session> session_;
  std::unique_ptr<Generator> gen_;
};

TEST_F(GeneratorTest, GreedyFollowsTheModel) {
  for (bool last : {false, true}) {
    SCOPED_TRACE(last ? "logits [B, V]" : "logits [B, S, V]");
    Open(MakeToyLmPlan(2, 8, 50, last));
    EXPECT_EQ(gen_->batch(), 2);
    EXPECT_EQ(gen_->capacity(), 8);
    GenerateOptions o;
    o.max_new_tokens = 4;
    // A prompt shorter than S: prefill through decode.
    auto r = gen_->Generate({{5, 6, 7}, {40, 46, 47}}, o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_THAT(r->tokens[0], ElementsAre(8, 9, 10, 11));
    EXPECT_THAT(r->tokens[1], ElementsAre(48, 49, 0, 1));
    EXPECT_THAT(r->stop, ElementsAre(StopReason::kMaxNewTokens, StopReason::kMaxNewTokens));
    EXPECT_TRUE(r->stats.prefill_by_decode);
    EXPECT_EQ(r->stats.step_ms.size(), 3u);
    // A full-length prompt: one forward, then the cache is full.
    r = gen_->Generate({{1, 2, 3, 4, 5, 6, 7, 8}, {9, 10, 11, 12, 13, 14, 15, 16}}, o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->stats.prefill_by_decode);
    EXPECT_THAT(r->tokens[0], ElementsAre(9));
    EXPECT_THAT(r->tokens[1], ElementsAre(17));
    EXPECT_THAT(r->stop, ElementsAre(StopReason::kCacheFull, StopReason::kCacheFull));
  }
}

TEST_F(GeneratorTest, StopsAtEosBudgetCapacityOrCallback) {
  Open(MakeToyLmPlan(2, 8, 50));
  GenerateOptions o;
  o.eos_token_ids = {10, 99};
  // Row 0 reaches 10 (kept as its last token); row 1 goes on until the budget.
  o.max_new_tokens = 6;
  auto r = gen_->Generate({{7}, {20}}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->tokens[0], ElementsAre(8, 9, 10));
  EXPECT_THAT(r->tokens[1], ElementsAre(21, 22, 23, 24, 25, 26));
  EXPECT_THAT(r->stop, ElementsAre(StopReason::kEndOfSequence, StopReason::kMaxNewTokens));
  // No budget: row 1 runs until the cache (8 positions) is full: 8 - 1 + 1
  // tokens from a one-token prompt.
  o.max_new_tokens = 0;
  r = gen_->Generate({{7}, {20}}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->tokens[1], ElementsAre(21, 22, 23, 24, 25, 26, 27, 28));
  EXPECT_THAT(r->stop, ElementsAre(StopReason::kEndOfSequence, StopReason::kCacheFull));
  // A budget that the cache allows exactly is the budget.
  o.max_new_tokens = 8;
  r = gen_->Generate({{7}, {20}}, o);
  EXPECT_EQ(r->stop[1], StopReason::kMaxNewTokens);
  // The callback streams every token in order and may stop.
  std::vector<std::pair<int64_t, int32_t>> seen;
  std::map<int64_t, int64_t> next_index;
  o.on_token = [&](const TokenEvent& e) {
    EXPECT_EQ(e.index, next_index[e.row]++);
    seen.push_back({e.row, e.token});
    return e.token == 23 ? StreamAction::kStop : StreamAction::kContinue;
  };
  r = gen_->Generate({{7}, {20}}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->tokens[0], ElementsAre(8, 9, 10));
  EXPECT_THAT(r->tokens[1], ElementsAre(21, 22, 23));
  EXPECT_THAT(r->stop, ElementsAre(StopReason::kEndOfSequence, StopReason::kStopped));
  std::vector<std::pair<int64_t, int32_t>> want = {{0, 8}, {1, 21}, {0, 9}, {1, 22}, {0, 10}, {1, 23}};
  EXPECT_EQ(seen, want);
  EXPECT_STREQ(StopReasonName(StopReason::kCacheFull), "cache full");
}

TEST_F(GeneratorTest, StatsComeFromOneMedian) {
  Open(MakeToyLmPlan(2, 16, 50));
  GenerateOptions o;
  o.max_new_tokens = 9;
  auto r = gen_->Generate({{1}, {2}}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const GenerationStats& s = r->stats;
  ASSERT_EQ(s.step_ms.size(), 8u);
  std::vector<double> sorted = s.step_ms;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_DOUBLE_EQ(s.median_step_ms, (sorted[3] + sorted[4]) / 2);
  EXPECT_DOUBLE_EQ(s.tokens_per_s_per_row, 1000.0 / s.median_step_ms);
  EXPECT_DOUBLE_EQ(s.tokens_per_s, 2 * 1000.0 / s.median_step_ms);
  EXPECT_GT(s.prefill_ms, 0);
  EXPECT_EQ(s.rows, 2);
  EXPECT_EQ(s.prompt_tokens, 1);
}

TEST_F(GeneratorTest, SamplingIsReproducible) {
  // The toy logits are 1 at the next token, 0 elsewhere: at temperature 1
  // the next token has probability e / (e + V - 1).
  Open(MakeToyLmPlan(1, 64, 4));
  GenerateOptions o;
  o.max_new_tokens = 60;
  o.sampling.temperature = 1;
  o.sampling.seed = 77;
  auto a = gen_->Generate({{0}}, o);
  auto b = gen_->Generate({{0}}, o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  o.sampling.seed = 78;
  auto c = gen_->Generate({{0}}, o);
  EXPECT_NE(a->tokens, c->tokens);
  // The share of "next" tokens is near e / (e + 3) = 0.475 (60 draws: within 5 sd).
  int follows = 0;
  int32_t prev = 0;
  for (int32_t t : a->tokens[0]) {
    follows += t == (prev + 1) % 4;
    prev = t;
  }
  double p = std::exp(1.0) / (std::exp(1.0) + 3);
  EXPECT_NEAR(follows, 60 * p, 5 * std::sqrt(60 * p * (1 - p)));
  // Greedy (the default) follows exactly.
  o.sampling = {};
  auto g = gen_->Generate({{0}}, o);
  EXPECT_EQ(g->tokens[0][5], 6 % 4);
}

TEST_F(GeneratorTest, Errors) {
  Open(MakeToyLmPlan(2, 4, 10));
  GenerateOptions o;
  o.max_new_tokens = 2;
  EXPECT_THAT(gen_->Generate({{1}}, o).status().message(),
              HasSubstr("1 prompts; the plan's batch is fixed at 2 (give 2)"));
  EXPECT_THAT(gen_->Generate({{1}, {2}, {3}}, o).status().message(), HasSubstr("3 prompts; the plan takes 1 to 2"));
  EXPECT_THAT(gen_->Generate({{1, 2}, {3}}, o).status().message(),
              HasSubstr("prompt 1 has 1 tokens, prompt 0 has 2 (all must be as long)"));
  EXPECT_THAT(gen_->Generate({{1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}}, o).status().message(),
              HasSubstr("the prompt has 5 tokens per row; the plan takes 1 to 4"));
  EXPECT_THAT(gen_->Generate({{1}, {10}}, o).status().message(),
              HasSubstr("prompt token 10 at [1, 0] is outside the vocabulary [0, 10)"));
  o.sampling.top_p = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(gen_->Generate({{1}, {2}}, o).status()));
  // A plan without the convention.
  auto plan = Plan::OpenFromMemory(Serialize(MakeStatePlan()));
  ASSERT_TRUE(plan.ok());
  auto s = Session::Create(*plan, Device::kCpu);
  ASSERT_TRUE(s.ok());
  EXPECT_THAT(Generator::Create(**s).status().message(),
              HasSubstr("does not follow the generation calling convention (function 'forward' input 'tokens' "
                        "int32 [B, S]): the function has no input 'tokens'"));
}

// The public description of a function's tensors, and outputs by name.
TEST_F(GeneratorTest, TensorInfoAndOutputsByName) {
  TPlan p = MakeToyLmPlan(2, 4, 10);
  p.functions[0].inputs[0].dim_symbols = {0, -1};
  p.functions[0].inputs[1].dim_symbols = {0};
  p.functions[0].outputs[0].dim_symbols = {0, -1, -1};
  p.inputs[0].dim_symbols = {0, -1};
  p.outputs[0].dim_symbols = {0, -1, -1};
  Open(p);
  const Function& decode = *session_->plan().FindFunction("decode").value();
  ASSERT_EQ(decode.input_info.size(), 2u);
  const TensorInfo& pos = decode.input_info[1];
  EXPECT_EQ(pos.name, "position");
  EXPECT_EQ(pos.dtype, DType::kI32);
  EXPECT_EQ(pos.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(pos.dim_symbols, (std::vector<int32_t>{0}));
  EXPECT_TRUE(pos.has_value_range);
  EXPECT_EQ(pos.value_min, 0);
  EXPECT_EQ(pos.value_max, 3);
  EXPECT_EQ(decode.output_info[0].shape, (std::vector<int64_t>{2, 1, 10}));
  EXPECT_FALSE(decode.output_info[0].has_value_range);
  EXPECT_TRUE(gen_->batch_paddable());
  HostTensor tok = MakeTensor(DType::kI32, {1, 1}), at = MakeTensor(DType::kI32, {1});
  tok.data<int32_t>()[0] = 4;
  at.data<int32_t>()[0] = 0;
  auto out = session_->CallByName("decode", {{"tokens", tok}, {"position", at}});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->count("logits"), 1u);
  const HostTensor& logits = out->at("logits");
  EXPECT_EQ(logits.shape, (std::vector<int64_t>{1, 1, 10}));  // one row given
  EXPECT_EQ(logits.data<float>()[5], 1.0f);
  // One prompt on a plan whose batch may be given smaller.
  GenerateOptions o;
  o.max_new_tokens = 3;
  auto r = gen_->Generate({{6}}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->tokens[0], ElementsAre(7, 8, 9));
}

// The plan's recorded defaults: none for a plan without Plan.generation.
TEST_F(GeneratorTest, DefaultOptions) {
  auto plan = Plan::OpenFromMemory(Serialize(MakeToyLmPlan(1, 4, 10)));
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE((*plan)->Generation().has_value());
  GenerateOptions o = DefaultGenerateOptions(**plan);
  EXPECT_TRUE(o.eos_token_ids.empty());
  EXPECT_LE(o.sampling.temperature, 0);
  EXPECT_FALSE((*plan)->HasTokenizer());
  EXPECT_THAT((*plan)->LoadTokenizer().status().message(),
              HasSubstr("carries no tokenizer: compile a Hugging Face checkpoint directory that has a "
                        "tokenizer.json"));
}

}  // namespace
}  // namespace kiln::test
