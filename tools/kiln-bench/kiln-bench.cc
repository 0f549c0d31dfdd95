// kiln-bench: how fast a plan starts, prefills and decodes, and where the time
// goes kernel by kernel. Uses only the public runtime API.
//
//   kiln-bench PLAN [--device cpu|cuda] [--threads N] [--batch B]
//              [--prompt-lengths 8,32,128] [--decode-tokens N] [--decode-at P]
//              [--rounds N] [--warmup N] [--profile] [--weight-check identity|full]
//              [--startup-only] [--json FILE|-]
//
// Start-up: Plan::Open and Session::Create, timed once (the weight check
// chosen). Prefill: forward on a [B, L] prompt for each L, --rounds times
// after --warmup untimed runs, from a reset state; the median wall time of
// Session::Call (inputs in, run, outputs out) and tokens/s = B x L / median.
// Decode (plans with a decode function): after a prefill of the shortest
// prompt, --decode-tokens steps of one token per row, per round; the median
// step over all rounds' steps, and tokens/s = B / that same median. With
// --decode-at P the steps run at positions P, P + 1, ... instead of right
// after the prompt: a step's work depends on its position (the keys it
// attends to), not on the cached values, so this times decode at a long
// context without prefilling it (the rows between hold the reset state). Profile
// (--profile): a separate session with SessionOptions::profile_launches (on
// CUDA it synchronizes after every launch), one prefill at the longest prompt
// and one decode step per round; of the median round (by summed launch
// time), per kernel its launches, summed time and share.
// Token ids are fixed pseudo-random values in the input's value range.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kiln/generate.h"
#include "kiln/runtime.h"
#include "nlohmann/json.hpp"
#include "plan_generated.h"
#include "plan_support.h"

namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// As the other runtime tools (tools/common/tool_cli.h, docs/tools.md).
enum ExitCode { kOk = 0, kFailed = 1, kUsage = 2, kBadRequest = 3, kBadPlan = 4 };

constexpr char kUsageText[] =
    "usage: kiln-bench PLAN [--device cpu|cuda] [--threads N] [--batch B]\n"
    "                  [--prompt-lengths 8,32,128] [--decode-tokens N] [--decode-at P] [--rounds N] [--warmup N]\n"
    "                  [--profile] [--weight-check identity|full] [--startup-only] [--json FILE|-]\n"
    "  --prompt-lengths L,...  prefill prompt lengths (default 8,32,128, capped at the plan's maximum)\n"
    "  --decode-tokens N       decode steps per round after the shortest prompt (default 16)\n"
    "  --decode-at P           run those steps (and the profiled one) at positions P, P + 1, ... (a context of P\n"
    "                          tokens) instead of right after the prompt; the rows between are not prefilled\n"
    "  --rounds N              timed repetitions (default 5), after --warmup N untimed ones (default 1)\n"
    "  --profile               per-kernel time profile (SessionOptions::profile_launches)\n"
    "  --weight-check C        identity (default: sizes and sampled file identities) or full (every byte)\n"
    "  --startup-only          time Plan::Open and Session::Create only\n"
    "  --json FILE             write the results as JSON to FILE ('-': stdout instead of the text report)\n"
    "  exit codes: 0 success, 1 a run failed, 2 usage, 3 the request does not fit the plan,\n"
    "              4 the plan cannot be opened\n";

struct Options {
  std::string plan;
  kiln::Device device = kiln::Device::kCpu;
  kiln::SessionOptions session;
  int64_t batch = 0;  // 0: the plan's
  std::vector<int64_t> prompt_lengths;
  bool lengths_given = false;
  int64_t decode_tokens = 16;
  int64_t decode_at = -1; ///< first decode position (-1: after the prompt)
  int rounds = 5;
  int warmup = 1;
  bool profile = false;
  bool startup_only = false;
  std::string json;
};

int Usage(const std::string& error) {
  std::fprintf(stderr, "kiln-bench: error: %s\n%s", error.c_str(), kUsageText);
  return kUsage;
}

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// A failure past option parsing: what failed and the exit code.
struct Failure {
  int code;
  std::string message;
};

const kiln::plan::TensorSpec* FindSpec(const kiln::Function& f, const char* name, bool output) {
  for (const kiln::plan::TensorSpec* s : output ? f.outputs : f.inputs)
    if (s->name()->str() == name) return s;
  return nullptr;
}

// int32 tensor of `shape` with fixed pseudo-random values in `spec`'s value
// range (at most [0, 1000) when it has none), or all `fill` when >= 0.
kiln::HostTensor Int32Tensor(const kiln::plan::TensorSpec& spec, std::vector<int64_t> shape, int64_t fill = -1) {
  kiln::HostTensor t = kiln::MakeTensor(kiln::DType::kI32, std::move(shape));
  int64_t lo = 0, hi = 999;
  if (const kiln::plan::ValueRange* r = spec.value_range()) lo = r->min(), hi = std::min<int64_t>(r->max(), lo + 999);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t.data<int32_t>()[i] = static_cast<int32_t>(fill >= 0 ? fill : lo + static_cast<int64_t>((x >> 33) % (hi - lo + 1)));
  }
  return t;
}

// The plan's generation functions: forward(tokens [B, S]) and, when present,
// decode(tokens [B, 1], position [B]).
struct Shapes {
  const kiln::Function* forward = nullptr;
  const kiln::Function* decode = nullptr;
  const kiln::plan::TensorSpec* tokens = nullptr;
  const kiln::plan::TensorSpec* decode_tokens = nullptr;
  const kiln::plan::TensorSpec* position = nullptr;
  int64_t max_batch = 0, max_seq = 0;
  bool batch_symbolic = false, seq_symbolic = false;
};

absl::StatusOr<Shapes> ReadShapes(const kiln::Plan& plan) {
  Shapes s;
  s.forward = plan.FindFunction(kiln::kForwardFunction).value();
  s.tokens = FindSpec(*s.forward, "tokens", false);
  if (!s.tokens || s.forward->inputs.size() != 1 || static_cast<kiln::DType>(s.tokens->dtype()) != kiln::DType::kI32 ||
      !s.tokens->shape() || s.tokens->shape()->size() != 2)
    return absl::FailedPreconditionError(
        "forward must take one input, 'tokens' int32 [batch, seq] (the generation calling convention, "
        "kiln/runtime.h)");
  std::vector<int64_t> shape = kiln::plan::ToVector(s.tokens->shape());
  s.max_batch = shape[0];
  s.max_seq = shape[1];
  std::vector<int32_t> symbols;
  if (s.tokens->dim_symbols()) symbols.assign(s.tokens->dim_symbols()->begin(), s.tokens->dim_symbols()->end());
  s.batch_symbolic = symbols.size() == 2 && symbols[0] >= 0;
  s.seq_symbolic = symbols.size() == 2 && symbols[1] >= 0;
  auto decode = plan.FindFunction("decode");
  if (decode.ok()) {
    s.decode = *decode;
    s.decode_tokens = FindSpec(*s.decode, "tokens", false);
    s.position = FindSpec(*s.decode, "position", false);
    if (!s.decode_tokens || !s.position || s.decode->inputs.size() != 2)
      return absl::FailedPreconditionError("decode must take 'tokens' int32 [batch, 1] and 'position' int32 [batch]");
  }
  return s;
}

// Per kernel of `f`: launches per call and, per profiled call, its summed
// launch time.
struct KernelProfile {
  std::map<std::string, int> launches;
  std::vector<std::map<std::string, double>> calls;  // kernel -> ms, per call
  std::vector<double> totals;                        // summed launch time per call
};

void AddProfile(const kiln::Plan& plan, const kiln::Function& f, const kiln::RunStats& st, KernelProfile* p) {
  const auto& kernels = *plan.fb().kernels();
  std::map<std::string, double> sum;
  double total = 0;
  bool first = p->totals.empty();
  for (size_t i = 0; i < f.launches.size() && i < st.launch_ms.size(); ++i) {
    std::string name = kernels[f.launches[i]->kernel()]->name()->str();
    sum[name] += st.launch_ms[i];
    total += st.launch_ms[i];
    if (first) ++p->launches[name];
  }
  p->calls.push_back(std::move(sum));
  p->totals.push_back(total);
}

// The breakdown of the median call (by summed launch time; the lower of the
// two middle ones for an even count), so that the kernels' times add up to
// the total and their shares to 100 %.
Json ProfileJson(const KernelProfile& p) {
  std::vector<size_t> order(p.totals.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p.totals[a] < p.totals[b]; });
  size_t median = order[(order.size() - 1) / 2];
  double total = p.totals[median];
  std::vector<std::pair<double, std::string>> kernels;
  for (const auto& [name, ms] : p.calls[median]) kernels.emplace_back(ms, name);
  std::sort(kernels.rbegin(), kernels.rend());
  Json list = Json::array();
  for (const auto& [ms, name] : kernels)
    list.push_back({{"kernel", name}, {"launches", p.launches.at(name)}, {"ms", ms},
                    {"percent", total > 0 ? 100 * ms / total : 0.0}});
  return {{"launches", std::accumulate(p.launches.begin(), p.launches.end(), 0,
                                       [](int n, const auto& kv) { return n + kv.second; })},
          {"launch_ms", total},
          {"kernels", list}};
}

Failure Fail(const absl::Status& s, int code = kFailed) { return {code, std::string(s.message())}; }

// Fills the cache of `s` with `tokens` ([B, L]) from position 0: one forward
// call when forward takes L tokens, else the generation API's chunked
// prefill (`chunker`, a Generator on `s`; null for plans without extend).
absl::Status Prefill(kiln::Session& s, kiln::Generator* chunker, int64_t forward_seq, const kiln::HostTensor& tokens) {
  if (!chunker || tokens.shape[1] <= forward_seq) return s.Call(kiln::kForwardFunction, {{"tokens", tokens}}).status();
  return chunker->Prefill(tokens).status();
}

// Everything but option parsing; fills `out`.
std::optional<Failure> Bench(Options& o, Json& out) {
  out["plan"] = o.plan;
  out["device"] = kiln::DeviceName(o.device);
  out["threads"] = o.session.num_threads;
  out["rounds"] = o.rounds;
  out["warmup"] = o.warmup;
  auto t0 = Clock::now();
  auto opened = kiln::Plan::Open(o.plan);
  if (!opened.ok()) return Fail(opened.status(), kBadPlan);
  std::shared_ptr<const kiln::Plan> plan = *opened;
  auto t1 = Clock::now();
  auto session = kiln::Session::Create(plan, o.device, o.session);
  if (!session.ok()) return Fail(session.status());
  auto t2 = Clock::now();
  out["startup"] = {{"weight_check", o.session.weight_check == kiln::WeightCheck::kFull ? "full" : "identity"},
                    {"plan_open_ms", Ms(t0, t1)},
                    {"session_create_ms", Ms(t1, t2)}};
  if (o.startup_only) return std::nullopt;

  auto shapes = ReadShapes(*plan);
  if (!shapes.ok()) return Fail(shapes.status(), kBadPlan);
  const Shapes& sh = *shapes;
  int64_t B = o.batch ? o.batch : sh.max_batch;
  if (B > sh.max_batch || (B != sh.max_batch && !sh.batch_symbolic))
    return Failure{kBadRequest, absl::StrCat("--batch ", B, ": the plan takes ",
                                          sh.batch_symbolic ? "at most " : "exactly ", sh.max_batch,
                                          " rows (compile with --max-batch)")};
  if (!o.lengths_given) {  // the defaults, capped at the plan's maximum
    std::vector<int64_t> capped;
    for (int64_t l : o.prompt_lengths)
      if (l <= sh.max_seq && sh.seq_symbolic) capped.push_back(l);
    if (capped.empty() || (sh.seq_symbolic && capped.back() < sh.max_seq && capped.size() < 3))
      capped.push_back(sh.max_seq);
    o.prompt_lengths = capped;
  }
  // A plan that prefills in chunks (extend) takes prompts up to its cache's
  // capacity, through the generation API's Prefill.
  std::unique_ptr<kiln::Generator> chunker;
  int64_t max_prompt = sh.max_seq, capacity = sh.max_seq;
  if (sh.decode && sh.position->value_range()) capacity = sh.position->value_range()->max() + 1;
  if (plan->FindFunction("extend").ok()) {
    auto g = kiln::Generator::Create(**session);
    if (!g.ok()) return Fail(g.status(), kBadPlan);
    chunker = std::move(*g);
    max_prompt = chunker->max_prompt();
  }
  for (int64_t l : o.prompt_lengths)
    if (l > max_prompt || (l != sh.max_seq && !sh.seq_symbolic))
      return Failure{kBadRequest, absl::StrCat("prompt length ", l, ": the plan takes ",
                                            sh.seq_symbolic ? "at most " : "exactly ", max_prompt,
                                            " tokens per row (compile with --max-seq)")};
  out["batch"] = B;
  kiln::Session& s = **session;

  // Prefill.
  Json prefill = Json::array();
  for (int64_t L : o.prompt_lengths) {
    kiln::HostTensor tokens = Int32Tensor(*sh.tokens, {B, L});
    std::vector<double> ms;
    for (int r = 0; r < o.warmup + o.rounds; ++r) {
      if (auto st = s.ResetState(); !st.ok()) return Fail(st);
      auto a = Clock::now();
      absl::Status res = Prefill(s, chunker.get(), sh.max_seq, tokens);
      auto b = Clock::now();
      if (!res.ok()) return Fail(res);
      if (r >= o.warmup) ms.push_back(Ms(a, b));
    }
    double m = Median(ms);
    prefill.push_back({{"prompt_length", L}, {"tokens", B * L}, {"median_ms", m},
                       {"min_ms", *std::min_element(ms.begin(), ms.end())},
                       {"max_ms", *std::max_element(ms.begin(), ms.end())},
                       {"tokens_per_s", m > 0 ? B * L * 1000.0 / m : 0.0}});
  }
  out["prefill"] = prefill;

  // Decode after the shortest prompt.
  int64_t L0 = *std::min_element(o.prompt_lengths.begin(), o.prompt_lengths.end());
  if (!sh.decode || o.decode_tokens == 0) {
    out["decode"] = nullptr;
  } else {
    int64_t P0 = o.decode_at >= 0 ? std::max(o.decode_at, L0) : L0;
    if (P0 + o.decode_tokens > capacity)
      return Failure{kBadRequest, absl::StrCat("decoding ", o.decode_tokens, " tokens from position ", P0,
                                            " needs ", P0 + o.decode_tokens, " positions, but the KV cache holds ",
                                            capacity, " (compile with a larger --max-seq, or pass fewer "
                                            "--decode-tokens)")};
    kiln::HostTensor prompt = Int32Tensor(*sh.tokens, {B, L0});
    kiln::HostTensor step = Int32Tensor(*sh.decode_tokens, {B, 1});
    std::vector<double> ms;
    for (int r = 0; r < o.warmup + o.rounds; ++r) {
      if (auto st = s.ResetState(); !st.ok()) return Fail(st);
      if (auto pre = Prefill(s, chunker.get(), sh.max_seq, prompt); !pre.ok()) return Fail(pre);
      for (int64_t i = 0; i < o.decode_tokens; ++i) {
        kiln::HostTensor pos = Int32Tensor(*sh.position, {B}, P0 + i);
        auto a = Clock::now();
        auto res = s.Call("decode", {{"tokens", step}, {"position", pos}});
        auto b = Clock::now();
        if (!res.ok()) return Fail(res.status());
        if (r >= o.warmup) ms.push_back(Ms(a, b));
      }
    }
    double m = Median(ms);
    out["decode"] = {{"prompt_length", L0}, {"position", P0}, {"steps_per_round", o.decode_tokens}, {"batch", B},
                     {"median_ms_per_step", m}, {"tokens_per_s", m > 0 ? B * 1000.0 / m : 0.0}};
  }

  // Profile, in a session of its own (profiling perturbs the timings above).
  if (o.profile) {
    session->reset();  // one copy of the weights on the device at a time
    kiln::SessionOptions po = o.session;
    po.profile_launches = true;
    po.weight_check = kiln::WeightCheck::kIdentity;
    auto ps = kiln::Session::Create(plan, o.device, po);
    if (!ps.ok()) return Fail(ps.status());
    // Prefill's profile is of one forward call: at most its chunk.
    int64_t L = std::min(*std::max_element(o.prompt_lengths.begin(), o.prompt_lengths.end()), sh.max_seq);
    kiln::HostTensor tokens = Int32Tensor(*sh.tokens, {B, L});
    std::unique_ptr<kiln::Generator> pchunker;
    if (chunker) {
      auto g = kiln::Generator::Create(**ps);
      if (!g.ok()) return Fail(g.status(), kBadPlan);
      pchunker = std::move(*g);
    }
    kiln::HostTensor prompt = Int32Tensor(*sh.tokens, {B, L0});
    kiln::HostTensor step = Int32Tensor(sh.decode ? *sh.decode_tokens : *sh.tokens, {B, 1});
    KernelProfile pf, dec;
    for (int r = 0; r < o.warmup + o.rounds; ++r) {
      if (auto st = (*ps)->ResetState(); !st.ok()) return Fail(st);
      if (auto res = (*ps)->Call(kiln::kForwardFunction, {{"tokens", tokens}}); !res.ok()) return Fail(res.status());
      if (r >= o.warmup) AddProfile(*plan, *sh.forward, (*ps)->stats(), &pf);
      if (!sh.decode || o.decode_tokens == 0) continue;
      if (auto st = (*ps)->ResetState(); !st.ok()) return Fail(st);
      if (auto pre = Prefill(**ps, pchunker.get(), sh.max_seq, prompt); !pre.ok()) return Fail(pre);
      kiln::HostTensor pos = Int32Tensor(*sh.position, {B}, o.decode_at >= 0 ? std::max(o.decode_at, L0) : L0);
      if (auto res = (*ps)->Call("decode", {{"tokens", step}, {"position", pos}}); !res.ok()) return Fail(res.status());
      if (r >= o.warmup) AddProfile(*plan, *sh.decode, (*ps)->stats(), &dec);
    }
    Json prof = {{"prefill", ProfileJson(pf)}};
    prof["prefill"]["prompt_length"] = L;
    prof["decode"] = nullptr;
    if (sh.decode && o.decode_tokens > 0) {
      prof["decode"] = ProfileJson(dec);
      prof["decode"]["prompt_length"] = L0;
    }
    out["profile"] = prof;
  }
  return std::nullopt;
}

void PrintProfile(const char* what, const Json& p) {
  std::printf("\nprofile: %s (prompt %lld), %d launches, %.3f ms (the median call)\n", what,
              static_cast<long long>(p["prompt_length"].get<int64_t>()), p["launches"].get<int>(),
              p["launch_ms"].get<double>());
  std::printf("  %-60s %8s %10s %7s\n", "kernel", "launches", "ms", "share");
  for (const Json& k : p["kernels"]) {
    std::string name = k["kernel"].get<std::string>();
    if (name.size() > 60) name = name.substr(0, 57) + "...";
    std::printf("  %-60s %8d %10.4f %6.1f%%\n", name.c_str(), k["launches"].get<int>(), k["ms"].get<double>(),
                k["percent"].get<double>());
  }
}

void PrintText(const Json& r) {
  const Json& st = r["startup"];
  std::printf("%s on %s: plan open %.1f ms, session %.1f ms (weight check: %s)\n",
              r["plan"].get<std::string>().c_str(), r["device"].get<std::string>().c_str(),
              st["plan_open_ms"].get<double>(), st["session_create_ms"].get<double>(),
              st["weight_check"].get<std::string>().c_str());
  if (!r.contains("prefill")) return;
  std::printf("prefill, batch %lld (median of %d rounds):\n", static_cast<long long>(r["batch"].get<int64_t>()),
              r["rounds"].get<int>());
  for (const Json& p : r["prefill"])
    std::printf("  %6lld tokens/row: %10.3f ms  %12.1f tokens/s\n",
                static_cast<long long>(p["prompt_length"].get<int64_t>()), p["median_ms"].get<double>(),
                p["tokens_per_s"].get<double>());
  if (!r["decode"].is_null()) {
    const Json& d = r["decode"];
    std::printf("decode after %lld tokens: median %.3f ms/step, %.1f tokens/s (batch %lld)\n",
                static_cast<long long>(d["prompt_length"].get<int64_t>()), d["median_ms_per_step"].get<double>(),
                d["tokens_per_s"].get<double>(), static_cast<long long>(d["batch"].get<int64_t>()));
    if (d["position"].get<int64_t>() != d["prompt_length"].get<int64_t>())
      std::printf("  (the steps at positions %lld on: --decode-at)\n",
                  static_cast<long long>(d["position"].get<int64_t>()));
  }
  if (r.contains("profile")) {
    PrintProfile("prefill", r["profile"]["prefill"]);
    if (!r["profile"]["decode"].is_null()) PrintProfile("decode step", r["profile"]["decode"]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.prompt_lengths = {8, 32, 128};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    auto count = [&](int64_t* v, int64_t min) {
      const char* s = value();
      return s && absl::SimpleAtoi(s, v) && *v >= min;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsageText, stdout);
      return kOk;
    } else if (a == "--device") {
      const char* v = value();
      if (!v || (std::string(v) != "cpu" && std::string(v) != "cuda")) return Usage("--device expects cpu or cuda");
      o.device = std::string(v) == "cuda" ? kiln::Device::kCuda : kiln::Device::kCpu;
    } else if (a == "--threads") {
      int64_t n;
      if (!count(&n, 0)) return Usage("--threads expects a count >= 0");
      o.session.num_threads = static_cast<int>(n);
    } else if (a == "--batch") {
      if (!count(&o.batch, 1)) return Usage("--batch expects a count >= 1");
    } else if (a == "--prompt-lengths") {
      const char* v = value();
      o.prompt_lengths.clear();
      o.lengths_given = true;
      for (absl::string_view part : absl::StrSplit(v ? v : "", ',')) {
        int64_t l;
        if (!absl::SimpleAtoi(part, &l) || l < 1) return Usage("--prompt-lengths expects lengths >= 1, e.g. 8,32,128");
        o.prompt_lengths.push_back(l);
      }
    } else if (a == "--decode-tokens") {
      if (!count(&o.decode_tokens, 0)) return Usage("--decode-tokens expects a count >= 0");
    } else if (a == "--decode-at") {
      if (!count(&o.decode_at, 0)) return Usage("--decode-at expects a position >= 0");
    } else if (a == "--rounds" || a == "--warmup") {
      int64_t n;
      if (!count(&n, a == "--rounds" ? 1 : 0)) return Usage(a + " expects a count");
      (a == "--rounds" ? o.rounds : o.warmup) = static_cast<int>(n);
    } else if (a == "--profile") {
      o.profile = true;
    } else if (a == "--startup-only") {
      o.startup_only = true;
    } else if (a == "--weight-check") {
      const char* v = value();
      if (!v || (std::string(v) != "identity" && std::string(v) != "full"))
        return Usage("--weight-check expects identity or full");
      o.session.weight_check = std::string(v) == "full" ? kiln::WeightCheck::kFull : kiln::WeightCheck::kIdentity;
    } else if (a == "--json") {
      const char* v = value();
      if (!v) return Usage("--json expects a file (or -)");
      o.json = v;
    } else if (!a.empty() && a[0] == '-') {
      return Usage("unknown flag " + a);
    } else if (o.plan.empty()) {
      o.plan = a;
    } else {
      return Usage("more than one plan given");
    }
  }
  if (o.plan.empty()) return Usage("no plan given");

  Json result;
  if (auto f = Bench(o, result)) {
    std::fprintf(stderr, "kiln-bench: error: %s\n", f->message.c_str());
    return f->code;
  }
  if (o.json == "-") {
    std::cout << result.dump(2) << "\n";
    return kOk;
  }
  PrintText(result);
  if (!o.json.empty()) {
    // Written whole to a temporary, then renamed: never a half-written file.
    std::string tmp = o.json + ".tmp";
    {
      std::ofstream f(tmp);
      f << result.dump(2) << "\n";
      if (!f.good()) {
        std::remove(tmp.c_str());
        std::fprintf(stderr, "kiln-bench: error: cannot write %s\n", o.json.c_str());
        return kFailed;
      }
    }
    if (std::rename(tmp.c_str(), o.json.c_str()) != 0) {
      std::remove(tmp.c_str());
      std::fprintf(stderr, "kiln-bench: error: cannot write %s\n", o.json.c_str());
      return kFailed;
    }
  }
  return kOk;
}
