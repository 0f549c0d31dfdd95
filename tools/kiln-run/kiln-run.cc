// kiln-run: runs a compiled plan on .npy inputs.
//
//   kiln-run PLAN --input NAME=FILE.npy ... [--output NAME=FILE.npy ...]
//            [--function NAME] [--device cpu|cuda] [--threads N] [--repeat N] [--print]
//   kiln-run PLAN --generate N --input tokens=PROMPT.npy [--device ...] [--threads N]
//
// --generate runs greedy decoding with the plan's generation calling
// convention: forward(tokens [B, S]) -> logits [B, V] (the last given
// position) and decode(tokens [B, 1], position [B]) -> logits [B, V]; or,
// compiled with --logits=all, [B, S, V] and [B, 1, V].
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
#include "kiln/npy.h"
#include "kiln/runtime.h"
#include "plan_generated.h"
#include "plan_support.h"

namespace {

constexpr char kUsage[] =
    "usage: kiln-run PLAN --input NAME=FILE.npy ... [--output NAME=FILE.npy ...]\n"
    "                [--function NAME] [--device cpu|cuda] [--threads N] [--repeat N] [--print]\n"
    "       kiln-run PLAN --generate N --input tokens=PROMPT.npy [--device cpu|cuda] [--threads N]\n"
    "       kiln-run PLAN --decode-each OUT.npy --input tokens=PROMPT.npy [--device cpu|cuda]\n"
    "  --function NAME  the entry point to run (default forward; see kiln-inspect)\n"
    "  --generate N     greedy decoding of N new tokens from an int32 [B, L] prompt\n"
    "  --decode-each F  runs the prompt through decode one position at a time (from a\n"
    "                   reset state) and writes the logits of every position, [B, L, V], to F\n";

struct Options {
  std::string plan;
  std::vector<std::pair<std::string, std::string>> inputs, outputs;
  kiln::Device device = kiln::Device::kCpu;
  int threads = 0;
  int repeat = 1;
  bool print = false;
  std::string function = kiln::kForwardFunction;
  int generate = 0;  // 0: off
  std::string decode_each;  // --decode-each FILE.npy
};

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

absl::StatusOr<Options> ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> absl::StatusOr<const char*> {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(a, " needs a value"));
      return argv[++i];
    };
    auto int_value = [&](int min) -> absl::StatusOr<int> {
      auto v = value();
      if (!v.ok()) return v.status();
      int n;
      if (!absl::SimpleAtoi(*v, &n) || n < min)
        return absl::InvalidArgumentError(absl::StrCat(a, " expects an integer >= ", min, ", got '", *v, "'"));
      return n;
    };
    if (a == "--input" || a == "--output") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (auto s = ParsePair(a, *v, a == "--input" ? &o.inputs : &o.outputs); !s.ok()) return s;
    } else if (a == "--device") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (std::strcmp(*v, "cpu") == 0) o.device = kiln::Device::kCpu;
      else if (std::strcmp(*v, "cuda") == 0) o.device = kiln::Device::kCuda;
      else return absl::InvalidArgumentError(absl::StrCat("--device expects cpu or cuda, got '", *v, "'"));
    } else if (a == "--threads") {
      auto v = int_value(0);
      if (!v.ok()) return v.status();
      o.threads = *v;
    } else if (a == "--repeat") {
      auto v = int_value(1);
      if (!v.ok()) return v.status();
      o.repeat = *v;
    } else if (a == "--function") {
      auto v = value();
      if (!v.ok()) return v.status();
      o.function = *v;
    } else if (a == "--generate") {
      auto v = int_value(1);
      if (!v.ok()) return v.status();
      o.generate = *v;
    } else if (a == "--decode-each") {
      auto v = value();
      if (!v.ok()) return v.status();
      o.decode_each = *v;
    } else if (a == "--print") {
      o.print = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (!a.empty() && a[0] == '-') {
      return absl::InvalidArgumentError(absl::StrCat("unknown option '", a, "'"));
    } else if (o.plan.empty()) {
      o.plan = a;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "' (one PLAN only)"));
    }
  }
  if (o.plan.empty()) return absl::InvalidArgumentError("no PLAN given");
  if (o.generate > 0 || !o.decode_each.empty()) {
    const char* flag = o.generate > 0 ? "--generate" : "--decode-each";
    if (o.generate > 0 && !o.decode_each.empty())
      return absl::InvalidArgumentError("--generate and --decode-each are exclusive");
    if (o.function != kiln::kForwardFunction)
      return absl::InvalidArgumentError(absl::StrCat(flag, " uses the forward and decode functions; drop --function"));
    if (!o.outputs.empty())
      return absl::InvalidArgumentError(absl::StrCat("--output is not supported with ", flag));
    if (o.inputs.size() != 1 || o.inputs[0].first != "tokens")
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " needs exactly one input: --input tokens=PROMPT.npy (int32 [B, L])"));
  }
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

// The dims of `function`'s input/output `name`, after checking its dtype and
// rank against the generation calling convention.
absl::StatusOr<std::vector<int64_t>> ConventionSpec(const kiln::Plan& plan, const char* function, bool output,
                                                    const char* name, kiln::DType dtype,
                                                    const char* shape_text) {
  const char* what = output ? "output" : "input";
  auto bad = [&](const std::string& why) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan does not follow the generation calling convention (function '", function,
        "' ", what, " '", name, "' ", kiln::DTypeName(dtype), " ", shape_text, "): ", why));
  };
  auto fn = plan.FindFunction(function);
  if (!fn.ok()) return bad(std::string(fn.status().message()));
  const auto& specs = output ? (*fn)->outputs : (*fn)->inputs;
  for (const kiln::plan::TensorSpec* spec : specs) {
    if (spec->name()->str() != name) continue;
    std::vector<int64_t> shape = kiln::plan::ToVector(spec->shape());
    size_t rank = 1;
    for (const char* c = shape_text; *c; ++c) rank += *c == ',';
    auto got = static_cast<kiln::DType>(spec->dtype());
    if (got != dtype || shape.size() != rank)
      return bad(absl::StrCat("it is ", kiln::DescribeTensor(got, shape)));
    return shape;
  }
  return bad(absl::StrCat("the function has no ", what, " '", name, "'"));
}

// Greedy token per batch row from logits [B, rows, V] at row `row`, or from
// last-position logits [B, V].
std::vector<int32_t> Argmax(const kiln::HostTensor& logits, int64_t row) {
  bool last = logits.shape.size() == 2;
  int64_t B = logits.shape[0], rows = last ? 1 : logits.shape[1], V = logits.shape.back();
  if (last) row = 0;
  std::vector<int32_t> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const float* l = logits.data<float>() + (b * rows + row) * V;
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v)
      if (l[v] > l[best]) best = v;
    out[static_cast<size_t>(b)] = static_cast<int32_t>(best);
  }
  return out;
}

// --generate and --decode-each.
absl::Status Generate(const Options& o, const kiln::Plan& plan, kiln::Session& session) {
  const char* flag = o.generate > 0 ? "--generate" : "--decode-each";
  using kiln::DType;
  // The calling convention (documented in kiln/runtime.h).
  auto ftok = ConventionSpec(plan, "forward", false, "tokens", DType::kI32, "[B, S]");
  if (!ftok.ok()) return ftok.status();
  // Logits of the last position ([B, V], kiln-compile's default) or of
  // every position (--logits=all: [B, S, V] and [B, 1, V]); seen as [B, S, V].
  auto flog = ConventionSpec(plan, "forward", true, "logits", DType::kF32, "[B, V]");
  bool last = flog.ok();
  if (last) flog->insert(flog->begin() + 1, (*ftok)[1]);
  else flog = ConventionSpec(plan, "forward", true, "logits", DType::kF32, "[B, S, V]");
  if (!flog.ok()) return flog.status();
  auto dtok = ConventionSpec(plan, "decode", false, "tokens", DType::kI32, "[B, 1]");
  if (!dtok.ok()) return dtok.status();
  auto dpos = ConventionSpec(plan, "decode", false, "position", DType::kI32, "[B]");
  if (!dpos.ok()) return dpos.status();
  auto dlog = ConventionSpec(plan, "decode", true, "logits", DType::kF32, last ? "[B, V]" : "[B, 1, V]");
  if (!dlog.ok()) return dlog.status();
  if (last) dlog->insert(dlog->begin() + 1, 1);
  int64_t B = (*ftok)[0], S = (*ftok)[1], V = (*flog)[2];
  auto mismatch = [&](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan does not follow the generation calling convention: ", what,
        " (forward tokens ", kiln::ShapeToString(*ftok), ", forward logits ", kiln::ShapeToString(*flog),
        ", decode tokens ", kiln::ShapeToString(*dtok), ", decode position ", kiln::ShapeToString(*dpos),
        ", decode logits ", kiln::ShapeToString(*dlog), ")"));
  };
  if ((*flog)[0] != B || (*flog)[1] != S) return mismatch("forward logits must be [B, S, V]");
  if ((*dtok)[0] != B || (*dtok)[1] != 1) return mismatch("decode tokens must be [B, 1]");
  if ((*dpos)[0] != B) return mismatch("decode position must be [B]");
  if ((*dlog)[0] != B || (*dlog)[1] != 1 || (*dlog)[2] != V) return mismatch("decode logits must be [B, 1, V]");
  if (V < 1 || S < 1 || B < 1) return mismatch("B, S and V must be positive");
  for (const kiln::Function& f : plan.functions())
    if ((f.name == "forward" && f.inputs.size() != 1) || (f.name == "decode" && f.inputs.size() != 2))
      return mismatch(absl::StrCat("function '", f.name, "' has other inputs than the convention's"));

  auto prompt = kiln::ReadNpy(o.inputs[0].second);
  if (!prompt.ok()) return prompt.status();
  if (prompt->dtype != DType::kI32 || prompt->shape.size() != 2 || prompt->shape[0] != B)
    return absl::InvalidArgumentError(absl::StrCat(flag, ": the prompt ", o.inputs[0].second, " is ",
                                                   kiln::DescribeTensor(prompt->dtype, prompt->shape),
                                                   ", expected int32 [", B, ", L] with 1 <= L <= ", S));
  int64_t L = prompt->shape[1];
  if (L < 1 || L > S)
    return absl::InvalidArgumentError(absl::StrCat(flag, ": the prompt has ", L,
                                                   " tokens per row; the plan takes 1 to ", S,
                                                   " (forward's sequence length)"));
  const int32_t* pt = prompt->data<int32_t>();
  for (int64_t i = 0; i < B * L; ++i)
    if (pt[i] < 0 || pt[i] >= V)
      return absl::InvalidArgumentError(absl::StrCat(flag, ": prompt token ", pt[i], " at [", i / L, ", ",
                                                     i % L, "] is outside the vocabulary [0, ", V, ")"));

  size_t logits_index = 0;  // of decode's outputs (Call returns them in spec order)
  const auto& douts = plan.FindFunction("decode").value()->outputs;
  for (size_t i = 0; i < douts.size(); ++i)
    if (douts[i]->name()->str() == "logits") logits_index = i;
  kiln::HostTensor tok = kiln::MakeTensor(DType::kI32, {B, 1});
  kiln::HostTensor pos = kiln::MakeTensor(DType::kI32, {B});
  // decode(tokens, position) -> logits [B, 1, V].
  auto decode_logits = [&](const std::vector<int32_t>& tokens, int64_t position) -> absl::StatusOr<kiln::HostTensor> {
    for (int64_t b = 0; b < B; ++b) {
      tok.data<int32_t>()[b] = tokens[static_cast<size_t>(b)];
      pos.data<int32_t>()[b] = static_cast<int32_t>(position);
    }
    auto out = session.Call("decode", {{"tokens", tok}, {"position", pos}});
    if (!out.ok()) return out.status();
    return std::move((*out)[logits_index]);
  };
  auto decode = [&](const std::vector<int32_t>& tokens, int64_t position) -> absl::StatusOr<std::vector<int32_t>> {
    auto logits = decode_logits(tokens, position);
    if (!logits.ok()) return logits.status();
    return Argmax(*logits, 0);
  };
  auto column = [&](int64_t p) {
    std::vector<int32_t> col(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) col[static_cast<size_t>(b)] = pt[b * L + p];
    return col;
  };

  if (!o.decode_each.empty()) {
    // The prompt through decode, one position at a time, from a reset state;
    // logits of every position as float32 [B, L, V] (comparable to forward's).
    if (auto s = session.ResetState(); !s.ok()) return s;
    kiln::HostTensor all = kiln::MakeTensor(DType::kF32, {B, L, V});
    auto t0 = Clock::now();
    for (int64_t p = 0; p < L; ++p) {
      auto logits = decode_logits(column(p), p);
      if (!logits.ok()) return logits.status();
      for (int64_t b = 0; b < B; ++b)
        std::memcpy(all.data<float>() + (b * L + p) * V, logits->data<float>() + b * V, 4 * static_cast<size_t>(V));
    }
    std::printf("decoded %lld x %lld tokens one at a time in %.3f ms\n", static_cast<long long>(B),
                static_cast<long long>(L), Ms(Clock::now() - t0));
    if (auto s = kiln::WriteNpy(o.decode_each, all); !s.ok()) return s;
    std::printf("logits: %s\n  wrote %s\n", kiln::DescribeTensor(all.dtype, all.shape).c_str(), o.decode_each.c_str());
    return absl::OkStatus();
  }

  // Prefill.
  if (auto s = session.ResetState(); !s.ok()) return s;
  std::vector<int32_t> next;
  auto t0 = Clock::now();
  const char* how;
  // A prompt shorter than S goes through forward too when the plan marks
  // the sequence dimension as one the runtime may pad (dim_symbols).
  const auto* tok_syms = plan.functions()[0].inputs[0]->dim_symbols();
  bool seq_paddable = tok_syms && tok_syms->size() == 2 && tok_syms->Get(1) >= 0;
  if (L == S || seq_paddable) {
    how = "forward";
    if (auto s = session.SetInput("forward", "tokens", *prompt); !s.ok()) return s;
    if (auto s = session.Run("forward"); !s.ok()) return s;
    auto logits = session.GetOutput("forward", "logits");
    if (!logits.ok()) return logits.status();
    next = Argmax(*logits, L - 1);
  } else {
    how = "decode, one token at a time";
    for (int64_t p = 0; p < L; ++p) {
      auto n = decode(column(p), p);
      if (!n.ok()) return n.status();
      next = *n;
    }
  }
  double prefill_ms = Ms(Clock::now() - t0);

  std::vector<std::vector<int32_t>> generated(static_cast<size_t>(B));
  auto append = [&](const std::vector<int32_t>& t) {
    for (int64_t b = 0; b < B; ++b) generated[static_cast<size_t>(b)].push_back(t[static_cast<size_t>(b)]);
  };
  append(next);
  std::vector<double> step_ms;
  int64_t position = L;
  std::string note;
  while (static_cast<int>(generated[0].size()) < o.generate) {
    if (position >= S) {
      note = absl::StrCat("note: stopped after ", generated[0].size(), " of ", o.generate,
                          " tokens: position ", position, " reached the forward's sequence length ", S,
                          " (taken as the state capacity)");
      break;
    }
    auto t1 = Clock::now();
    auto n = decode(next, position);
    if (!n.ok()) return n.status();
    step_ms.push_back(Ms(Clock::now() - t1));
    next = *n;
    append(next);
    ++position;
  }

  std::printf("prefill: %lld x %lld tokens (%s) in %.3f ms\n", static_cast<long long>(B),
              static_cast<long long>(L), how, prefill_ms);
  for (int64_t b = 0; b < B; ++b) {
    std::string ids;
    for (int32_t t : generated[static_cast<size_t>(b)]) absl::StrAppend(&ids, ids.empty() ? "" : " ", t);
    std::printf("generated[%lld]: %s\n", static_cast<long long>(b), ids.c_str());
  }
  if (!step_ms.empty()) {
    double total = 0;
    for (double t : step_ms) total += t;
    std::vector<double> sorted = step_ms;
    std::sort(sorted.begin(), sorted.end());
    std::printf("decode: %zu step(s), median %.3f ms/token, %.1f tokens/s (batch %lld)\n", step_ms.size(),
                sorted[sorted.size() / 2], total > 0 ? 1000.0 * static_cast<double>(B) * step_ms.size() / total : 0.0,
                static_cast<long long>(B));
  } else {
    std::printf("decode: 0 steps\n");
  }
  if (!note.empty()) std::printf("%s\n", note.c_str());
  return absl::OkStatus();
}

absl::Status Main(int argc, char** argv) {
  auto opts = ParseArgs(argc, argv);
  if (!opts.ok()) return opts.status();
  auto plan = kiln::Plan::Open(opts->plan);
  if (!plan.ok()) return plan.status();

  kiln::SessionOptions so;
  so.num_threads = opts->threads;
  if (opts->generate > 0 || !opts->decode_each.empty()) {
    auto session = kiln::Session::Create(*plan, opts->device, so);
    if (!session.ok()) return session.status();
    return Generate(*opts, **plan, **session);
  }

  auto fn = (*plan)->FindFunction(opts->function);
  if (!fn.ok()) return fn.status();
  const kiln::Function& f = **fn;
  const std::string& function = opts->function;
  std::string of = function == kiln::kForwardFunction ? "" : absl::StrCat(" of function '", function, "'");

  // Every input of the function must be given; every --input/--output name must exist.
  for (const auto& [name, file] : opts->inputs)
    if (auto s = (*plan)->FindInput(function, name); !s.ok()) return s.status();
  for (const auto& [name, file] : opts->outputs)
    if (auto s = (*plan)->FindOutput(function, name); !s.ok()) return s.status();
  for (const auto* spec : f.inputs) {
    bool given = std::any_of(opts->inputs.begin(), opts->inputs.end(),
                             [&](const auto& p) { return p.first == spec->name()->str(); });
    if (!given)
      return absl::InvalidArgumentError(absl::StrCat("missing input '", spec->name()->str(), "'", of,
                                                     " (give --input ", spec->name()->str(), "=FILE.npy)"));
  }

  auto session = kiln::Session::Create(*plan, opts->device, so);
  if (!session.ok()) return session.status();
  for (const auto& [name, file] : opts->inputs) {
    auto t = kiln::ReadNpy(file);
    if (!t.ok()) return t.status();
    // numpy has no e4m3: an e4m3 input is given as its raw bytes (uint8).
    if (t->dtype == kiln::DType::kU8) {
      auto idx = (*plan)->FindInput(function, name);
      if (idx.ok() && static_cast<kiln::DType>(f.inputs[*idx]->dtype()) == kiln::DType::kF8E4M3)
        t->dtype = kiln::DType::kF8E4M3;
    }
    if (auto s = (*session)->SetInput(function, name, *t); !s.ok()) return s;
  }

  std::vector<double> times;
  for (int r = 0; r < opts->repeat; ++r) {
    auto t0 = Clock::now();
    if (auto s = (*session)->Run(function); !s.ok()) return s;
    times.push_back(Ms(Clock::now() - t0));
  }
  std::sort(times.begin(), times.end());
  std::printf("ran %s%s on %s: %d run(s), median %.3f ms, min %.3f ms\n", opts->plan.c_str(),
              function == kiln::kForwardFunction ? "" : absl::StrCat(" (function ", function, ")").c_str(),
              kiln::DeviceName(opts->device), opts->repeat, times[times.size() / 2], times[0]);

  // Summaries for every output; files for the requested ones.
  for (const auto* spec : f.outputs) {
    std::string name = spec->name()->str();
    auto t = (*session)->GetOutput(function, name);
    if (!t.ok()) return t.status();
    PrintTensor(name, *t, opts->print);
    for (const auto& [oname, file] : opts->outputs) {
      if (oname != name) continue;
      // e4m3 outputs are written as their raw bytes (uint8 .npy).
      kiln::HostTensor out = *t;
      if (out.dtype == kiln::DType::kF8E4M3) out.dtype = kiln::DType::kU8;
      if (auto s = kiln::WriteNpy(file, out); !s.ok()) return s;
      std::printf("  wrote %s\n", file.c_str());
    }
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::Status s = Main(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "kiln-run: error: %s\n", std::string(s.message()).c_str());
    if (s.message().find("usage") == absl::string_view::npos && argc < 2) std::fputs(kUsage, stderr);
    return 1;
  }
  return 0;
}
