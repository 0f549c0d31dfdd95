// Kiln generation: prefill, then one decode step per token, with greedy or
// sampled tokens, stop tokens, a token budget and streaming.
//
//   auto plan = kiln::Plan::Open("model.kplan");
//   auto session = kiln::Session::Create(*plan, kiln::Device::kCpu);
//   auto gen = kiln::Generator::Create(**session);          // checks the convention
//   kiln::GenerateOptions opt = kiln::DefaultGenerateOptions(**plan);  // eos ids, sampling
//   opt.max_new_tokens = 64;
//   opt.on_token = [&](const kiln::TokenEvent& e) {          // streaming
//     std::cout << *stream.Step(e.token) << std::flush;
//     return kiln::StreamAction::kContinue;                  // or kStop
//   };
//   auto out = (*gen)->Generate({prompt_ids}, opt);
//   // out->tokens[row], out->stop[row] (why each row ended), out->stats
//
// The calling convention (kiln/runtime.h): forward(tokens int32 [B, S]) ->
// logits float32 [B, V] or [B, S, V]; decode(tokens int32 [B, 1], position
// int32 [B]) -> logits float32 [B, V] or [B, 1, V]. Rank-3 forward logits
// are read at the prompt's last position. The KV cache holds `capacity()`
// positions (decode's position range, else forward's S).
//
// Sampling is reproducible: the same seed, options and logits give the same
// tokens on every machine (Rng below; docs/generation.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/runtime.h"

namespace kiln {

// Pseudo-random numbers for sampling: xoshiro256** (Blackman and Vigna,
// 2018), its four words of state filled by SplitMix64 from the seed.
// Uniform() is (Next() >> 11) * 2^-53, in [0, 1).
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next();
  double Uniform();

 private:
  uint64_t s_[4];
};

struct SamplingOptions {
  // <= 0: greedy (the largest logit; the lowest id among equal ones).
  float temperature = 0.0f;
  // Keep the k most likely tokens; 0 keeps all.
  int32_t top_k = 0;
  // Keep the smallest set of most likely tokens whose probability reaches
  // top_p (at least one); 1 keeps all.
  float top_p = 1.0f;
  uint64_t seed = 0;
};

// Draws one token from logits, in this order: logits / temperature, top-k,
// softmax (float64), top-p over the tokens sorted by probability (highest
// first, lower id first among equal ones), then the first of those sorted
// tokens whose cumulative probability exceeds u * (the kept mass), u =
// Rng::Uniform(). One draw consumes one Uniform().
class Sampler {
 public:
  // InvalidArgument for options out of range (temperature NaN, top_k < 0,
  // top_p outside (0, 1]).
  static absl::Status Check(const SamplingOptions& options);
  explicit Sampler(const SamplingOptions& options);

  bool greedy() const { return options_.temperature <= 0; }
  // The token for `vocab` logits; an error when a logit is NaN or none is
  // above -infinity.
  absl::StatusOr<int32_t> Sample(const float* logits, int64_t vocab);
  // The tokens Sample may draw and their probabilities (renormalized over
  // the kept tokens), in the order it walks them. Greedy: one token, 1.
  absl::StatusOr<std::vector<std::pair<int32_t, double>>> Distribution(const float* logits,
                                                                       int64_t vocab) const;

 private:
  SamplingOptions options_;
  Rng rng_;
};

// Why a row stopped generating.
enum class StopReason {
  kEndOfSequence,  // it produced one of the stop tokens (kept as its last token)
  kMaxNewTokens,   // it produced GenerateOptions::max_new_tokens tokens
  kCacheFull,      // the KV cache has no position left for another decode step
  kStopped,        // the on_token callback asked to stop
};
// "end of sequence", "token budget", "cache full", "stopped by the callback".
const char* StopReasonName(StopReason reason);

struct TokenEvent {
  int64_t row = 0;    // batch row (prompt index)
  int64_t index = 0;  // 0 for the row's first generated token
  int32_t token = 0;
};
enum class StreamAction { kContinue, kStop };
// Called once per generated token, as soon as it is known (row by row within
// a step). kStop ends the generation for every row after this token.
using TokenCallback = std::function<StreamAction(const TokenEvent&)>;

struct GenerateOptions {
  // Tokens to generate per row at most; 0: until a stop token or the cache is full.
  int64_t max_new_tokens = 0;
  // Stop tokens (the checkpoint's eos_token_id: DefaultGenerateOptions).
  std::vector<int32_t> eos_token_ids;
  SamplingOptions sampling;
  TokenCallback on_token;
};

// The plan's recorded defaults (Plan::Generation): its stop tokens, and its
// sampling when do_sample is true (greedy otherwise).
GenerateOptions DefaultGenerateOptions(const Plan& plan);

struct GenerationStats {
  int64_t rows = 0;           // batch rows generated
  int64_t prompt_tokens = 0;  // per row
  // Prefill: from the first call to the first token (sampling included).
  double prefill_ms = 0;
  // True when the prompt went through decode one position at a time (forward
  // takes only its full sequence length S and the prompt is shorter).
  bool prefill_by_decode = false;
  // Calls the prefill took: 1, or with chunked prefill (a plan with
  // "extend") forward then extend for each further chunk of max_chunk()
  // tokens; the prompt's length with prefill_by_decode.
  int64_t prefill_calls = 0;
  // Each decode step: the call and the sampling of every row, without the
  // callback.
  std::vector<double> step_ms;
  // The median of step_ms, and the rates derived from that same median:
  // 1000 / median per row, rows * 1000 / median over the batch. 0 without steps.
  double median_step_ms = 0;
  double tokens_per_s_per_row = 0;
  double tokens_per_s = 0;
};

struct GenerateResult {
  std::vector<std::vector<int32_t>> tokens;  // per row: the generated tokens
  std::vector<StopReason> stop;              // per row
  GenerationStats stats;
};

// What Generator::Prefill returns: the last call's logits ([R, V], or
// [R, n, V] over the last chunk's n tokens), n, and how many calls ran.
struct PrefillResult {
  HostTensor logits;
  int64_t last_chunk = 0;
  int64_t calls = 0;
};

// Generation on one session. Not thread-safe (as the session).
class Generator {
 public:
  // Checks that the plan follows the calling convention; FailedPrecondition
  // naming what differs otherwise. `session` must outlive the Generator.
  static absl::StatusOr<std::unique_ptr<Generator>> Create(Session& session);

  int64_t batch() const { return batch_; }     // B: prompts per call at most
  int64_t vocab() const { return vocab_; }     // V
  // The longest prompt: the cache's capacity when the plan prefills in
  // chunks ("extend"), else forward's sequence length S.
  int64_t max_prompt() const { return extend_seq_ > 0 ? capacity_ : seq_; }
  // Tokens per row one prefill call takes: forward's S.
  int64_t max_chunk() const { return seq_; }
  int64_t capacity() const { return capacity_; }
  // Whether fewer than B prompts may be given (the plan marks the batch as
  // a dimension the runtime pads).
  bool batch_paddable() const { return batch_paddable_; }

  // Resets the session's state, prefills `prompts` (1 to B rows of the same
  // length L, 1 <= L <= max_prompt(), ids in [0, V)) and decodes until every row
  // stopped. InvalidArgument for bad prompts or options; the session's
  // errors otherwise.
  absl::StatusOr<GenerateResult> Generate(const std::vector<std::vector<int32_t>>& prompts,
                                          const GenerateOptions& options);

  // Fills the cache with `tokens` (int32 [R, L], 1 <= R <= B, 1 <= L <=
  // max_prompt()) from position 0, without resetting the state: forward on
  // the first max_chunk() tokens, then extend on each next chunk at its
  // position. The plan's forward must take L tokens when it has no extend.
  absl::StatusOr<PrefillResult> Prefill(const HostTensor& tokens);

 private:
  Generator() = default;
  absl::StatusOr<HostTensor> Logits(const char* function, std::vector<std::pair<std::string, HostTensor>> in,
                                    size_t output);
  Session* session_ = nullptr;
  int64_t batch_ = 0, seq_ = 0, vocab_ = 0, capacity_ = 0;
  int64_t extend_seq_ = 0;  // extend's tokens per row; 0: no extend
  bool batch_paddable_ = false, seq_paddable_ = false;
  size_t forward_logits_ = 0, decode_logits_ = 0, extend_logits_ = 0;  // output indices
};

}  // namespace kiln
