//===- PlanEmitter.cpp - Kernel-level @forward -> FlatBuffer plan ---------===//
//
// Every tensor value gets a buffer: function arguments are inputs, returned
// values are outputs, `kiln.weight` results are weights, kernel results are
// intermediates; `kiln_kernel.view` aliases its operand's buffer. Launches
// are numbered in program order; liveness over that order drives the arena
// plan.
//
// What the runtime verifies comes from here too: per kernel, how it uses
// each binding and the grids it was generated for (programs, scalar ranges,
// the bytes each binding must hold); per integer input, the values kernels
// may index memory with (the intersection over its uses); checksums of the
// executables and of the whole file (the trailer, plan.fbs).
//
//===----------------------------------------------------------------------===//
#include "kiln/Compiler/Plan.h"

#include "kernel/IR/KernelDialect.h"
#include "kiln/IR/KilnDialect.h"
#include "kiln/Kernels/Heuristics.h"

#include "plan_generated.h"
#include "plan_support.h"
#include "weight_hash.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/Path.h"

#include <filesystem>
#include <set>

using namespace mlir;
namespace fb = kiln::plan;

namespace kiln {

namespace {

std::optional<fb::DType> toDType(Type t) {
  if (t.isF32())
    return fb::DType::f32;
  if (t.isF16())
    return fb::DType::f16;
  if (t.isBF16())
    return fb::DType::bf16;
  if (t.isInteger(32))
    return fb::DType::i32;
  if (t.isInteger(64))
    return fb::DType::i64;
  if (t.isInteger(8))
    return fb::DType::u8;
  if (isa<Float8E4M3FNType>(t))
    return fb::DType::f8e4m3;
  return std::nullopt;
}

uint64_t byteSize(RankedTensorType t) {
  return static_cast<uint64_t>(t.getNumElements()) *
         ((t.getElementTypeBitWidth() + 7) / 8);
}

struct BufferInfo {
  fb::BufferKind kind = fb::BufferKind::intermediate;
  uint64_t size = 0;
  uint32_t first = UINT32_MAX, last = 0;
  uint32_t weight = 0;
  std::vector<uint32_t> weightList;
  /// State buffers: the state's name and type (Buffer.name/dtype/shape).
  std::string name;
  RankedTensorType type;
};

/// One launch shape of a kernel (fb::KernelGrid).
struct GridInfo {
  uint64_t programs = 0;
  std::vector<int64_t> scalarMin, scalarMax;
  std::vector<uint64_t> bytes;
  std::vector<uint32_t> tableEntries; ///< empty: no table bindings
  bool operator==(const GridInfo &o) const {
    return programs == o.programs && scalarMin == o.scalarMin &&
           scalarMax == o.scalarMax && bytes == o.bytes &&
           tableEntries == o.tableEntries;
  }
};

/// What a kernel needs of every launch that runs it.
struct KernelMeta {
  bool known = false;
  std::vector<fb::BindingAccess> access;
  std::vector<int32_t> inPlaceOf; ///< empty: no binding is in place
  std::vector<GridInfo> grids;
};

/// The values an integer input may hold: the intersection of what every
/// launch reading it needs (kernel::OperandValueRange).
struct InputRange {
  bool constrained = false;
  int64_t min = INT64_MIN, max = INT64_MAX;
  /// Why: the notes of the uses that set each bound (one, when one use's
  /// range is the intersection).
  std::string note;
  bool maxIsCapacity = false;
  /// A dimension symbol of the function's tokens (their sequence), or -1:
  /// `max` holds for a call that gives all of the compiled positions; one
  /// that gives n fewer may use values up to max + n
  /// (TensorSpec.range_max_grows_with).
  int32_t growsWith = -1;
};

/// An e4m3 weight holding a NaN code: the FP8 kernels read weights as
/// finite (docs/fp8.md), so the plan is refused.
LogicalResult nanWeightError(ModuleOp module, const WeightSource &w,
                             uint64_t element) {
  std::string where = w.shape.size() == 2 && w.shape[1] > 0
                          ? "[" + std::to_string(element / w.shape[1]) + ", " +
                                std::to_string(element % w.shape[1]) + "]"
                          : "element " + std::to_string(element);
  return module.emitError() << "weight '" << w.name << "'"
                            << (w.path.empty() ? "" : " in " + w.path)
                            << " holds an e4m3 NaN code (0x7F / 0xFF) at "
                            << where << "; FP8 weights must be finite";
}

/// XXH64 of every weight's bytes, on opts.hashThreads threads; unless
/// opts.quiet, progress on stderr every 2 s (a small model is done before the
/// first report and prints nothing).
FailureOr<std::map<const WeightSource *, uint64_t>>
hashWeights(ModuleOp module, const std::vector<const WeightSource *> &weights,
            const PlanOptions &opts) {
  std::vector<fb::HashJob> jobs;
  for (const WeightSource *w : weights)
    jobs.push_back({w->data, w->size, isa<Float8E4M3FNType>(w->elementType)});
  bool reported = false;
  auto gb = [](uint64_t bytes) { return static_cast<double>(bytes) / 1e9; };
  auto progress = [&](const fb::HashProgress &p) {
    double rate = p.seconds > 0 ? gb(p.done_bytes) / p.seconds : 0;
    if (!p.finished)
      llvm::errs() << llvm::format(
          "kiln-compile: hashing weights: %.1f of %.1f GB (%.2f GB/s)\n",
          gb(p.done_bytes), gb(p.total_bytes), rate);
    else if (reported)
      llvm::errs() << llvm::format(
          "kiln-compile: hashed %.1f GB of weights in %.1f s (%.2f GB/s)\n",
          gb(p.total_bytes), p.seconds, rate);
    reported = true;
  };
  std::vector<uint64_t> nanAt;
  std::vector<uint64_t> hashes = fb::ParallelXxh64(
      jobs, opts.hashThreads,
      opts.quiet ? std::function<void(const fb::HashProgress &)>() : progress,
      2.0, &nanAt);
  std::map<const WeightSource *, uint64_t> out;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (nanAt[i] != fb::HashJob::kNoNaN)
      return nanWeightError(module, *weights[i], nanAt[i]);
    out[weights[i]] = hashes[i];
  }
  return out;
}

std::string relativeTo(const std::string &path, const std::string &planPath) {
  std::error_code ec;
  auto planDir = std::filesystem::absolute(
      std::filesystem::path(planPath).parent_path(), ec);
  auto abs = std::filesystem::absolute(path, ec);
  if (ec)
    return path;
  auto rel = std::filesystem::relative(abs, planDir, ec);
  if (ec || rel.empty())
    return abs.string();
  return rel.string();
}

} // namespace

namespace {

/// Buffers and launches of one entry function.
struct FunctionPlan {
  std::string name;
  func::FuncOp func;
  std::vector<Operation *> launches;
  llvm::DenseMap<Value, uint32_t> bufferOf;
  /// The function's tokens: its first [batch, seq] integer input whose
  /// batch or sequence a caller may give smaller (`kiln.dims`); batch 0
  /// when there is none. Token-major launches over them follow the request.
  struct {
    int64_t batch = 0, seq = 0;
    int32_t batchSymbol = -1, seqSymbol = -1;
  } tokens;
};

/// The token layout of `fn` (FunctionPlan::tokens).
void findTokens(FunctionPlan &fp) {
  func::FuncOp fn = fp.func;
  for (BlockArgument arg : fn.getArguments()) {
    auto t = cast<RankedTensorType>(arg.getType());
    auto dims = fn.getArgAttrOfType<DenseI64ArrayAttr>(arg.getArgNumber(),
                                                       "kiln.dims");
    if (t.getRank() != 2 || !isa<IntegerType>(t.getElementType()) || !dims ||
        dims.size() != 2 || (dims[0] < 0 && dims[1] < 0))
      continue;
    fp.tokens.batch = t.getDimSize(0);
    fp.tokens.seq = t.getDimSize(1);
    fp.tokens.batchSymbol = static_cast<int32_t>(dims[0]);
    fp.tokens.seqSymbol = static_cast<int32_t>(dims[1]);
    return;
  }
}

} // namespace

/// The value range of input `arg` from every launch that reads it (through
/// views): an error when a launch may index memory with it in a way no
/// range describes, when no value satisfies every launch, or when the
/// zeros the runtime pads a smaller input with fall outside it.
static FailureOr<InputRange>
deriveInputRange(const FunctionPlan &fp, BlockArgument arg, StringRef name,
                 const std::vector<int32_t> &symbols) {
  func::FuncOp fn = fp.func;
  InputRange r;
  // Whether every bounding use is a start position over the function's
  // token positions in a token-major launch: the runtime runs only the
  // positions a request gives, so [start, start + given) must fit.
  bool followsTokens = fp.tokens.seqSymbol >= 0 && fp.tokens.seq > 1;
  int64_t tokenCount = fp.tokens.batch * fp.tokens.seq;
  kernel::OperandValueRange minUse, maxUse; // the uses setting each bound
  SmallVector<Value> work{arg};
  while (!work.empty()) {
    Value v = work.pop_back_val();
    for (OpOperand &use : v.getUses()) {
      Operation *user = use.getOwner();
      if (auto view = dyn_cast<kernel::ViewOp>(user)) {
        work.push_back(view.getResult());
        continue;
      }
      auto k = dyn_cast<kernel::KernelOpInterface>(user);
      if (!k)
        continue; // func.return: refused with the outputs
      kernel::OperandValueRange u =
          k.getOperandValueRange(use.getOperandNumber());
      if (u.kind == kernel::OperandValueRange::Kind::Any)
        continue;
      if (u.kind == kernel::OperandValueRange::Kind::Unknown)
        return user->emitError()
               << "input '" << name << "' is operand "
               << use.getOperandNumber() << " of this launch, which may "
               << "index memory with its values, and no value range can be "
                  "derived for it (the op does not say how it uses integer "
                  "operands), so the runtime could not check them";
      followsTokens = followsTokens && u.capacity &&
                      u.span == fp.tokens.seq &&
                      k.getProgramsPerToken(tokenCount) > 0;
      if (!r.constrained || u.min > minUse.min)
        minUse = u;
      if (!r.constrained || u.max < maxUse.max)
        maxUse = u;
      r.constrained = true;
    }
  }
  if (!r.constrained)
    return r;
  r.min = minUse.min;
  r.max = maxUse.max;
  r.maxIsCapacity = maxUse.capacity;
  if (followsTokens)
    r.growsWith = fp.tokens.seqSymbol;
  if (r.min > r.max)
    return fn.emitError() << "input '" << name
                          << "': no value is valid for every launch that "
                             "reads it: they need at least "
                          << r.min << " (" << minUse.note << ") and at most "
                          << r.max << " (" << maxUse.note << ")";
  r.note = maxUse.min == r.min   ? maxUse.note
           : minUse.max == r.max ? minUse.note
                                 : minUse.note + "; " + maxUse.note;
  for (auto [d, sym] : llvm::enumerate(symbols))
    if (sym >= 0 && (r.min > 0 || r.max < 0))
      return fn.emitError()
             << "input '" << name << "' may be given smaller along dimension "
             << d << " and is then padded with zeros, but 0 is outside its "
             << "value range [" << r.min << ", " << r.max << "]";
  return r;
}

/// What each kernel needs of its launches: binding uses from the op, one
/// grid per distinct launch shape (programs, scalar ranges, bytes per
/// binding, weight tables). Launches of one kernel (the same code) must
/// agree on the uses.
static FailureOr<std::vector<KernelMeta>>
describeKernels(const KernelTable &table, std::vector<FunctionPlan> &fns,
                const std::vector<BufferInfo> &buffers) {
  std::vector<KernelMeta> meta(table.kernels.size());
  for (FunctionPlan &fp : fns) {
    for (Operation *op : fp.launches) {
      auto k = cast<kernel::KernelOpInterface>(op);
      unsigned kidx = table.launchKernel.lookup(op);
      unsigned nOps = op->getNumOperands();
      std::vector<Value> values(op->operand_begin(), op->operand_end());
      values.insert(values.end(), op->result_begin(), op->result_end());
      std::vector<fb::BindingAccess> access(values.size(),
                                            fb::BindingAccess::read);
      std::vector<int32_t> inPlaceOf(values.size(), -1);
      for (unsigned i = 0; i < nOps; ++i)
        if (k.isStateOperand(i))
          access[i] = fb::BindingAccess::state;
      for (unsigned r = 0; r < op->getNumResults(); ++r) {
        if (std::optional<unsigned> o = k.getInPlaceOperandOf(r)) {
          access[nOps + r] = access[*o] = fb::BindingAccess::state;
          inPlaceOf[nOps + r] = static_cast<int32_t>(*o);
        } else {
          access[nOps + r] = fb::BindingAccess::write;
        }
      }
      GridInfo g;
      g.programs = static_cast<uint64_t>(k.getNumPrograms());
      for (auto [lo, hi] : k.getLaunchScalarRanges()) {
        g.scalarMin.push_back(lo);
        g.scalarMax.push_back(hi);
      }
      bool tables = false;
      for (auto [i, v] : llvm::enumerate(values)) {
        auto type = cast<RankedTensorType>(v.getType());
        const BufferInfo &b = buffers[fp.bufferOf.lookup(v)];
        g.bytes.push_back(byteSize(type));
        uint32_t entries = 0;
        if (b.kind == fb::BufferKind::weight_table) {
          entries = static_cast<uint32_t>(b.weightList.size());
          if (type.getRank() < 1 || type.getDimSize(0) != entries)
            return op->emitError()
                   << "binding " << i << " is a table of " << entries
                   << " weights, but the kernel reads it as " << type;
          tables = true;
        }
        g.tableEntries.push_back(entries);
        if (access[i] == fb::BindingAccess::state &&
            b.kind != fb::BufferKind::state)
          return op->emitError()
                 << "binding " << i
                 << " holds the kernel's persistent state, so it must be a "
                    "state buffer (kiln.state)";
      }
      if (!tables)
        g.tableEntries.clear();
      bool inPlace = llvm::any_of(inPlaceOf, [](int32_t j) { return j >= 0; });
      if (!inPlace)
        inPlaceOf.clear();
      KernelMeta &m = meta[kidx];
      if (!m.known) {
        m.known = true;
        m.access = access;
        m.inPlaceOf = inPlaceOf;
      } else if (m.access != access || m.inPlaceOf != inPlaceOf) {
        return op->emitError()
               << "kernel '" << table.kernels[kidx].name
               << "': launches of the same kernel disagree on how they use "
                  "their bindings";
      }
      if (llvm::find(m.grids, g) == m.grids.end())
        m.grids.push_back(std::move(g));
    }
  }
  return meta;
}

FailureOr<std::vector<uint8_t>>
emitPlan(ModuleOp module, const KernelTable &table,
         const std::map<std::string, WeightSource> &weights,
         const std::optional<CpuExecutable> &cpu,
         const std::optional<CudaExecutable> &cuda, const PlanOptions &opts) {
  std::vector<BufferInfo> buffers;
  std::vector<const WeightSource *> weightList;
  std::map<std::string, uint32_t> weightIndex, weightBuffer, stateBuffer;
  std::map<std::vector<uint32_t>, uint32_t> tableBuffer;

  auto weightOf = [&](const std::string &name) -> int64_t {
    auto it = weights.find(name);
    if (it == weights.end())
      return -1;
    auto [wit, inserted] = weightIndex.try_emplace(name, weightList.size());
    if (inserted)
      weightList.push_back(&it->second);
    return wit->second;
  };
  auto newBuffer = [&](Value v, fb::BufferKind kind) -> uint32_t {
    BufferInfo b;
    b.kind = kind;
    b.size = byteSize(cast<RankedTensorType>(v.getType()));
    buffers.push_back(b);
    return buffers.size() - 1;
  };

  // Entry functions: forward first.
  std::vector<FunctionPlan> fns;
  for (auto fn : module.getOps<func::FuncOp>()) {
    FunctionPlan fp;
    fp.name = fn.getSymName().str();
    fp.func = fn;
    findTokens(fp);
    if (fp.name == "forward")
      fns.insert(fns.begin(), std::move(fp));
    else
      fns.push_back(std::move(fp));
  }
  if (fns.empty() || fns.front().name != "forward")
    return module.emitError("the module has no @forward");

  for (FunctionPlan &fp : fns) {
    func::FuncOp fn = fp.func;
    for (BlockArgument arg : fn.getArguments()) {
      uint32_t id = newBuffer(arg, fb::BufferKind::input);
      buffers[id].first = 0;
      fp.bufferOf[arg] = id;
    }
    WalkResult walk = fn.walk([&](Operation *op) -> WalkResult {
      if (auto w = dyn_cast<graph::WeightOp>(op)) {
        std::string name = w.getName().str();
        int64_t index = weightOf(name);
        if (index < 0)
          return op->emitError() << "weight '" << name << "' was not resolved";
        auto [bit, inserted] = weightBuffer.try_emplace(name, buffers.size());
        if (inserted)
          buffers[newBuffer(w.getResult(), fb::BufferKind::weight)].weight =
              index;
        fp.bufferOf[w.getResult()] = bit->second;
        return WalkResult::advance();
      }
      if (auto ws = dyn_cast<graph::WeightStackOp>(op)) {
        std::vector<uint32_t> list;
        for (Attribute a : ws.getNames()) {
          std::string name = cast<StringAttr>(a).getValue().str();
          int64_t index = weightOf(name);
          if (index < 0)
            return op->emitError()
                   << "weight '" << name << "' was not resolved";
          list.push_back(index);
        }
        auto [bit, inserted] = tableBuffer.try_emplace(list, buffers.size());
        if (inserted)
          buffers[newBuffer(ws.getResult(), fb::BufferKind::weight_table)]
              .weightList = list;
        fp.bufferOf[ws.getResult()] = bit->second;
        return WalkResult::advance();
      }
      if (auto st = dyn_cast<graph::StateOp>(op)) {
        std::string name = st.getName().str();
        auto [bit, inserted] = stateBuffer.try_emplace(name, buffers.size());
        if (inserted) {
          BufferInfo &b = buffers[newBuffer(st.getResult(), fb::BufferKind::state)];
          b.name = name;
          b.type = cast<RankedTensorType>(st.getType());
        }
        else if (buffers[bit->second].size !=
                 byteSize(cast<RankedTensorType>(st.getType())))
          return op->emitError() << "state '" << name
                                 << "' has different sizes in two functions";
        fp.bufferOf[st.getResult()] = bit->second;
        return WalkResult::advance();
      }
      if (auto view = dyn_cast<kernel::ViewOp>(op)) {
        fp.bufferOf[view.getResult()] = fp.bufferOf.lookup(view.getInput());
        return WalkResult::advance();
      }
      if (auto k = dyn_cast<kernel::KernelOpInterface>(op)) {
        uint32_t idx = fp.launches.size();
        fp.launches.push_back(op);
        for (Value v : op->getOperands()) {
          auto found = fp.bufferOf.find(v);
          if (found == fp.bufferOf.end())
            return op->emitError(
                "operand has no buffer (unsupported producer)");
          BufferInfo &b = buffers[found->second];
          b.first = std::min(b.first, idx);
          b.last = std::max(b.last, idx);
        }
        for (auto [i, v] : llvm::enumerate(op->getResults())) {
          if (std::optional<unsigned> inPlace = k.getInPlaceOperandOf(i)) {
            // In place: the result is the cache's (state) buffer.
            uint32_t id = fp.bufferOf.lookup(op->getOperand(*inPlace));
            if (buffers[id].kind != fb::BufferKind::state)
              return op->emitError("an in-place launch must update a state "
                                   "buffer");
            fp.bufferOf[v] = id;
            continue;
          }
          uint32_t id = newBuffer(v, fb::BufferKind::intermediate);
          buffers[id].first = idx;
          buffers[id].last = idx;
          fp.bufferOf[v] = id;
        }
        return WalkResult::advance();
      }
      if (isa<func::ReturnOp, func::FuncOp>(op))
        return WalkResult::advance();
      return op->emitError() << "'" << op->getName()
                             << "' cannot be emitted into a plan (expected "
                                "kiln_kernel launches)";
    });
    if (walk.wasInterrupted())
      return failure();
    if (fp.launches.empty())
      return fn.emitError() << "@" << fp.name
                            << " computes nothing (no kernel launches)";
    uint32_t lastLaunch = fp.launches.size() - 1;
    for (BlockArgument arg : fn.getArguments())
      buffers[fp.bufferOf[arg]].last = lastLaunch;
    auto ret = cast<func::ReturnOp>(fn.getBody().front().getTerminator());
    for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
      BufferInfo &b = buffers[fp.bufferOf[v]];
      if (b.kind != fb::BufferKind::intermediate &&
          b.kind != fb::BufferKind::output) {
        // Inputs, weights and state are not computed values.
        auto name = fn.getResultAttrOfType<StringAttr>(i, "kiln.name");
        return fn.emitError()
               << "output '" << (name ? name.getValue() : "?")
               << "' is an input, a weight or a state, not a computed value";
      }
      b.kind = fb::BufferKind::output;
      b.last = lastLaunch;
    }
  }

  // The state region, then each function's arena plan above it (functions
  // run one at a time, so their intermediates may share addresses).
  std::vector<uint64_t> offsets(buffers.size(), 0);
  uint64_t stateSize = 0;
  for (auto [id, b] : llvm::enumerate(buffers)) {
    if (b.kind != fb::BufferKind::state)
      continue;
    offsets[id] = stateSize;
    stateSize += (std::max<uint64_t>(b.size, 1) + 255) / 256 * 256;
    b.first = 0;
  }
  uint64_t arenaSize = stateSize, peak = stateSize;
  for (FunctionPlan &fp : fns) {
    std::vector<ArenaRequest> requests;
    std::vector<uint32_t> ids;
    llvm::DenseSet<uint32_t> seen;
    for (auto &kv : fp.bufferOf) {
      uint32_t id = kv.second;
      BufferInfo &b = buffers[id];
      if (b.kind == fb::BufferKind::weight ||
          b.kind == fb::BufferKind::weight_table ||
          b.kind == fb::BufferKind::state || !seen.insert(id).second)
        continue;
      if (b.first == UINT32_MAX)
        b.first = 0;
      requests.push_back({b.size, b.first, b.last, 0});
      ids.push_back(id);
    }
    // Deterministic order regardless of the map's iteration order.
    std::vector<size_t> order(ids.size());
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t c) { return ids[a] < ids[c]; });
    std::vector<ArenaRequest> sorted;
    std::vector<uint32_t> sortedIds;
    for (size_t i : order) {
      sorted.push_back(requests[i]);
      sortedIds.push_back(ids[i]);
    }
    auto [fnArena, fnPeak] = planArena(sorted);
    for (auto [r, id] : llvm::zip(sorted, sortedIds))
      offsets[id] = stateSize + r.offset;
    arenaSize = std::max(arenaSize, stateSize + fnArena);
    peak = std::max(peak, stateSize + fnPeak);
  }

  FailureOr<std::vector<KernelMeta>> meta =
      describeKernels(table, fns, buffers);
  if (failed(meta))
    return failure();

  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  std::vector<flatbuffers::Offset<fb::Buffer>> fbBuffers;
  for (auto [id, b] : llvm::enumerate(buffers)) {
    flatbuffers::Offset<flatbuffers::Vector<uint32_t>> list = 0;
    if (!b.weightList.empty())
      list = fbb.CreateVector(b.weightList);
    flatbuffers::Offset<flatbuffers::String> name = 0;
    flatbuffers::Offset<flatbuffers::Vector<int64_t>> shape = 0;
    fb::DType dtype = fb::DType::f32;
    if (b.type) {
      name = fbb.CreateString(b.name);
      shape = fbb.CreateVector(b.type.getShape().vec());
      dtype = toDType(b.type.getElementType()).value_or(fb::DType::f32);
    }
    fbBuffers.push_back(fb::CreateBuffer(
        fbb, b.kind, b.size, offsets[id], b.weight, list,
        b.first == UINT32_MAX ? 0 : b.first, b.last, name, dtype, shape));
  }

  // Kernels.
  std::vector<flatbuffers::Offset<fb::Kernel>> fbKernels;
  for (auto [kidx, k] : llvm::enumerate(table.kernels)) {
    const KernelMeta &m = (*meta)[kidx];
    std::vector<flatbuffers::Offset<fb::KernelGrid>> grids;
    for (const GridInfo &g : m.grids)
      grids.push_back(fb::CreateKernelGridDirect(
          fbb, g.programs, &g.scalarMin, &g.scalarMax, &g.bytes,
          g.tableEntries.empty() ? nullptr : &g.tableEntries));
    auto access = fbb.CreateVector(m.access);
    auto inPlace = m.inPlaceOf.empty() ? 0 : fbb.CreateVector(m.inPlaceOf);
    auto gridsOff = fbb.CreateVector(grids);
    auto ops = fbb.CreateVectorOfStrings(k.fusedOps);
    auto locVec = fbb.CreateVectorOfStrings(k.locations);
    auto name = fbb.CreateString(k.name);
    auto config = fbb.CreateString(k.config);
    fb::KernelBuilder kb(fbb);
    kb.add_name(name);
    kb.add_source_ops(ops);
    kb.add_locations(locVec);
    kb.add_config(config);
    kb.add_num_buffers(k.numBuffers);
    kb.add_num_scalars(k.numScalars);
    kb.add_binding_access(access);
    kb.add_in_place_of(inPlace);
    kb.add_grids(gridsOff);
    fbKernels.push_back(kb.Finish());
  }

  // Launches and tensor specs of each function.
  auto emitLaunches = [&](FunctionPlan &fp) {
    std::vector<flatbuffers::Offset<fb::Launch>> out;
    for (Operation *op : fp.launches) {
      auto k = cast<kernel::KernelOpInterface>(op);
      std::vector<uint32_t> bindings;
      for (Value v : op->getOperands())
        bindings.push_back(fp.bufferOf[v]);
      for (Value v : op->getResults())
        bindings.push_back(fp.bufferOf[v]);
      SmallVector<int64_t> scalars = k.getLaunchScalars();
      std::vector<int64_t> sc(scalars.begin(), scalars.end());
      std::string loc = locationToString(op->getLoc());
      flatbuffers::Offset<fb::TokenGrid> tokens = 0;
      if (fp.tokens.batch > 0)
        if (int64_t perToken = k.getProgramsPerToken(fp.tokens.batch *
                                                     fp.tokens.seq)) {
          auto [tokensScalar, seqScalar] = k.getTokenScalarSlots();
          tokens = fb::CreateTokenGrid(
              fbb, perToken, fp.tokens.batch, fp.tokens.seq,
              fp.tokens.batchSymbol, fp.tokens.seqSymbol, tokensScalar,
              seqScalar);
        }
      uint32_t blockX = cuda ? static_cast<uint32_t>(kernels::chooseGpuLaunchBlock(
                                   k.getNumPrograms()))
                             : 0;
      out.push_back(fb::CreateLaunchDirect(
          fbb, table.launchKernel.lookup(op), &bindings, &sc,
          static_cast<uint64_t>(k.getNumPrograms()), loc.c_str(), tokens,
          blockX));
    }
    return out;
  };
  // `kiln.dims` (argument/result attribute): per dimension, -1 or the
  // symbol of a dimension the caller may give smaller (batch, sequence).
  auto symbolsOf = [](Value v, DictionaryAttr attrs) {
    std::vector<int32_t> syms;
    auto t = cast<RankedTensorType>(v.getType());
    if (auto dims = attrs ? attrs.getAs<DenseI64ArrayAttr>("kiln.dims")
                          : DenseI64ArrayAttr())
      if (dims.size() == t.getRank())
        for (int64_t d : dims.asArrayRef())
          syms.push_back(static_cast<int32_t>(d));
    return syms;
  };
  auto tensorSpec = [&](FunctionPlan &fp, StringRef name, Value v,
                        DictionaryAttr attrs,
                        const InputRange *range = nullptr) {
    auto t = cast<RankedTensorType>(v.getType());
    std::vector<int64_t> shape(t.getShape().begin(), t.getShape().end());
    std::vector<int32_t> syms = symbolsOf(v, attrs);
    std::optional<fb::ValueRange> vr;
    std::string note;
    int32_t growsWith = -1;
    if (range && range->constrained) {
      growsWith = range->growsWith;
      vr = fb::ValueRange(range->min, range->max);
      note = range->note;
      if (growsWith >= 0)
        note += " (or as many tokens as it gives)";
      // Hugging Face models size their caches by --max-seq.
      if (range->maxIsCapacity && llvm::sys::fs::is_directory(opts.sourcePath))
        note += "; compile with a larger --max-seq";
    }
    // `kiln.symbol_limits` (module attribute): per symbol, what bounds it.
    std::vector<flatbuffers::Offset<flatbuffers::String>> limits;
    if (auto sl = module->getAttrOfType<ArrayAttr>("kiln.symbol_limits"))
      for (int32_t sym : syms) {
        auto s = sym >= 0 && sym < static_cast<int32_t>(sl.size())
                     ? dyn_cast<StringAttr>(sl[sym])
                     : StringAttr();
        limits.push_back(fbb.CreateString(s ? s.str() : ""));
      }
    return fb::CreateTensorSpecDirect(
        fbb, name.str().c_str(), *toDType(t.getElementType()), &shape,
        fp.bufferOf[v], syms.empty() ? nullptr : &syms,
        vr ? &*vr : nullptr, note.empty() ? nullptr : note.c_str(),
        limits.empty() ? nullptr : &limits, growsWith);
  };
  struct Specs {
    std::vector<flatbuffers::Offset<fb::TensorSpec>> inputs, outputs;
  };
  auto emitSpecs = [&](FunctionPlan &fp) -> FailureOr<Specs> {
    Specs s;
    func::FuncOp fn = fp.func;
    for (BlockArgument arg : fn.getArguments()) {
      auto name = fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(),
                                                  "kiln.name");
      if (!toDType(cast<RankedTensorType>(arg.getType()).getElementType()))
        return fn.emitError("unsupported input element type");
      DictionaryAttr attrs = fn.getArgAttrDict(arg.getArgNumber());
      FailureOr<InputRange> range = deriveInputRange(
          fp, arg, name.getValue(), symbolsOf(arg, attrs));
      if (failed(range))
        return failure();
      s.inputs.push_back(
          tensorSpec(fp, name.getValue(), arg, attrs, &*range));
    }
    auto ret = cast<func::ReturnOp>(fn.getBody().front().getTerminator());
    for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
      auto name = fn.getResultAttrOfType<StringAttr>(i, "kiln.name");
      s.outputs.push_back(
          tensorSpec(fp, name.getValue(), v, fn.getResultAttrDict(i)));
    }
    return s;
  };
  std::vector<flatbuffers::Offset<fb::Launch>> fbLaunches =
      emitLaunches(fns.front());
  auto mainSpecs = emitSpecs(fns.front());
  if (failed(mainSpecs))
    return failure();
  std::vector<flatbuffers::Offset<fb::Function>> fbFunctions;
  for (size_t i = 1; i < fns.size(); ++i) {
    auto launches = emitLaunches(fns[i]);
    auto specs = emitSpecs(fns[i]);
    if (failed(specs))
      return failure();
    fbFunctions.push_back(fb::CreateFunctionDirect(
        fbb, fns[i].name.c_str(), &launches, &specs->inputs,
        &specs->outputs));
  }

  // Weights: by reference (default) or packed. Referenced ones are hashed
  // in parallel first; each file they lie in gets its identity.
  std::vector<const WeightSource *> external;
  for (const WeightSource *w : weightList)
    if (w->data && !opts.embedWeights && !w->owned)
      external.push_back(w);
  FailureOr<std::map<const WeightSource *, uint64_t>> hashed =
      hashWeights(module, external, opts);
  if (failed(hashed))
    return failure();
  std::map<const WeightSource *, uint64_t> &hashes = *hashed;
  // Weights the plan holds (embedded, or quantized here) get the same check.
  for (const WeightSource *w : weightList)
    if (w->data && (opts.embedWeights || w->owned) &&
        isa<Float8E4M3FNType>(w->elementType)) {
      uint64_t at = fb::FirstE4M3NaN(w->data, w->size);
      if (at < w->size)
        return nanWeightError(module, *w, at);
    }
  std::vector<flatbuffers::Offset<fb::WeightFile>> fbFiles;
  std::set<std::string> filesSeen;
  for (const WeightSource *w : external) {
    std::string rel = relativeTo(w->path, opts.planPath);
    if (!filesSeen.insert(rel).second)
      continue;
    fbFiles.push_back(fb::CreateWeightFileDirect(
        fbb, rel.c_str(), w->fileSize, fb::kSampleBytes, fb::kSampleCount,
        fb::SampledXxh64(w->data - w->offset, w->fileSize, fb::kSampleBytes,
                         fb::kSampleCount)));
  }
  std::vector<uint8_t> packed;
  std::vector<flatbuffers::Offset<fb::Weight>> fbWeights;
  for (const WeightSource *w : weightList) {
    auto dtype = toDType(w->elementType);
    if (!dtype)
      return module.emitError() << "weight '" << w->name
                                << "' has an unsupported element type";
    std::vector<int64_t> shape = w->shape;
    uint64_t packedOffset = 0;
    flatbuffers::Offset<fb::ExternalData> ext = 0;
    if (!w->data) {
      // --no-weights: described, not present.
    } else if (opts.embedWeights || w->owned) {
      packedOffset = (packed.size() + 63) / 64 * 64;
      packed.resize(packedOffset);
      packed.insert(packed.end(), w->data, w->data + w->size);
    } else {
      std::string rel = relativeTo(w->path, opts.planPath);
      ext = fb::CreateExternalDataDirect(fbb, rel.c_str(), w->offset, w->size,
                                         w->fileSize, hashes.at(w));
    }
    auto nameOff = fbb.CreateString(w->name);
    auto shapeOff = fbb.CreateVector(shape);
    fb::WeightBuilder wb(fbb);
    wb.add_name(nameOff);
    wb.add_dtype(*dtype);
    wb.add_shape(shapeOff);
    wb.add_size_bytes(w->size);
    bool isPacked = w->data && (opts.embedWeights || w->owned);
    if (w->data && !isPacked)
      wb.add_external(ext);
    wb.add_packed_offset(packedOffset);
    wb.add_packed(isPacked);
    fbWeights.push_back(wb.Finish());
  }

  // Executables.
  std::vector<flatbuffers::Offset<fb::Executable>> exes;
  if (cpu) {
    std::vector<flatbuffers::Offset<fb::EntryPoint>> eps;
    for (auto [i, k] : llvm::enumerate(table.kernels))
      eps.push_back(fb::CreateEntryPointDirect(fbb, k.name.c_str(), i, 1, 0,
                                               cpu->phases.at(i)));
    fbb.ForceVectorAlignment(cpu->sharedObject.size(), 1, 64);
    auto bin = fbb.CreateVector(cpu->sharedObject);
    auto arch = fbb.CreateString(cpu->arch);
    auto cpuName = fbb.CreateString(cpu->cpu);
    auto features = fbb.CreateVectorOfStrings(cpu->features);
    auto epv = fbb.CreateVector(eps);
    fb::ExecutableBuilder eb(fbb);
    eb.add_target(fb::TargetKind::cpu);
    eb.add_arch(arch);
    eb.add_cpu(cpuName);
    eb.add_features(features);
    eb.add_binary(bin);
    eb.add_entry_points(epv);
    eb.add_checksum(fb::ExecutableChecksum(
        cpu->sharedObject.data(), cpu->sharedObject.size(), nullptr, 0));
    exes.push_back(eb.Finish());
  }
  if (cuda) {
    std::vector<flatbuffers::Offset<fb::EntryPoint>> eps;
    auto resources = [&](const CudaResources &r) {
      return r.hasResources
                 ? fb::CreateKernelResources(fbb, r.registers, r.spillStores,
                                             r.spillLoads, r.sharedBytes,
                                             r.constBytes)
                 : flatbuffers::Offset<fb::KernelResources>();
    };
    for (auto [i, e] : llvm::enumerate(cuda->entries)) {
      std::vector<flatbuffers::Offset<fb::TileVariant>> tiles;
      for (const CudaTileVariant &v : e.tiles) {
        std::vector<flatbuffers::Offset<fb::TileParam>> params;
        for (const CudaTileParam &p : v.params) {
          flatbuffers::Offset<fb::TensorMapSpec> map = 0;
          if (p.kind == CudaTileParam::TensorMap)
            map = fb::CreateTensorMapSpecDirect(
                fbb, static_cast<fb::DType>(p.dtype), &p.dims, &p.stridesBytes,
                &p.box, p.swizzleBytes, p.rowsDim, p.table);
          params.push_back(
              fb::CreateTileParam(fbb, static_cast<fb::TileParamKind>(p.kind),
                                  p.binding, map, p.rowBytes));
        }
        tiles.push_back(fb::CreateTileVariantDirect(
            fbb, v.name.c_str(), v.maxRows, v.threads, v.dynamicSharedBytes,
            v.rowsPerTile, v.columnTiles, &params, resources(v.resources),
            v.config.c_str()));
      }
      eps.push_back(fb::CreateEntryPointDirect(
          fbb, e.name.c_str(), i, e.blockX, resources(e), 1,
          tiles.empty() ? nullptr : &tiles, e.programsPerRow, e.rowsPerUnit));
    }
    fbb.ForceVectorAlignment(cuda->cubin.size(), 1, 64);
    auto bin = fbb.CreateVector(cuda->cubin);
    auto ptx = fbb.CreateString(cuda->ptx);
    auto arch = fbb.CreateString(cuda->arch);
    auto epv = fbb.CreateVector(eps);
    fb::ExecutableBuilder eb(fbb);
    eb.add_target(fb::TargetKind::cuda);
    eb.add_arch(arch);
    eb.add_binary(bin);
    eb.add_ptx(ptx);
    eb.add_entry_points(epv);
    eb.add_checksum(fb::ExecutableChecksum(cuda->cubin.data(),
                                           cuda->cubin.size(),
                                           cuda->ptx.data(), cuda->ptx.size()));
    exes.push_back(eb.Finish());
  }

  auto prov = fb::CreateProvenanceDirect(
      fbb, opts.compilerVersion.c_str(), opts.flags.c_str(),
      opts.sourcePath.c_str(), opts.sourceHash.c_str(), opts.createdUnix);
  fbb.ForceVectorAlignment(packed.size(), 1, 64);
  auto weightData = fbb.CreateVector(packed);
  auto planName = fbb.CreateString(opts.name);
  auto exesOff = fbb.CreateVector(exes);
  auto kernelsOff = fbb.CreateVector(fbKernels);
  auto buffersOff = fbb.CreateVector(fbBuffers);
  auto launchesOff = fbb.CreateVector(fbLaunches);
  auto inputsOff = fbb.CreateVector(mainSpecs->inputs);
  auto outputsOff = fbb.CreateVector(mainSpecs->outputs);
  auto weightsOff = fbb.CreateVector(fbWeights);
  auto functionsOff = fbb.CreateVector(fbFunctions);
  flatbuffers::Offset<fb::TokenizerData> tokenizerOff = 0;
  flatbuffers::Offset<fb::GenerationConfig> generationOff = 0;
  if (const GenerationAssets *g = opts.generation) {
    if (g->tokenizerJson) {
      auto bytes = fbb.CreateVector(
          reinterpret_cast<const uint8_t *>(g->tokenizerJson->data()),
          g->tokenizerJson->size());
      tokenizerOff = fb::CreateTokenizerData(
          fbb, bytes, fbb.CreateString(g->tokenizerSource));
    }
    generationOff = fb::CreateGenerationConfigDirect(
        fbb, &g->eosTokenIds, g->bosTokenId, g->eosSource.c_str(),
        g->bosSource.c_str(), g->doSample, g->temperature, g->topK, g->topP);
  }
  auto weightFilesOff = fbb.CreateVector(fbFiles);
  fb::PlanBuilder pb(fbb);
  static_assert(kPlanFormatWritten == fb::kFormatVersion,
                "Plan.h and plan_support.h disagree on the format");
  pb.add_format_version(kPlanFormatWritten);
  pb.add_name(planName);
  pb.add_executables(exesOff);
  pb.add_kernels(kernelsOff);
  pb.add_buffers(buffersOff);
  pb.add_arena_size(arenaSize);
  pb.add_peak_live_bytes(peak);
  pb.add_launches(launchesOff);
  pb.add_inputs(inputsOff);
  pb.add_outputs(outputsOff);
  pb.add_weights(weightsOff);
  pb.add_weight_data(weightData);
  pb.add_provenance(prov);
  pb.add_state_size(stateSize);
  pb.add_functions(functionsOff);
  pb.add_tokenizer(tokenizerOff);
  pb.add_generation(generationOff);
  pb.add_weight_files(weightFilesOff);
  fb::FinishPlanBuffer(fbb, pb.Finish());
  std::vector<uint8_t> bytes(fbb.GetBufferPointer(),
                             fbb.GetBufferPointer() + fbb.GetSize());
  fb::AppendTrailer(&bytes);
  return bytes;
}

} // namespace kiln
