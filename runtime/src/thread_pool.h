// A small persistent thread pool that splits a range into contiguous chunks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

class ThreadPool {
 public:
  // `num_threads` includes the calling thread; 0 = hardware concurrency.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }
  // Runs fn(begin, end) over [0, total) in up to num_threads contiguous
  // chunks, the calling thread taking the first. Returns when all are done.
  void ParallelFor(int64_t total, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int worker);

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  // Workers and the caller spin for a bounded time (kSpin) before they
  // block: a launch follows the previous one within microseconds in a decode
  // step, and waking a blocked thread costs tens of microseconds in a VM.
  // The fields of a generation are written under mu_ before generation_ is
  // published, and every worker acknowledges every generation (pending_),
  // so ParallelFor never rewrites them while a worker may still read them.
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  int sleepers_ = 0;  // workers blocked on work_cv_ (under mu_)
  std::atomic<bool> stop_{false};  // set under mu_
  int64_t total_ = 0;
  int chunks_ = 0;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
};

}  // namespace kiln
