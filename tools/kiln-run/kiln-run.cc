// kiln-run: runs a compiled plan: one function on .npy inputs, or generation
// from text or token ids through the generation API (kiln/generate.h).
//
//   kiln-run PLAN --prompt TEXT [--max-new-tokens N] [sampling] [--device ...]
//   kiln-run PLAN --generate N --input tokens=PROMPT.npy [sampling] [--device ...]
//   kiln-run PLAN --input NAME=FILE.npy ... [--output NAME=FILE.npy ...]
//            [--function NAME] [--repeat N] [--print] [--device ...]
//   kiln-run PLAN --decode-each OUT.npy --input tokens=PROMPT.npy
//   kiln-run PLAN --prefill OUT.npy --input tokens=PROMPT.npy
//
// Exit codes: tools/common/tool_cli.h (and --help, docs/tools.md).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kiln/generate.h"
#include "kiln/npy.h"
#include "kiln/runtime.h"
#include "kiln/tokenizer.h"
#include "plan_generated.h"
#include "tool_cli.h"

namespace {

using namespace kiln::tools;  // exit codes

constexpr char kUsage[] =
    "usage: kiln-run PLAN --prompt TEXT [--max-new-tokens N] [SAMPLING] [--ignore-eos] [COMMON]\n"
    "       kiln-run PLAN --generate N --input tokens=PROMPT.npy [SAMPLING] [--ignore-eos] [COMMON]\n"
    "       kiln-run PLAN --input NAME=FILE.npy ... [--output NAME=FILE.npy ...] [--function NAME]\n"
    "                [--repeat N] [--print] [COMMON]\n"
    "       kiln-run PLAN --decode-each OUT.npy --input tokens=PROMPT.npy [COMMON]\n"
    "       kiln-run PLAN --prefill OUT.npy --input tokens=PROMPT.npy [COMMON]\n"
    "\n"
    "Generation (the plan's forward and decode functions, kiln/generate.h):\n"
    "  --prompt TEXT         encode TEXT with the plan's tokenizer and stream the generated text to\n"
    "                        stdout (special tokens not shown); timings and why it stopped on stderr\n"
    "  --max-new-tokens N    with --prompt: at most N new tokens (default: until an end-of-sequence\n"
    "                        token or the KV cache is full)\n"
    "  --generate N          N new tokens from an int32 [B, L] prompt of token ids (--input tokens=);\n"
    "                        prints 'generated[b]: ids' per row on stdout\n"
    "  --temperature T       sample at temperature T; 0 is greedy (default: the plan's recorded\n"
    "                        defaults when its checkpoint's generation_config.json samples, else greedy)\n"
    "  --top-k K             sample among the K most likely tokens (0: all)\n"
    "  --top-p P             sample among the fewest most likely tokens whose probability reaches P\n"
    "  --seed S              seed of the sampler (default 0): equal seeds give equal tokens\n"
    "  --ignore-eos          do not stop at the plan's end-of-sequence tokens\n"
    "\n"
    "Function runs:\n"
    "  --input NAME=FILE     a .npy input of the function (each input exactly once)\n"
    "  --output NAME=FILE    write an output to a .npy file\n"
    "  --function NAME       the entry point to run (default forward; see kiln-inspect)\n"
    "  --repeat N            run N times in one session; prints the median and minimum time\n"
    "  --print               print every output value (up to 10000), not the first 8\n"
    "  --decode-each F       run the prompt through decode one position at a time (from a reset\n"
    "                        state) and write the logits of every position, [B, L, V], to F\n"
    "  --prefill F           prefill the prompt as generation does (in chunks of the plan's\n"
    "                        --prefill-chunk: forward, then extend) and write the logits of its\n"
    "                        last position, [B, V], to F\n"
    "\n"
    "Common:\n"
    "  --device cpu|cuda     where to run (default cpu)\n"
    "  --threads N           CPU threads including the caller (default: all cores)\n"
    "  --help, --version\n"
    "\n"
    "Exit codes: 0 success (generation ended at an end-of-sequence token or its token budget),\n"
    "  1 running the plan failed, 2 usage, 3 bad input (a file, prompt or name that does not fit the\n"
    "  plan), 4 the plan cannot be opened or verified or lacks what the mode needs (the generation\n"
    "  convention, a tokenizer), 5 generation stopped because the KV cache was full (what was\n"
    "  generated is printed; compile with a larger --max-seq).\n";

struct Options {
  std::string plan;
  std::vector<std::pair<std::string, std::string>> inputs, outputs;
  kiln::Device device = kiln::Device::kCpu;
  int threads = 0;
  int repeat = 0;  // 0: not given (1 run)
  bool print = false;
  std::string function;  // empty: not given (forward)
  int generate = 0;      // 0: off
  std::string decode_each;
  std::string prefill;
  bool has_prompt = false;
  std::string prompt;
  int64_t max_new_tokens = -1;  // -1: not given
  bool ignore_eos = false;
  // Sampling flags, when given.
  bool has_temperature = false, has_top_k = false, has_top_p = false;
  float temperature = 0, top_p = 1;
  int top_k = 0;
  uint64_t seed = 0;
};

// The generation mode's flag (one is set).
const char* ModeName(const Options& o) {
  return o.has_prompt ? "--prompt" : o.generate > 0 ? "--generate" : !o.prefill.empty() ? "--prefill" : "--decode-each";
}

// How a run ends: the exit code and, for failures, the error.
struct Outcome {
  int code = kExitOk;
  std::string error;
};
Outcome Fail(int code, const absl::Status& s) { return {code, std::string(s.message())}; }
Outcome Fail(int code, std::string message) { return {code, std::move(message)}; }

absl::Status ParsePair(const std::string& flag, const char* arg,
                       std::vector<std::pair<std::string, std::string>>* out) {
  std::string s = arg;
  size_t eq = s.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
    return absl::InvalidArgumentError(absl::StrCat(flag, " expects NAME=FILE.npy, got '", s, "'"));
  for (const auto& [name, file] : *out)
    if (name == s.substr(0, eq))
      return absl::InvalidArgumentError(absl::StrCat(flag, " '", name, "' given twice"));
  out->emplace_back(s.substr(0, eq), s.substr(eq + 1));
  return absl::OkStatus();
}

// Parses the command line; exits for --help and --version.
absl::StatusOr<Options> ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> absl::StatusOr<const char*> {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(a, " needs a value"));
      return argv[++i];
    };
    auto int_value = [&](int64_t min) -> absl::StatusOr<int64_t> {
      auto v = value();
      if (!v.ok()) return v.status();
      int64_t n;
      if (!absl::SimpleAtoi(*v, &n) || n < min || n > INT32_MAX)
        return absl::InvalidArgumentError(absl::StrCat(a, " expects an integer >= ", min, ", got '", *v, "'"));
      return n;
    };
    auto float_value = [&](float min, float max, bool min_open) -> absl::StatusOr<float> {
      auto v = value();
      if (!v.ok()) return v.status();
      float f;
      if (!absl::SimpleAtof(*v, &f) || !(min_open ? f > min : f >= min) || !(f <= max))
        return absl::InvalidArgumentError(absl::StrCat(a, " expects a number in ", min_open ? "(" : "[", min,
                                                       ", ", max, "], got '", *v, "'"));
      return f;
    };
    absl::Status st;
    if (a == "--input" || a == "--output") {
      auto v = value();
      if (!v.ok()) return v.status();
      st = ParsePair(a, *v, a == "--input" ? &o.inputs : &o.outputs);
    } else if (a == "--device") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (std::strcmp(*v, "cpu") == 0) o.device = kiln::Device::kCpu;
      else if (std::strcmp(*v, "cuda") == 0) o.device = kiln::Device::kCuda;
      else return absl::InvalidArgumentError(absl::StrCat("--device expects cpu or cuda, got '", *v, "'"));
    } else if (a == "--threads") {
      auto v = int_value(0);
      if (!v.ok()) return v.status();
      o.threads = static_cast<int>(*v);
    } else if (a == "--repeat") {
      auto v = int_value(1);
      if (!v.ok()) return v.status();
      o.repeat = static_cast<int>(*v);
    } else if (a == "--function") {
      auto v = value();
      if (!v.ok()) return v.status();
      o.function = *v;
    } else if (a == "--generate") {
      auto v = int_value(1);
      if (!v.ok()) return v.status();
      o.generate = static_cast<int>(*v);
    } else if (a == "--max-new-tokens") {
      auto v = int_value(1);
      if (!v.ok()) return v.status();
      o.max_new_tokens = *v;
    } else if (a == "--prompt") {
      auto v = value();
      if (!v.ok()) return v.status();
      o.has_prompt = true;
      o.prompt = *v;
    } else if (a == "--temperature") {
      auto v = float_value(0, 1e6f, false);
      if (!v.ok()) return v.status();
      o.has_temperature = true;
      o.temperature = *v;
    } else if (a == "--top-k") {
      auto v = int_value(0);
      if (!v.ok()) return v.status();
      o.has_top_k = true;
      o.top_k = static_cast<int>(*v);
    } else if (a == "--top-p") {
      auto v = float_value(0, 1, true);
      if (!v.ok()) return v.status();
      o.has_top_p = true;
      o.top_p = *v;
    } else if (a == "--seed") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (!absl::SimpleAtoi(*v, &o.seed))
        return absl::InvalidArgumentError(absl::StrCat("--seed expects an integer in [0, 2^64), got '", *v, "'"));
    } else if (a == "--ignore-eos") {
      o.ignore_eos = true;
    } else if (a == "--decode-each") {
      auto v = value();
      if (!v.ok()) return v.status();
      o.decode_each = *v;
    } else if (a == "--prefill") {
      auto v = value();
      if (!v.ok()) return v.status();
      o.prefill = *v;
    } else if (a == "--print") {
      o.print = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(kExitOk);
    } else if (a == "--version") {
      PrintVersion("kiln-run");
      std::exit(kExitOk);
    } else if (!a.empty() && a[0] == '-') {
      return absl::InvalidArgumentError(absl::StrCat("unknown option '", a, "'"));
    } else if (o.plan.empty()) {
      o.plan = a;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "' (one PLAN only)"));
    }
    if (!st.ok()) return st;
  }
  if (o.plan.empty()) return absl::InvalidArgumentError("no PLAN given");
  // Which mode, and the flags that do not apply to it.
  int modes = (o.generate > 0) + !o.decode_each.empty() + !o.prefill.empty() + o.has_prompt;
  if (modes > 1)
    return absl::InvalidArgumentError("--prompt, --generate, --decode-each and --prefill are exclusive");
  bool sampling = o.has_temperature || o.has_top_k || o.has_top_p;
  bool generating = o.generate > 0 || o.has_prompt;
  auto not_with = [](const char* flag, const char* mode, const char* why) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " does not apply to ", mode, why));
  };
  if (!generating) {
    if (sampling || o.seed != 0 || o.ignore_eos)
      return absl::InvalidArgumentError(
          "--temperature, --top-k, --top-p, --seed and --ignore-eos apply to --prompt and --generate");
    if (o.max_new_tokens >= 0) return absl::InvalidArgumentError("--max-new-tokens applies to --prompt");
  }
  if (modes == 1) {
    const char* mode = ModeName(o);
    if (!o.function.empty())
      return not_with("--function", mode, " (it uses the forward and decode functions)");
    if (!o.outputs.empty()) return not_with("--output", mode, "");
    if (o.repeat > 0) return not_with("--repeat", mode, " (it applies to function runs)");
    if (o.print) return not_with("--print", mode, "");
    if (o.generate > 0 && o.max_new_tokens >= 0)
      return absl::InvalidArgumentError("--max-new-tokens applies to --prompt; --generate N is the budget");
    if (o.has_prompt) {
      if (!o.inputs.empty()) return not_with("--input", mode, " (the prompt is the input)");
    } else if (o.inputs.size() != 1 || o.inputs[0].first != "tokens") {
      return absl::InvalidArgumentError(
          absl::StrCat(mode, " needs exactly one input: --input tokens=PROMPT.npy (int32 [B, L])"));
    }
  }
  if (o.function.empty()) o.function = kiln::kForwardFunction;
  if (o.repeat == 0) o.repeat = 1;
  return o;
}

std::string FormatValue(const kiln::HostTensor& t, int64_t i) {
  switch (t.dtype) {
    case kiln::DType::kF32: return absl::StrFormat("%g", t.data<float>()[i]);
    case kiln::DType::kI32: return absl::StrCat(t.data<int32_t>()[i]);
    case kiln::DType::kI64: return absl::StrCat(t.data<int64_t>()[i]);
    case kiln::DType::kU8: case kiln::DType::kF8E4M3: return absl::StrCat(t.data<uint8_t>()[i]);
    case kiln::DType::kF16: case kiln::DType::kBF16: {
      uint16_t h = t.data<uint16_t>()[i];
      float f;
      if (t.dtype == kiln::DType::kBF16) {
        uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&f, &bits, 4);
      } else {
        int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        float mag = e == 0 ? std::ldexp(static_cast<float>(m), -24)
                  : e == 31 ? (m ? NAN : INFINITY)
                            : std::ldexp(static_cast<float>(m | 0x400), e - 25);
        f = (h & 0x8000) ? -mag : mag;
      }
      return absl::StrFormat("%g", f);
    }
  }
  return "?";
}

void PrintTensor(const std::string& name, const kiln::HostTensor& t, bool all) {
  int64_t n = t.num_elements();
  int64_t limit = all ? std::min<int64_t>(n, 10000) : std::min<int64_t>(n, 8);
  std::string values;
  for (int64_t i = 0; i < limit; ++i) absl::StrAppend(&values, i ? ", " : "", FormatValue(t, i));
  if (limit < n) absl::StrAppend(&values, ", ... (", n - limit, " more)");
  std::printf("%s: %s = [%s]\n", name.c_str(), kiln::DescribeTensor(t.dtype, t.shape).c_str(),
              values.c_str());
}

using Clock = std::chrono::steady_clock;
double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The generation options: the plan's defaults, then the flags.
kiln::GenerateOptions MakeGenerateOptions(const Options& o, const kiln::Plan& plan) {
  kiln::GenerateOptions g = kiln::DefaultGenerateOptions(plan);
  if (o.ignore_eos) g.eos_token_ids.clear();
  if (o.has_temperature) g.sampling.temperature = o.temperature;
  // --top-k or --top-p alone sample at temperature 1 when the plan's
  // defaults are greedy.
  if ((o.has_top_k || o.has_top_p) && !o.has_temperature && g.sampling.temperature <= 0)
    g.sampling.temperature = 1;
  if (o.has_top_k) g.sampling.top_k = o.top_k;
  if (o.has_top_p) g.sampling.top_p = o.top_p;
  g.sampling.seed = o.seed;
  if (o.generate > 0) g.max_new_tokens = o.generate;
  if (o.max_new_tokens > 0) g.max_new_tokens = o.max_new_tokens;
  return g;
}

// Timings on stderr, every rate from the median step.
void PrintStats(const kiln::GenerationStats& s) {
  std::string how = s.prefill_by_decode  ? "decode, one token at a time"
                    : s.prefill_calls > 1 ? absl::StrCat("forward, then extend: ", s.prefill_calls, " chunks")
                                          : "forward";
  std::fprintf(stderr, "prefill: %lld x %lld tokens (%s) in %.3f ms\n", static_cast<long long>(s.rows),
               static_cast<long long>(s.prompt_tokens), how.c_str(), s.prefill_ms);
  if (s.step_ms.empty()) {
    std::fprintf(stderr, "decode: 0 steps\n");
  } else if (s.rows == 1) {
    std::fprintf(stderr, "decode: %zu step(s), median %.3f ms/token, %.1f tokens/s\n", s.step_ms.size(),
                 s.median_step_ms, s.tokens_per_s);
  } else {
    std::fprintf(stderr,
                 "decode: %zu step(s), median %.3f ms/step (one token per row), %.1f tokens/s per row, "
                 "%.1f tokens/s over %lld rows\n",
                 s.step_ms.size(), s.median_step_ms, s.tokens_per_s_per_row, s.tokens_per_s,
                 static_cast<long long>(s.rows));
  }
}

// Why each row stopped, on stderr; kExitCacheFull when a row ran out of cache.
int ReportStops(const kiln::GenerateResult& r, const kiln::Generator& gen, const kiln::GenerateOptions& g) {
  bool full = false;
  std::vector<std::string> rows;
  for (size_t i = 0; i < r.stop.size(); ++i) {
    const auto& toks = r.tokens[i];
    std::string why;
    switch (r.stop[i]) {
      case kiln::StopReason::kEndOfSequence:
        why = absl::StrCat("end of sequence (token ", toks.back(), ")");
        break;
      case kiln::StopReason::kMaxNewTokens:
        why = absl::StrCat("token budget (", g.max_new_tokens, ")");
        break;
      case kiln::StopReason::kCacheFull:
        full = true;
        why = absl::StrCat("the KV cache is full (", gen.capacity(), " positions: ", r.stats.prompt_tokens,
                           " prompt + ", toks.size() - 1, " decoded; compile with a larger --max-seq)");
        break;
      case kiln::StopReason::kStopped:
        why = "stopped";
        break;
    }
    std::string row = r.stop.size() > 1 ? absl::StrCat("row ", i, ": ") : "";
    rows.push_back(absl::StrCat(row, why, " after ", toks.size(), " token(s)"));
  }
  std::fprintf(stderr, "stopped: %s\n", absl::StrJoin(rows, "; ").c_str());
  return full ? kExitCacheFull : kExitOk;
}

// --prompt: text in, text streamed out.
absl::StatusOr<int> RunPrompt(const Options& o, const kiln::Plan& plan, kiln::Generator& gen,
                              const kiln::Tokenizer& tok) {
  auto ids = tok.Encode(o.prompt);
  if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("--prompt: ", ids.status().message()));
  kiln::GenerateOptions g = MakeGenerateOptions(o, plan);
  // One prompt; a plan whose batch is fixed gets it in every row (row 0 is shown).
  std::vector<std::vector<int32_t>> prompts(gen.batch_paddable() ? 1 : static_cast<size_t>(gen.batch()), *ids);
  kiln::DecodeOptions skip;
  skip.skip_special_tokens = true;
  kiln::StreamDecoder stream(tok, skip);
  absl::Status stream_status;
  bool printed = false;
  g.on_token = [&](const kiln::TokenEvent& e) {
    if (e.row != 0) return kiln::StreamAction::kContinue;
    bool eos = std::find(g.eos_token_ids.begin(), g.eos_token_ids.end(), e.token) != g.eos_token_ids.end();
    if (eos) return kiln::StreamAction::kStop;  // the other rows too; the end-of-sequence text is not shown
    auto text = stream.Step(e.token);
    if (!text.ok()) {
      stream_status = text.status();
      return kiln::StreamAction::kStop;
    }
    std::fwrite(text->data(), 1, text->size(), stdout);
    std::fflush(stdout);
    printed |= !text->empty();
    return kiln::StreamAction::kContinue;
  };
  auto r = gen.Generate(prompts, g);
  if (printed) std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!r.ok()) return r.status();
  if (!stream_status.ok()) return absl::InternalError(absl::StrCat("decoding the output: ", stream_status.message()));
  std::fprintf(stderr, "prompt: %zu tokens\n", ids->size());
  PrintStats(r->stats);
  // Row 0's story (other rows of a fixed batch only repeat the prompt).
  kiln::GenerateResult row0;
  row0.tokens = {r->tokens[0]};
  row0.stop = {r->stop[0]};
  row0.stats = r->stats;
  return ReportStops(row0, gen, g);
}

// --generate N: token ids in, ids out.
absl::StatusOr<int> RunGenerate(const Options& o, const kiln::Plan& plan, kiln::Generator& gen,
                                const kiln::HostTensor& prompt) {
  kiln::GenerateOptions g = MakeGenerateOptions(o, plan);
  int64_t rows = prompt.shape[0], L = prompt.shape[1];
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(rows));
  for (int64_t b = 0; b < rows; ++b)
    prompts[static_cast<size_t>(b)].assign(prompt.data<int32_t>() + b * L, prompt.data<int32_t>() + (b + 1) * L);
  auto r = gen.Generate(prompts, g);
  if (!r.ok()) return r.status();
  for (size_t b = 0; b < r->tokens.size(); ++b)
    std::printf("generated[%zu]: %s\n", b, absl::StrJoin(r->tokens[b], " ").c_str());
  std::fflush(stdout);
  PrintStats(r->stats);
  return ReportStops(*r, gen, g);
}

// --decode-each: the prompt through decode one position at a time, from a
// reset state; logits of every position as float32 [B, L, V].
absl::Status DecodeEach(const Options& o, kiln::Session& session, const kiln::Generator& gen,
                        const kiln::HostTensor& prompt) {
  int64_t B = prompt.shape[0], L = prompt.shape[1], V = gen.vocab();
  if (auto s = session.ResetState(); !s.ok()) return s;
  size_t logits_index = *session.plan().FindOutput("decode", "logits");
  kiln::HostTensor all = kiln::MakeTensor(kiln::DType::kF32, {B, L, V});
  kiln::HostTensor tok = kiln::MakeTensor(kiln::DType::kI32, {B, 1});
  kiln::HostTensor pos = kiln::MakeTensor(kiln::DType::kI32, {B});
  auto t0 = Clock::now();
  for (int64_t p = 0; p < L; ++p) {
    for (int64_t b = 0; b < B; ++b) {
      tok.data<int32_t>()[b] = prompt.data<int32_t>()[b * L + p];
      pos.data<int32_t>()[b] = static_cast<int32_t>(p);
    }
    auto out = session.Call("decode", {{"tokens", tok}, {"position", pos}});
    if (!out.ok()) return out.status();
    const kiln::HostTensor& logits = (*out)[logits_index];
    for (int64_t b = 0; b < B; ++b)
      std::memcpy(all.data<float>() + (b * L + p) * V, logits.data<float>() + b * V, 4 * static_cast<size_t>(V));
  }
  std::printf("decoded %lld x %lld tokens one at a time in %.3f ms\n", static_cast<long long>(B),
              static_cast<long long>(L), Ms(Clock::now() - t0));
  if (auto s = kiln::WriteNpy(o.decode_each, all); !s.ok()) return s;
  std::printf("logits: %s\n  wrote %s\n", kiln::DescribeTensor(all.dtype, all.shape).c_str(), o.decode_each.c_str());
  return absl::OkStatus();
}

// --prefill: the prompt prefilled as generation does, then the logits of
// its last position.
absl::Status PrefillLogits(const Options& o, kiln::Session& session, kiln::Generator& gen,
                           const kiln::HostTensor& prompt) {
  if (auto s = session.ResetState(); !s.ok()) return s;
  auto t0 = Clock::now();
  auto pre = gen.Prefill(prompt);
  if (!pre.ok()) return pre.status();
  double ms = Ms(Clock::now() - t0);
  kiln::HostTensor last = std::move(pre->logits);
  if (last.shape.size() == 3) {  // --logits=all: the last chunk's last row
    int64_t B = last.shape[0], n = last.shape[1], V = last.shape[2];
    kiln::HostTensor rows = kiln::MakeTensor(kiln::DType::kF32, {B, V});
    for (int64_t b = 0; b < B; ++b)
      std::memcpy(rows.data<float>() + b * V, last.data<float>() + (b * n + pre->last_chunk - 1) * V,
                  4 * static_cast<size_t>(V));
    last = std::move(rows);
  }
  std::printf("prefilled %lld x %lld tokens in %lld call(s), %.3f ms\n", static_cast<long long>(prompt.shape[0]),
              static_cast<long long>(prompt.shape[1]), static_cast<long long>(pre->calls), ms);
  if (auto s = kiln::WriteNpy(o.prefill, last); !s.ok()) return s;
  std::printf("logits: %s\n  wrote %s\n", kiln::DescribeTensor(last.dtype, last.shape).c_str(), o.prefill.c_str());
  return absl::OkStatus();
}

// --prompt, --generate, --decode-each, --prefill.
Outcome Generation(const Options& o, std::shared_ptr<const kiln::Plan> plan) {
  const char* mode = ModeName(o);
  std::unique_ptr<kiln::Tokenizer> tok;
  if (o.has_prompt) {
    auto t = plan->LoadTokenizer();
    if (!t.ok()) return Fail(kExitBadPlan, t.status());
    tok = std::move(*t);
  }
  kiln::HostTensor prompt;
  if (!o.has_prompt) {
    auto p = kiln::ReadNpy(o.inputs[0].second);
    if (!p.ok()) return Fail(kExitBadInput, p.status());
    prompt = std::move(*p);
  }
  kiln::SessionOptions so;
  so.num_threads = o.threads;
  auto session = kiln::Session::Create(plan, o.device, so);
  if (!session.ok()) return Fail(kExitRunFailed, session.status());
  auto gen = kiln::Generator::Create(**session);
  if (!gen.ok()) return Fail(kExitBadPlan, gen.status());
  if (!o.has_prompt) {
    int64_t B = (*gen)->batch(), S = (*gen)->max_prompt();
    if (prompt.dtype != kiln::DType::kI32 || prompt.shape.size() != 2 || prompt.shape[0] != B)
      return Fail(kExitBadInput, absl::StrCat(mode, ": the prompt ", o.inputs[0].second, " is ",
                                              kiln::DescribeTensor(prompt.dtype, prompt.shape),
                                              ", expected int32 [", B, ", L] with 1 <= L <= ", S));
  }
  absl::StatusOr<int> code = 0;
  if (!o.decode_each.empty() || !o.prefill.empty()) {
    absl::Status s = o.prefill.empty() ? DecodeEach(o, **session, **gen, prompt)
                                       : PrefillLogits(o, **session, **gen, prompt);
    code = s.ok() ? absl::StatusOr<int>(kExitOk) : absl::StatusOr<int>(s);
  } else if (o.has_prompt) {
    code = RunPrompt(o, *plan, **gen, *tok);
  } else {
    code = RunGenerate(o, *plan, **gen, prompt);
  }
  if (code.ok()) return {*code, ""};
  // The API refuses bad prompts and options as InvalidArgument; the rest is
  // the run failing.
  return Fail(absl::IsInvalidArgument(code.status()) ? kExitBadInput : kExitRunFailed, code.status());
}

// A function run on .npy inputs.
Outcome RunFunction(const Options& o, std::shared_ptr<const kiln::Plan> plan) {
  auto fail = [](int code, const absl::Status& s) { return Fail(code, s); };
  auto fn = plan->FindFunction(o.function);
  if (!fn.ok()) return fail(kExitBadInput, fn.status());
  const kiln::Function& f = **fn;
  const std::string& function = o.function;
  std::string of = function == kiln::kForwardFunction ? "" : absl::StrCat(" of function '", function, "'");

  // Every input of the function must be given; every --input/--output name must exist.
  for (const auto& [name, file] : o.inputs)
    if (auto s = plan->FindInput(function, name); !s.ok()) return fail(kExitBadInput, s.status());
  for (const auto& [name, file] : o.outputs)
    if (auto s = plan->FindOutput(function, name); !s.ok()) return fail(kExitBadInput, s.status());
  for (const auto* spec : f.inputs) {
    bool given = std::any_of(o.inputs.begin(), o.inputs.end(),
                             [&](const auto& p) { return p.first == spec->name()->str(); });
    if (!given)
      return fail(kExitBadInput, absl::InvalidArgumentError(absl::StrCat(
                                     "missing input '", spec->name()->str(), "'", of, " (give --input ",
                                     spec->name()->str(), "=FILE.npy)")));
  }

  kiln::SessionOptions so;
  so.num_threads = o.threads;
  auto session = kiln::Session::Create(plan, o.device, so);
  if (!session.ok()) return fail(kExitRunFailed, session.status());
  for (const auto& [name, file] : o.inputs) {
    auto t = kiln::ReadNpy(file);
    if (!t.ok()) return fail(kExitBadInput, t.status());
    // numpy has no e4m3: an e4m3 input is given as its raw bytes (uint8).
    if (t->dtype == kiln::DType::kU8) {
      auto idx = plan->FindInput(function, name);
      if (idx.ok() && static_cast<kiln::DType>(f.inputs[*idx]->dtype()) == kiln::DType::kF8E4M3)
        t->dtype = kiln::DType::kF8E4M3;
    }
    if (auto s = (*session)->SetInput(function, name, *t); !s.ok()) return fail(kExitBadInput, s);
  }

  std::vector<double> times;
  for (int r = 0; r < o.repeat; ++r) {
    auto t0 = Clock::now();
    // Inputs are checked again before the kernels run (value ranges that
    // depend on the other inputs): InvalidArgument is bad input.
    if (auto s = (*session)->Run(function); !s.ok())
      return fail(absl::IsInvalidArgument(s) ? kExitBadInput : kExitRunFailed, s);
    times.push_back(Ms(Clock::now() - t0));
  }
  std::sort(times.begin(), times.end());
  std::printf("ran %s%s on %s: %d run(s), median %.3f ms, min %.3f ms\n", o.plan.c_str(),
              function == kiln::kForwardFunction ? "" : absl::StrCat(" (function ", function, ")").c_str(),
              kiln::DeviceName(o.device), o.repeat, times[times.size() / 2], times[0]);

  // Summaries for every output; files for the requested ones.
  for (const auto* spec : f.outputs) {
    std::string name = spec->name()->str();
    auto t = (*session)->GetOutput(function, name);
    if (!t.ok()) return fail(kExitRunFailed, t.status());
    PrintTensor(name, *t, o.print);
    for (const auto& [oname, file] : o.outputs) {
      if (oname != name) continue;
      // e4m3 outputs are written as their raw bytes (uint8 .npy).
      kiln::HostTensor out = *t;
      if (out.dtype == kiln::DType::kF8E4M3) out.dtype = kiln::DType::kU8;
      if (auto s = kiln::WriteNpy(file, out); !s.ok()) return fail(kExitRunFailed, s);
      std::printf("  wrote %s\n", file.c_str());
    }
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  auto opts = ParseArgs(argc, argv);
  if (!opts.ok()) {
    std::fprintf(stderr, "kiln-run: error: %s\nRun 'kiln-run --help' for the options.\n",
                 std::string(opts.status().message()).c_str());
    return kExitUsage;
  }
  Outcome out;
  auto plan = kiln::Plan::Open(opts->plan);
  if (!plan.ok())
    out = Fail(kExitBadPlan, plan.status());
  else if (opts->generate > 0 || opts->has_prompt || !opts->decode_each.empty() || !opts->prefill.empty())
    out = Generation(*opts, *plan);
  else
    out = RunFunction(*opts, *plan);
  if (!out.error.empty()) std::fprintf(stderr, "kiln-run: error: %s\n", out.error.c_str());
  return out.code;
}
