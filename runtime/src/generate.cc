// Generation over the plan's calling convention (kiln/generate.h).
#include "kiln/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kiln {

// --- Random numbers ------------------------------------------------------

namespace {
uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed) {
  for (uint64_t& w : s_) w = SplitMix64(seed);
}

uint64_t Rng::Next() {
  uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

// --- Sampling --------------------------------------------------------------

absl::Status Sampler::Check(const SamplingOptions& o) {
  if (std::isnan(o.temperature))
    return absl::InvalidArgumentError("sampling: temperature is NaN");
  if (o.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("sampling: top_k ", o.top_k, " is negative"));
  if (!(o.top_p > 0 && o.top_p <= 1))
    return absl::InvalidArgumentError(absl::StrCat("sampling: top_p ", o.top_p, " is outside (0, 1]"));
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

namespace {
absl::Status CheckLogits(const float* logits, int64_t vocab) {
  bool any = false;
  for (int64_t v = 0; v < vocab; ++v) {
    if (std::isnan(logits[v]))
      return absl::InvalidArgumentError(absl::StrCat("logit of token ", v, " is NaN"));
    any |= logits[v] > -INFINITY;
  }
  if (!any) return absl::InvalidArgumentError(absl::StrCat("all ", vocab, " logits are -infinity"));
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<std::vector<std::pair<int32_t, double>>> Sampler::Distribution(const float* logits,
                                                                              int64_t vocab) const {
  if (auto s = CheckLogits(logits, vocab); !s.ok()) return s;
  if (greedy()) {
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (logits[v] > logits[best]) best = v;
    return std::vector<std::pair<int32_t, double>>{{static_cast<int32_t>(best), 1.0}};
  }
  // Candidates by logit (highest first, lower id first among equal ones).
  std::vector<std::pair<float, int32_t>> c;
  c.reserve(static_cast<size_t>(vocab));
  for (int64_t v = 0; v < vocab; ++v)
    if (logits[v] > -INFINITY) c.push_back({logits[v], static_cast<int32_t>(v)});
  auto before = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t k = options_.top_k > 0 ? std::min(c.size(), static_cast<size_t>(options_.top_k)) : c.size();
  std::partial_sort(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(k), c.end(), before);
  c.resize(k);
  // Softmax of logits / temperature, in float64; a positive infinity takes
  // all the mass (shared among equal ones).
  std::vector<std::pair<int32_t, double>> out(k);
  double top = c[0].first, t = options_.temperature, sum = 0;
  for (size_t i = 0; i < k; ++i) {
    double p = std::isinf(top) ? (c[i].first == top ? 1.0 : 0.0)
                               : std::exp((static_cast<double>(c[i].first) - top) / t);
    out[i] = {c[i].second, p};
    sum += p;
  }
  size_t keep = k;
  if (options_.top_p < 1) {
    double cum = 0;
    for (keep = 0; keep < k;) {
      cum += out[keep++].second / sum;
      if (cum >= options_.top_p) break;
    }
  }
  out.resize(keep);
  double kept = 0;
  for (const auto& [id, p] : out) kept += p;
  for (auto& [id, p] : out) p /= kept;
  return out;
}

absl::StatusOr<int32_t> Sampler::Sample(const float* logits, int64_t vocab) {
  auto dist = Distribution(logits, vocab);
  if (!dist.ok()) return dist.status();
  if (greedy()) return (*dist)[0].first;
  double u = rng_.Uniform(), cum = 0;
  for (const auto& [id, p] : *dist) {
    cum += p;
    if (cum > u) return id;
  }
  return dist->back().first;  // u within rounding of 1
}

// --- Generation --------------------------------------------------------------

const char* StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kEndOfSequence: return "end of sequence";
    case StopReason::kMaxNewTokens: return "token budget";
    case StopReason::kCacheFull: return "cache full";
    case StopReason::kStopped: return "stopped by the callback";
  }
  return "?";
}

GenerateOptions DefaultGenerateOptions(const Plan& plan) {
  GenerateOptions o;
  if (auto g = plan.Generation()) {
    o.eos_token_ids = g->eos_token_ids;
    if (g->do_sample) {
      o.sampling.temperature = g->temperature;
      o.sampling.top_k = g->top_k;
      o.sampling.top_p = g->top_p;
    }
  }
  return o;
}

namespace {

using Clock = std::chrono::steady_clock;
double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Spec {
  const TensorInfo* info = nullptr;
  size_t index = 0;
  std::vector<int64_t> shape;
};

// `function`'s input or output `name`, checked for dtype and one of `ranks`.
absl::StatusOr<Spec> ConventionSpec(const Plan& plan, const char* function, bool output, const char* name,
                                    DType dtype, std::vector<size_t> ranks, const char* shape_text) {
  const char* what = output ? "output" : "input";
  auto bad = [&](const std::string& why) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan does not follow the generation calling convention (function '", function, "' ", what, " '",
        name, "' ", DTypeName(dtype), " ", shape_text, "): ", why));
  };
  auto fn = plan.FindFunction(function);
  if (!fn.ok()) return bad(std::string(fn.status().message()));
  const auto& specs = output ? (*fn)->output_info : (*fn)->input_info;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].name != name) continue;
    Spec s{&specs[i], i, specs[i].shape};
    if (specs[i].dtype != dtype || std::find(ranks.begin(), ranks.end(), s.shape.size()) == ranks.end())
      return bad(absl::StrCat("it is ", DescribeTensor(specs[i].dtype, s.shape)));
    return s;
  }
  return bad(absl::StrCat("the function has no ", what, " '", name, "'"));
}

// Whether dimension `d` of the tensor may be given smaller (dim_symbols).
bool Paddable(const TensorInfo& t, size_t d) { return d < t.dim_symbols.size() && t.dim_symbols[d] >= 0; }

}  // namespace

absl::StatusOr<std::unique_ptr<Generator>> Generator::Create(Session& session) {
  const Plan& plan = session.plan();
  auto ftok = ConventionSpec(plan, "forward", false, "tokens", DType::kI32, {2}, "[B, S]");
  if (!ftok.ok()) return ftok.status();
  auto flog = ConventionSpec(plan, "forward", true, "logits", DType::kF32, {2, 3}, "[B, V] or [B, S, V]");
  if (!flog.ok()) return flog.status();
  auto dtok = ConventionSpec(plan, "decode", false, "tokens", DType::kI32, {2}, "[B, 1]");
  if (!dtok.ok()) return dtok.status();
  auto dpos = ConventionSpec(plan, "decode", false, "position", DType::kI32, {1}, "[B]");
  if (!dpos.ok()) return dpos.status();
  auto dlog = ConventionSpec(plan, "decode", true, "logits", DType::kF32, {2, 3}, "[B, V] or [B, 1, V]");
  if (!dlog.ok()) return dlog.status();
  int64_t B = ftok->shape[0], S = ftok->shape[1], V = flog->shape.back();
  auto mismatch = [&](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan does not follow the generation calling convention: ", what, " (forward tokens ",
        ShapeToString(ftok->shape), ", forward logits ", ShapeToString(flog->shape), ", decode tokens ",
        ShapeToString(dtok->shape), ", decode position ", ShapeToString(dpos->shape), ", decode logits ",
        ShapeToString(dlog->shape), ")"));
  };
  if (flog->shape[0] != B || (flog->shape.size() == 3 && flog->shape[1] != S))
    return mismatch("forward logits must be [B, V] or [B, S, V]");
  if (dtok->shape[0] != B || dtok->shape[1] != 1) return mismatch("decode tokens must be [B, 1]");
  if (dpos->shape[0] != B) return mismatch("decode position must be [B]");
  if (dlog->shape[0] != B || dlog->shape.back() != V || (dlog->shape.size() == 3 && dlog->shape[1] != 1))
    return mismatch("decode logits must be [B, V] or [B, 1, V]");
  if (V < 1 || S < 1 || B < 1) return mismatch("B, S and V must be positive");
  bool has_extend = false;
  for (const Function& f : plan.functions()) {
    has_extend |= f.name == "extend";
    if ((f.name == "forward" && f.inputs.size() != 1) ||
        ((f.name == "decode" || f.name == "extend") && f.inputs.size() != 2))
      return mismatch(absl::StrCat("function '", f.name, "' has other inputs than the convention's"));
  }
  // Chunked prefill: extend takes the next chunk at a position.
  int64_t extend_seq = 0;
  size_t extend_logits = 0;
  if (has_extend) {
    auto etok = ConventionSpec(plan, "extend", false, "tokens", DType::kI32, {2}, "[B, C]");
    if (!etok.ok()) return etok.status();
    auto epos = ConventionSpec(plan, "extend", false, "position", DType::kI32, {1}, "[B]");
    if (!epos.ok()) return epos.status();
    auto elog = ConventionSpec(plan, "extend", true, "logits", DType::kF32, {2, 3}, "[B, V] or [B, C, V]");
    if (!elog.ok()) return elog.status();
    if (etok->shape[0] != B || epos->shape[0] != B || elog->shape[0] != B || elog->shape.back() != V)
      return mismatch("extend must take [B, C] tokens at [B] positions and return [B, V] or [B, C, V] logits");
    if (!Paddable(*etok->info, 1))
      return mismatch("extend's tokens must be allowed fewer positions than C");
    extend_seq = etok->shape[1];
    extend_logits = elog->index;
  }

  std::unique_ptr<Generator> g(new Generator());
  g->session_ = &session;
  g->batch_ = B;
  g->seq_ = S;
  g->vocab_ = V;
  // The cache's positions: what decode's position may be, plus one.
  g->capacity_ = dpos->info->has_value_range ? dpos->info->value_max + 1 : S;
  g->batch_paddable_ = Paddable(*ftok->info, 0) && Paddable(*dtok->info, 0) && Paddable(*dpos->info, 0);
  g->seq_paddable_ = Paddable(*ftok->info, 1);
  g->forward_logits_ = flog->index;
  g->decode_logits_ = dlog->index;
  g->extend_seq_ = extend_seq;
  g->extend_logits_ = extend_logits;
  return g;
}

absl::StatusOr<HostTensor> Generator::Logits(const char* function,
                                             std::vector<std::pair<std::string, HostTensor>> in, size_t output) {
  auto out = session_->Call(function, in);
  if (!out.ok()) return out.status();
  return std::move((*out)[output]);
}

absl::StatusOr<PrefillResult> Generator::Prefill(const HostTensor& tokens) {
  if (tokens.dtype != DType::kI32 || tokens.shape.size() != 2 || tokens.shape[0] < 1 || tokens.shape[0] > batch_ ||
      tokens.shape[1] < 1 || tokens.shape[1] > max_prompt())
    return absl::InvalidArgumentError(absl::StrCat("prefill: tokens are ", DescribeTensor(tokens.dtype, tokens.shape),
                                                   ", expected int32 [R, L] with 1 <= R <= ", batch_,
                                                   " and 1 <= L <= ", max_prompt()));
  int64_t R = tokens.shape[0], L = tokens.shape[1];
  PrefillResult out;
  for (int64_t at = 0; at < L; at += out.last_chunk) {
    bool first = at == 0;
    int64_t n = std::min(L - at, first ? seq_ : extend_seq_);
    HostTensor chunk = MakeTensor(DType::kI32, {R, n});
    for (int64_t r = 0; r < R; ++r)
      std::memcpy(chunk.data<int32_t>() + r * n, tokens.data<int32_t>() + r * L + at, 4 * static_cast<size_t>(n));
    absl::StatusOr<HostTensor> l;
    if (first) {
      l = Logits("forward", {{"tokens", chunk}}, forward_logits_);
    } else {
      HostTensor start = MakeTensor(DType::kI32, {R});
      for (int64_t r = 0; r < R; ++r) start.data<int32_t>()[r] = static_cast<int32_t>(at);
      l = Logits("extend", {{"tokens", chunk}, {"position", start}}, extend_logits_);
    }
    if (!l.ok()) return l.status();
    out.logits = std::move(*l);
    out.last_chunk = n;
    ++out.calls;
  }
  return out;
}

absl::StatusOr<GenerateResult> Generator::Generate(const std::vector<std::vector<int32_t>>& prompts,
                                                   const GenerateOptions& options) {
  int64_t R = static_cast<int64_t>(prompts.size());
  if (R < 1 || R > batch_)
    return absl::InvalidArgumentError(absl::StrCat("generate: ", R, " prompts; the plan takes 1 to ", batch_));
  if (R < batch_ && !batch_paddable_)
    return absl::InvalidArgumentError(absl::StrCat("generate: ", R, " prompts; the plan's batch is fixed at ",
                                                   batch_, " (give ", batch_, ")"));
  int64_t L = static_cast<int64_t>(prompts[0].size());
  for (int64_t r = 0; r < R; ++r)
    if (static_cast<int64_t>(prompts[static_cast<size_t>(r)].size()) != L)
      return absl::InvalidArgumentError(absl::StrCat("generate: prompt ", r, " has ",
                                                     prompts[static_cast<size_t>(r)].size(),
                                                     " tokens, prompt 0 has ", L, " (all must be as long)"));
  if (L < 1 || L > max_prompt())
    return absl::InvalidArgumentError(absl::StrCat(
        "generate: the prompt has ", L, " tokens per row; the plan takes 1 to ", max_prompt(),
        extend_seq_ > 0 ? " (its KV cache's capacity)" : " (forward's sequence length)"));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = 0; i < L; ++i) {
      int32_t t = prompts[static_cast<size_t>(r)][static_cast<size_t>(i)];
      if (t < 0 || t >= vocab_)
        return absl::InvalidArgumentError(absl::StrCat("generate: prompt token ", t, " at [", r, ", ", i,
                                                       "] is outside the vocabulary [0, ", vocab_, ")"));
    }
  if (options.max_new_tokens < 0)
    return absl::InvalidArgumentError(absl::StrCat("generate: max_new_tokens ", options.max_new_tokens, " < 0"));
  if (auto s = Sampler::Check(options.sampling); !s.ok()) return s;
  if (auto s = session_->ResetState(); !s.ok()) return s;

  GenerateResult res;
  res.tokens.assign(static_cast<size_t>(R), {});
  std::vector<bool> active(static_cast<size_t>(R), true);
  res.stop.assign(static_cast<size_t>(R), StopReason::kMaxNewTokens);
  res.stats.rows = R;
  res.stats.prompt_tokens = L;
  Sampler sampler(options.sampling);
  bool stopped = false;
  std::vector<int32_t> last(static_cast<size_t>(R));

  // Samples every row's token from logits ([R, V] rows `row0 + r * stride`)
  // and records it; callbacks run after the timed part.
  auto sample = [&](const HostTensor& logits, int64_t stride, int64_t offset) -> absl::Status {
    for (int64_t r = 0; r < R; ++r) {
      if (!active[static_cast<size_t>(r)]) continue;
      const float* row = logits.data<float>() + (r * stride + offset) * vocab_;
      auto t = sampler.Sample(row, vocab_);
      if (!t.ok())
        return absl::InternalError(absl::StrCat("generate: row ", r, " token ",
                                                res.tokens[static_cast<size_t>(r)].size(), ": ",
                                                t.status().message()));
      last[static_cast<size_t>(r)] = *t;
      res.tokens[static_cast<size_t>(r)].push_back(*t);
    }
    return absl::OkStatus();
  };
  // After a step: stop tokens, the budget, the callback.
  auto settle = [&]() {
    for (int64_t r = 0; r < R; ++r) {
      size_t ur = static_cast<size_t>(r);
      if (!active[ur]) continue;
      const auto& toks = res.tokens[ur];
      int32_t t = toks.back();
      if (!stopped && options.on_token &&
          options.on_token({r, static_cast<int64_t>(toks.size()) - 1, t}) == StreamAction::kStop)
        stopped = true;
      if (std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), t) != options.eos_token_ids.end()) {
        active[ur] = false;
        res.stop[ur] = StopReason::kEndOfSequence;
      } else if (options.max_new_tokens > 0 && static_cast<int64_t>(toks.size()) >= options.max_new_tokens) {
        active[ur] = false;
        res.stop[ur] = StopReason::kMaxNewTokens;
      }
    }
    if (stopped)
      for (int64_t r = 0; r < R; ++r)
        if (active[static_cast<size_t>(r)]) {
          active[static_cast<size_t>(r)] = false;
          res.stop[static_cast<size_t>(r)] = StopReason::kStopped;
        }
  };
  HostTensor tok = MakeTensor(DType::kI32, {R, 1});
  HostTensor pos = MakeTensor(DType::kI32, {R});
  auto decode = [&](int64_t position) -> absl::StatusOr<HostTensor> {
    for (int64_t r = 0; r < R; ++r) pos.data<int32_t>()[r] = static_cast<int32_t>(position);
    return Logits("decode", {{"tokens", tok}, {"position", pos}}, decode_logits_);
  };

  // Prefill: forward when it takes L tokens; with chunked prefill, forward
  // for the first chunk and extend for each next one; else decode position
  // by position.
  auto t0 = Clock::now();
  if ((L <= seq_ && (L == seq_ || seq_paddable_)) || (L > seq_ && extend_seq_ > 0)) {
    HostTensor p = MakeTensor(DType::kI32, {R, L});
    for (int64_t r = 0; r < R; ++r)
      std::memcpy(p.data<int32_t>() + r * L, prompts[static_cast<size_t>(r)].data(), 4 * static_cast<size_t>(L));
    auto pre = Prefill(p);
    if (!pre.ok()) return pre.status();
    res.stats.prefill_calls = pre->calls;
    // [R, V], or [R, n, V] read at the last chunk's last position.
    const HostTensor& logits = pre->logits;
    bool rank3 = logits.shape.size() == 3;
    int64_t rows = rank3 ? logits.shape[1] : 1;
    if (rank3 && rows < pre->last_chunk)
      return absl::InternalError(absl::StrCat("generate: prefill returned logits ", ShapeToString(logits.shape),
                                              " for a chunk of ", pre->last_chunk, " tokens"));
    if (auto s = sample(logits, rows, rank3 ? pre->last_chunk - 1 : 0); !s.ok()) return s;
  } else {
    res.stats.prefill_by_decode = true;
    HostTensor logits;
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t r = 0; r < R; ++r)
        tok.data<int32_t>()[r] = prompts[static_cast<size_t>(r)][static_cast<size_t>(i)];
      auto l = decode(i);
      if (!l.ok()) return l.status();
      logits = std::move(*l);
      ++res.stats.prefill_calls;
    }
    if (auto s = sample(logits, 1, 0); !s.ok()) return s;
  }
  res.stats.prefill_ms = Ms(Clock::now() - t0);
  settle();

  // Decode: token n (n >= 1) comes from the step at position L + n - 1.
  for (int64_t n = 1;; ++n) {
    if (std::none_of(active.begin(), active.end(), [](bool a) { return a; })) break;
    int64_t position = L + n - 1;
    if (position >= capacity_) {
      for (int64_t r = 0; r < R; ++r)
        if (active[static_cast<size_t>(r)]) res.stop[static_cast<size_t>(r)] = StopReason::kCacheFull;
      break;
    }
    auto t1 = Clock::now();
    // Rows that stopped keep feeding their last token; their logits are unused.
    for (int64_t r = 0; r < R; ++r) tok.data<int32_t>()[r] = last[static_cast<size_t>(r)];
    auto logits = decode(position);
    if (!logits.ok()) return logits.status();
    if (auto s = sample(*logits, 1, 0); !s.ok()) return s;
    res.stats.step_ms.push_back(Ms(Clock::now() - t1));
    settle();
  }

  if (!res.stats.step_ms.empty()) {
    std::vector<double> sorted = res.stats.step_ms;
    std::sort(sorted.begin(), sorted.end());
    size_t n = sorted.size();
    double median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    res.stats.median_step_ms = median;
    if (median > 0) {
      res.stats.tokens_per_s_per_row = 1000.0 / median;
      res.stats.tokens_per_s = static_cast<double>(R) * 1000.0 / median;
    }
  }
  return res;
}

}  // namespace kiln
