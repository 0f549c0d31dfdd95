#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "backend.h"
#include "kiln/runtime.h"
#include "plan_generated.h"
#include "plan_support.h"

namespace kiln {

const char* DeviceName(Device device) {
  return device == Device::kCuda ? "cuda" : "cpu";
}

absl::StatusOr<const plan::Executable*> FindExecutable(const Plan& p, plan::TargetKind target) {
  std::vector<std::string> targets;
  if (auto* exes = p.fb().executables()) {
    for (const plan::Executable* x : *exes) {
      if (x->target() == target) return x;
      targets.push_back(plan::EnumNameTargetKind(x->target()));
    }
  }
  return absl::NotFoundError(absl::StrCat(
      "plan has no executable for target ", plan::EnumNameTargetKind(target),
      "; compiled targets: ", targets.empty() ? "(none)" : absl::StrJoin(targets, ", ")));
}

std::optional<LaunchWindow> TokenWindow(const plan::Launch& launch, int64_t rows, int64_t seq) {
  const plan::TokenGrid* g = launch.tokens();
  if (!g) return std::nullopt;
  int64_t max_rows = static_cast<int64_t>(g->max_batch()), max_seq = static_cast<int64_t>(g->max_seq());
  int64_t per = static_cast<int64_t>(g->per_token());
  if (rows >= max_rows && seq >= max_seq) return std::nullopt;
  LaunchWindow w;
  // Row r's tokens are programs [(r * max_seq) * per, (r * max_seq + seq) *
  // per); consecutive rows merge when every position is given.
  for (int64_t r = 0; r < rows; ++r) {
    int64_t first = r * max_seq * per, last = (r * max_seq + seq) * per;
    if (!w.ranges.empty() && w.ranges.back().second == first)
      w.ranges.back().second = last;
    else
      w.ranges.push_back({first, last});
  }
  uint32_t ns = launch.scalars() ? launch.scalars()->size() : 0;
  for (uint32_t i = 0; i < ns; ++i) w.scalars.push_back(plan::Load(launch.scalars(), i));
  if (g->tokens_scalar() >= 0) w.scalars[g->tokens_scalar()] = rows * seq;
  if (g->seq_scalar() >= 0) w.scalars[g->seq_scalar()] = seq;
  return w;
}

std::vector<const plan::EntryPoint*> EntryPointsByKernel(const Plan& p, const plan::Executable& exe) {
  std::vector<const plan::EntryPoint*> out(p.fb().kernels() ? p.fb().kernels()->size() : 0);
  for (const plan::EntryPoint* ep : *exe.entry_points()) out[ep->kernel()] = ep;
  return out;
}

absl::StatusOr<std::unique_ptr<Session>> Session::Create(std::shared_ptr<const Plan> plan,
                                                          Device device,
                                                          const SessionOptions& options) {
  if (!plan) return absl::InvalidArgumentError("Session::Create: null plan");
  auto weights = plan->ResolveWeights();
  if (!weights.ok()) return weights.status();
  if (options.weight_check == WeightCheck::kFull) {
    WeightVerifyOptions verify;
    verify.num_threads = options.num_threads;
    if (auto s = plan->VerifyWeights(verify); !s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      device == Device::kCuda ? CreateCudaBackend(*plan, **weights, options)
                              : CreateCpuBackend(*plan, **weights, options);
  if (!backend.ok()) return backend.status();
  std::unique_ptr<Session> s(new Session());
  s->plan_ = std::move(plan);
  s->device_ = device;
  s->options_ = options;
  s->backend_ = std::move(*backend);
  return s;
}

Session::~Session() = default;

namespace {
// "" for forward, "function 'decode': " otherwise.
std::string Prefix(const Function& f) {
  return f.name == kForwardFunction ? "" : absl::StrCat("function '", f.name, "': ");
}
}  // namespace

namespace {

// Copies a row-major tensor of shape `from` into one of shape `to` (every
// dimension of `from` <= `to`), element by element along the last dimension.
void CopyBox(const uint8_t* src, const std::vector<int64_t>& from, uint8_t* dst,
             const std::vector<int64_t>& to, size_t elem, bool to_larger) {
  size_t rank = from.size();
  if (rank == 0) {
    std::memcpy(dst, src, elem);
    return;
  }
  // Strides of both layouts.
  std::vector<int64_t> sf(rank, 1), st(rank, 1);
  for (size_t d = rank - 1; d-- > 0;) {
    sf[d] = sf[d + 1] * from[d + 1];
    st[d] = st[d + 1] * to[d + 1];
  }
  const std::vector<int64_t>& box = to_larger ? from : to;  // the smaller one
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < rank; ++d) rows *= box[d];
  std::vector<int64_t> idx(rank, 0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t of = 0, ot = 0, rem = r;
    for (size_t d = rank - 1; d-- > 0;) {
      idx[d] = rem % box[d];
      rem /= box[d];
    }
    for (size_t d = 0; d + 1 < rank; ++d) {
      of += idx[d] * sf[d];
      ot += idx[d] * st[d];
    }
    std::memcpy(dst + ot * elem, src + of * elem, box[rank - 1] * elem);
  }
}

// Element `i` of an integer tensor of `dtype`, as int64.
int64_t IntegerAt(DType dtype, const uint8_t* data, int64_t i) {
  switch (dtype) {
    case DType::kI32: {
      int32_t v;
      std::memcpy(&v, data + 4 * i, 4);
      return v;
    }
    case DType::kI64: {
      int64_t v;
      std::memcpy(&v, data + 8 * i, 8);
      return v;
    }
    default: return data[i];  // u8 (the only other integer dtype)
  }
}

// Checks every value of an input tensor of `shape` (its bytes at `data`)
// against the spec's value range; the error names the input, the row (and
// the element, for rank > 1), the value and why the range is what it is.
//
// `given` is how many positions the call gives along the spec's
// range_max_grows_with symbol (-1: unknown yet, the loosest bound: one).
absl::Status CheckValueRange(const Function& f, const plan::TensorSpec& spec, const uint8_t* data,
                             const std::vector<int64_t>& shape, int64_t given) {
  const plan::ValueRange* r = spec.value_range();
  if (!r) return absl::OkStatus();
  int64_t max = r->max();
  std::string grown;
  if (int32_t sym = spec.range_max_grows_with(); sym >= 0) {
    int64_t extent = plan::SymbolExtent(f.inputs, sym);
    int64_t n = given < 0 ? 1 : std::clamp<int64_t>(given, 1, extent);
    max += extent - n;
    if (given >= 0 && n < extent) grown = absl::StrCat("; this call gives ", n);
  }
  DType dtype = static_cast<DType>(spec.dtype());
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = IntegerAt(dtype, data, i);
    if (v >= r->min() && v <= max) continue;
    std::vector<int64_t> index(shape.size());
    for (size_t d = shape.size(), rem = static_cast<size_t>(i); d-- > 0;) {
      index[d] = static_cast<int64_t>(rem % static_cast<size_t>(shape[d]));
      rem /= static_cast<size_t>(shape[d]);
    }
    std::string where;
    if (!index.empty()) absl::StrAppend(&where, " row ", index[0]);
    if (index.size() > 1) absl::StrAppend(&where, ", element ", ShapeToString(index));
    std::string note = spec.range_note() && spec.range_note()->size() > 0
                           ? absl::StrCat(" (", spec.range_note()->str(), grown, ")")
                           : "";
    return absl::InvalidArgumentError(absl::StrCat(Prefix(f), "input '", spec.name()->str(), "'", where, ": value ", v,
                                                   " is outside [", r->min(), ", ", max, "]", note));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Session::SetInput(std::string_view function, std::string_view name_in,
                               const HostTensor& tensor) {
  auto fn = plan_->FindFunction(function);
  if (!fn.ok()) return fn.status();
  auto index = plan_->FindInput(function, name_in);
  absl::string_view name(name_in.data(), name_in.size());
  if (!index.ok()) return index.status();
  const plan::TensorSpec* spec = (*fn)->inputs[*index];
  std::vector<int64_t> shape = plan::ToVector(spec->shape());
  DType dtype = static_cast<DType>(spec->dtype());
  const auto* syms = spec->dim_symbols();
  bool smaller_ok = syms && syms->size() == shape.size();
  bool fits = tensor.dtype == dtype && tensor.shape.size() == shape.size();
  for (size_t d = 0; fits && d < shape.size(); ++d) {
    bool dynamic = smaller_ok && syms->Get(d) >= 0;
    fits = dynamic ? (tensor.shape[d] >= 1 && tensor.shape[d] <= shape[d]) : tensor.shape[d] == shape[d];
  }
  if (!fits) {
    std::string bound;
    if (smaller_ok)
      for (size_t d = 0; d < shape.size(); ++d)
        if (syms->Get(d) >= 0)
          absl::StrAppend(&bound, bound.empty() ? " (dimensions " : ", ", d, " <= ", shape[d]);
    if (!bound.empty()) absl::StrAppend(&bound, " may be smaller)");
    // Beyond a limit the compiler recorded: name what sets it.
    std::string hint;
    const auto* limits = spec->dim_limits();
    for (size_t d = 0; limits && d < shape.size() && d < limits->size() && d < tensor.shape.size(); ++d)
      if (tensor.shape[d] > shape[d] && limits->Get(d)->size() > 0)
        absl::StrAppend(&hint, "; dimension ", d, " is at most ", shape[d], ": compile with a larger ",
                        limits->Get(d)->str().substr(0, limits->Get(d)->str().find(' ')),
                        " (the plan has ", limits->Get(d)->str(), ")");
    return absl::InvalidArgumentError(absl::StrCat(Prefix(**fn), "input '", name, "': expected ",
                                                   DescribeTensor(dtype, shape), bound, ", got ",
                                                   DescribeTensor(tensor.dtype, tensor.shape), hint));
  }
  const plan::Buffer* buf = plan_->fb().buffers()->Get(spec->buffer());
  size_t elem = DTypeSize(dtype);
  uint64_t given = static_cast<uint64_t>(tensor.num_elements()) * elem;
  if (tensor.bytes.size() != given)
    return absl::InvalidArgumentError(absl::StrCat(Prefix(**fn), "input '", name, "': tensor holds ",
                                                   tensor.bytes.size(), " bytes, expected ", given));
  // Values kernels index memory with (token ids, positions), before they
  // reach the arena. The zeros padding a smaller tensor are inside every
  // such range (plan verification checks it).
  // (A range that grows with the tokens given is checked loosely here and
  // again when the function runs, once they are known.)
  if (auto s = CheckValueRange(**fn, *spec, tensor.bytes.data(), tensor.shape, -1); !s.ok()) return s;
  auto& symbols = symbol_values_[std::string((*fn)->name)];
  if (smaller_ok)
    for (size_t d = 0; d < shape.size(); ++d)
      if (int32_t s = syms->Get(d); s >= 0) symbols[s] = tensor.shape[d];
  absl::Status copied;
  if (tensor.shape == shape) {
    copied = backend_->CopyIn(buf->offset(), tensor.bytes.data(), tensor.bytes.size());
  } else {
    // Smaller along symbolic dimensions: zero-pad to the compiled shape.
    std::vector<uint8_t> padded(buf->size_bytes(), 0);
    CopyBox(tensor.bytes.data(), tensor.shape, padded.data(), shape, elem, /*to_larger=*/true);
    copied = backend_->CopyIn(buf->offset(), padded.data(), padded.size());
  }
  auto& state = input_state_[(*fn)->name];
  state.resize((*fn)->inputs.size(), InputState::kNeverSet);
  state[*index] = copied.ok() ? InputState::kChecked : InputState::kNeverSet;
  return copied;
}

absl::Status Session::CheckInputsBeforeRun(const Function& f) {
  auto& state = input_state_[f.name];
  state.resize(f.inputs.size(), InputState::kNeverSet);
  for (size_t i = 0; i < f.inputs.size(); ++i) {
    const plan::TensorSpec* spec = f.inputs[i];
    int32_t grows = spec->range_max_grows_with();
    if (!spec->value_range() || (state[i] == InputState::kChecked && grows < 0)) continue;
    // Not set since another function may have reused its memory (functions
    // share the arena above the state region), or never set: check what the
    // kernels would read.
    const plan::Buffer* buf = plan_->fb().buffers()->Get(spec->buffer());
    std::vector<uint8_t> bytes(buf->size_bytes());
    if (auto s = backend_->CopyOut(buf->offset(), bytes.data(), bytes.size()); !s.ok()) return s;
    int64_t given = -1;
    if (grows >= 0) {
      const auto& symbols = symbol_values_[f.name];
      auto found = symbols.find(grows);
      given = found != symbols.end() ? found->second : INT64_MAX;  // not given smaller: all
    }
    if (auto s = CheckValueRange(f, *spec, bytes.data(), plan::ToVector(spec->shape()), given); !s.ok()) {
      std::string why = state[i] == InputState::kNeverSet ? "; the input was never set"
                        : state[i] == InputState::kChecked
                            ? ""
                            : absl::StrCat("; it was set before function '", clobbered_by_[f.name],
                                           "' ran, which reuses its memory: set it again");
      return absl::Status(s.code(), absl::StrCat(s.message(), why));
    }
    state[i] = InputState::kChecked;
  }
  // Running `f` may overwrite the inputs of every other function.
  for (auto& [name, other] : input_state_) {
    if (name == f.name) continue;
    bool set = false;
    for (InputState& st : other) {
      if (st == InputState::kChecked) st = InputState::kClobbered;
      set |= st != InputState::kNeverSet;
    }
    if (set) clobbered_by_[name] = f.name;
  }
  return absl::OkStatus();
}

absl::Status Session::Run(std::string_view function) {
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  auto fn = plan_->FindFunction(function);
  if (!fn.ok()) return fn.status();
  const Function& f = **fn;
  if (auto s = CheckInputsBeforeRun(f); !s.ok()) return s;
  size_t n = f.launches.size();
  stats_.function = f.name;
  stats_.launch_ms.assign(options_.profile_launches ? n : 0, 0.0);
  auto annotate = [&](const absl::Status& s, size_t i) {
    std::string where = absl::StrCat(Prefix(f), "launch ", i);
    const plan::Launch* la = f.launches[i];
    if (la->location() && la->location()->size() > 0) absl::StrAppend(&where, " (", la->location()->str(), ")");
    return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
  };
  // The tokens this request gives (inputs given smaller along symbolic
  // dimensions): token-major launches run only theirs.
  const auto& given = symbol_values_[f.name];
  auto symbol = [&](int32_t sym, uint64_t max) {
    auto it = sym >= 0 ? given.find(sym) : given.end();
    return it == given.end() ? static_cast<int64_t>(max) : it->second;
  };
  auto start = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    std::optional<LaunchWindow> window;
    if (const plan::TokenGrid* g = f.launches[i]->tokens())
      window = TokenWindow(*f.launches[i], symbol(g->batch_symbol(), g->max_batch()),
                           symbol(g->seq_symbol(), g->max_seq()));
    if (auto s = backend_->Launch(*f.launches[i], window ? &*window : nullptr); !s.ok())
      return annotate(s, i);
    if (options_.profile_launches) {
      if (auto s = backend_->Synchronize(); !s.ok()) return annotate(s, i);
      stats_.launch_ms[i] = ms(Clock::now() - t0);
    }
  }
  if (auto s = backend_->Synchronize(); !s.ok())
    return absl::Status(s.code(), absl::StrCat(Prefix(f), s.message()));
  stats_.total_ms = ms(Clock::now() - start);
  ++stats_.runs;
  return absl::OkStatus();
}

absl::StatusOr<HostTensor> Session::GetOutput(std::string_view function, std::string_view name) const {
  auto fn = plan_->FindFunction(function);
  if (!fn.ok()) return fn.status();
  auto index = plan_->FindOutput(function, name);
  if (!index.ok()) return index.status();
  const plan::TensorSpec* spec = (*fn)->outputs[*index];
  HostTensor t;
  t.dtype = static_cast<DType>(spec->dtype());
  t.shape = plan::ToVector(spec->shape());
  const plan::Buffer* buf = plan_->fb().buffers()->Get(spec->buffer());
  t.bytes.resize(buf->size_bytes());
  if (auto s = backend_->CopyOut(buf->offset(), t.bytes.data(), t.bytes.size()); !s.ok()) return s;
  // Slice symbolic dimensions to the sizes the inputs were given.
  const auto* syms = spec->dim_symbols();
  auto found = symbol_values_.find(std::string((*fn)->name));
  if (!syms || syms->size() != t.shape.size() || found == symbol_values_.end()) return t;
  std::vector<int64_t> shape = t.shape;
  for (size_t d = 0; d < shape.size(); ++d)
    if (int32_t s = syms->Get(d); s >= 0)
      if (auto v = found->second.find(s); v != found->second.end()) shape[d] = v->second;
  if (shape == t.shape) return t;
  HostTensor out;
  out.dtype = t.dtype;
  out.shape = shape;
  out.bytes.resize(static_cast<size_t>(out.num_elements()) * DTypeSize(t.dtype));
  CopyBox(t.bytes.data(), t.shape, out.bytes.data(), shape, DTypeSize(t.dtype), /*to_larger=*/false);
  return out;
}

absl::StatusOr<std::vector<HostTensor>> Session::Call(
    std::string_view function, const std::vector<std::pair<std::string, HostTensor>>& inputs) {
  auto fn = plan_->FindFunction(function);
  if (!fn.ok()) return fn.status();
  const Function& f = **fn;
  for (size_t i = 0; i < inputs.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (inputs[i].first == inputs[j].first)
        return absl::InvalidArgumentError(absl::StrCat(Prefix(f), "input '", inputs[i].first, "' given twice"));
  for (const plan::TensorSpec* spec : f.inputs) {
    bool given = false;
    for (const auto& in : inputs) given |= in.first == spec->name()->string_view();
    if (!given)
      return absl::InvalidArgumentError(absl::StrCat(Prefix(f), "missing input '", spec->name()->str(), "'"));
  }
  for (const auto& [name, tensor] : inputs)
    if (auto s = SetInput(function, name, tensor); !s.ok()) return s;
  if (auto s = Run(function); !s.ok()) return s;
  std::vector<HostTensor> outputs;
  for (const plan::TensorSpec* spec : f.outputs) {
    auto t = GetOutput(function, spec->name()->string_view());
    if (!t.ok()) return t.status();
    outputs.push_back(std::move(*t));
  }
  return outputs;
}

absl::StatusOr<std::map<std::string, HostTensor>> Session::CallByName(
    std::string_view function, const std::vector<std::pair<std::string, HostTensor>>& inputs) {
  auto outputs = Call(function, inputs);
  if (!outputs.ok()) return outputs.status();
  const Function& f = **plan_->FindFunction(function);
  std::map<std::string, HostTensor> named;
  for (size_t i = 0; i < outputs->size(); ++i) named.emplace(f.output_info[i].name, std::move((*outputs)[i]));
  return named;
}

absl::Status Session::ResetState() {
  return backend_->Zero(0, plan_->fb().state_size());
}

}  // namespace kiln
