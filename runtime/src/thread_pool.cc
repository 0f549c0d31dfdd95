#include "thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KILN_PAUSE() _mm_pause()
#else
#define KILN_PAUSE() std::this_thread::yield()
#endif

namespace kiln {
namespace {
// Chunk `i` of `n` over [0, total): contiguous, sizes differ by at most one.
void ChunkBounds(int64_t total, int n, int i, int64_t* begin, int64_t* end) {
  int64_t base = total / n, rem = total % n;
  *begin = i * base + std::min<int64_t>(i, rem);
  *end = *begin + base + (i < rem ? 1 : 0);
}

// How long a thread polls before it blocks. Measured on the 2-vCPU VM this
// project runs on: a decode step of the llama-like model (83 launches) spent
// ~2 ms waking blocked workers; spinning this long removes that, and a
// thread that finds nothing to do in that time costs at most this much CPU
// before it sleeps (a loaded machine keeps its other work).
constexpr std::chrono::microseconds kSpin{100};

// Polls `done` for up to kSpin; true when it became true.
template <typename Done>
bool SpinUntil(Done done) {
  auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (done()) return true;
    KILN_PAUSE();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return done();
  }
}
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  num_threads_ = std::max(1, num_threads);
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_release);
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t total,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (total <= 0) return;
  int chunks = static_cast<int>(std::min<int64_t>(num_threads_, total));
  if (chunks <= 1) {
    fn(0, total);
    return;
  }
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    total_ = total;
    chunks_ = chunks;
    pending_.store(num_threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    wake = sleepers_ > 0;
  }
  if (wake) work_cv_.notify_all();
  int64_t begin, end;
  ChunkBounds(total, chunks, 0, &begin, &end);
  fn(begin, end);
  auto done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!SpinUntil(done)) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, done);
  }
}

void ThreadPool::WorkerLoop(int worker) {
  uint64_t seen = 0;
  auto fresh = [&] {
    return stop_.load(std::memory_order_acquire) ||
           generation_.load(std::memory_order_acquire) != seen;
  };
  for (;;) {
    if (!SpinUntil(fresh)) {
      std::unique_lock<std::mutex> lock(mu_);
      ++sleepers_;
      work_cv_.wait(lock, fresh);
      --sleepers_;
    }
    int64_t total;
    int chunks;
    const std::function<void(int64_t, int64_t)>* fn;
    {
      // The generation's fields, published under mu_ (ParallelFor).
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_.load(std::memory_order_relaxed)) return;
      seen = generation_.load(std::memory_order_relaxed);
      total = total_;
      chunks = chunks_;
      fn = fn_;
    }
    if (worker < chunks) {
      int64_t begin, end;
      ChunkBounds(total, chunks, worker, &begin, &end);
      (*fn)(begin, end);
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

}  // namespace kiln
