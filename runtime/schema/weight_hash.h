// Hashing weight bytes, shared by the compiler (which records the hashes in
// a plan) and the runtime (which checks them):
//
//   - SampledXxh64: a file's cheap identity (plan.fbs WeightFile): XXH64 of
//     a few chunks spread evenly over the file, seeded with its size. A
//     session checks it at start-up in milliseconds whatever the file's size;
//     it catches a file that was replaced, truncated or resized, not a
//     corrupted byte between the chunks (the full check does).
//   - ParallelXxh64: XXH64 of many byte ranges (the weights) on several
//     threads, with progress reports, for the compiler and the full check.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <numeric>
#include <thread>
#include <utility>
#include <vector>

#include "plan_support.h"

namespace kiln::plan {

// What the compiler samples (the plan records both, so the runtime follows
// the plan): 16 chunks of 64 KiB, 1 MiB per file.
constexpr uint64_t kSampleBytes = 64 << 10;
constexpr uint32_t kSampleCount = 16;
// Limits the runtime accepts in a plan (a damaged plan must not make it read
// gigabytes at start-up).
constexpr uint64_t kMaxSampleBytes = 16 << 20;
constexpr uint32_t kMaxSampleCount = 4096;

// Offset of chunk `i` of `count` chunks of `chunk` bytes spread over a file
// of `size` > count x chunk bytes: the first at 0, the last ending at `size`.
inline uint64_t SampleOffset(uint64_t size, uint64_t chunk, uint32_t count, uint32_t i) {
  if (count < 2) return 0;
  unsigned __int128 span = size - chunk;
  return static_cast<uint64_t>(span * i / (count - 1));
}

// Whether a file of `size` bytes is hashed whole rather than sampled.
inline bool HashedWhole(uint64_t size, uint64_t chunk, uint32_t count) {
  return chunk == 0 || count == 0 || size <= chunk * count;
}

// The byte ranges [offset, offset + length) SampledXxh64 reads, in order
// (to prefetch them all before hashing any).
inline std::vector<std::pair<uint64_t, uint64_t>> SampleRanges(uint64_t size, uint64_t chunk, uint32_t count) {
  if (HashedWhole(size, chunk, count)) return {{0, size}};
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (uint32_t i = 0; i < count; ++i) out.push_back({SampleOffset(size, chunk, count, i), chunk});
  return out;
}

// The identity of the `size` bytes at `file`: XXH64 of the whole file when it
// is at most count x chunk bytes, else of the `count` chunks of `chunk` bytes
// at SampleOffset, chained (each chunk's hash seeds the next); seeded with
// the size either way.
inline uint64_t SampledXxh64(const uint8_t* file, uint64_t size, uint64_t chunk, uint32_t count) {
  if (HashedWhole(size, chunk, count)) return Xxh64(file, size, size);
  uint64_t h = size;
  for (const auto& [offset, length] : SampleRanges(size, chunk, count)) h = Xxh64(file + offset, length, h);
  return h;
}

// One range to hash. With `e4m3`, its bytes are e4m3 codes, also scanned for
// the NaN codes 0x7F / 0xFF as they are hashed (the first one's offset goes
// to HashJob::nan_at): one read for both.
struct HashJob {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  bool e4m3 = false;
  static constexpr uint64_t kNoNaN = ~uint64_t{0};
};

// Offset of the first e4m3 NaN code (0x7F, 0xFF) in [p, p + n), or n.
inline uint64_t FirstE4M3NaN(const uint8_t *p, uint64_t n) {
  constexpr uint64_t kBlock = 4096;
  for (uint64_t at = 0; at < n; at += kBlock) {
    uint64_t len = std::min(kBlock, n - at);
    uint8_t any = 0; // a branch-free pass the compiler vectorizes
    for (uint64_t i = 0; i < len; ++i)
      any |= static_cast<uint8_t>((p[at + i] | 0x80) == 0xFF);
    if (!any)
      continue;
    for (uint64_t i = 0; i < len; ++i)
      if ((p[at + i] | 0x80) == 0xFF)
        return at + i;
  }
  return n;
}

struct HashProgress {
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
  double seconds = 0;  // since the start
  bool finished = false;
};

// XXH64 (seed 0) of every job, on `threads` threads (0: the hardware's).
// While they run, `progress` (when set) is called on the calling thread every
// `interval_s` seconds, and once more with `finished` when all are done:
// a caller that prints only after the first interval stays quiet for small
// inputs. One range is hashed by one thread, in slices of 16 MiB (the
// progress granularity); the largest ranges are handed out first.
// `nan_at` (when set) gets, per job, the offset of its first e4m3 NaN code
// (HashJob::e4m3 jobs only) or HashJob::kNoNaN.
inline std::vector<uint64_t>
ParallelXxh64(const std::vector<HashJob> &jobs, int threads,
              const std::function<void(const HashProgress &)> &progress = {},
              double interval_s = 1.0,
              std::vector<uint64_t> *nan_at = nullptr) {
  constexpr uint64_t kSlice = 16 << 20;
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  std::vector<uint64_t> out(jobs.size());
  if (nan_at)
    nan_at->assign(jobs.size(), HashJob::kNoNaN);
  std::vector<size_t> order(jobs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return jobs[a].size > jobs[b].size; });
  uint64_t total = 0;
  for (const HashJob& j : jobs) total += j.size;
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done{0};
  auto work = [&] {
    for (size_t k; (k = next.fetch_add(1)) < order.size();) {
      const HashJob& j = jobs[order[k]];
      Xxh64State h;
      for (uint64_t at = 0; at < j.size; at += kSlice) {
        uint64_t n = std::min(kSlice, j.size - at);
        if (nan_at && j.e4m3) {
          // Pieces that stay in cache between the hash and the scan.
          constexpr uint64_t kPiece = 1 << 20;
          for (uint64_t p = 0; p < n; p += kPiece) {
            uint64_t len = std::min(kPiece, n - p);
            h.Update(j.data + at + p, len);
            uint64_t &first = (*nan_at)[order[k]];
            if (first != HashJob::kNoNaN)
              continue;
            uint64_t i = FirstE4M3NaN(j.data + at + p, len);
            if (i < len)
              first = at + p + i;
          }
        } else {
          h.Update(j.data + at, n);
        }
        done.fetch_add(n, std::memory_order_relaxed);
      }
      out[order[k]] = h.Digest();
    }
  };
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<size_t>(threads, std::max<size_t>(jobs.size(), 1)));
  auto seconds = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  if (!progress && threads == 1) {
    work();
    return out;
  }
  std::mutex mu;
  std::condition_variable cv;
  int running = threads;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      work();
      std::lock_guard<std::mutex> lock(mu);
      if (--running == 0) cv.notify_all();
    });
  {
    std::unique_lock<std::mutex> lock(mu);
    auto interval = std::chrono::duration<double>(interval_s > 0 ? interval_s : 1.0);
    while (running > 0) {
      if (cv.wait_for(lock, interval, [&] { return running == 0; })) break;
      if (progress) {
        lock.unlock();
        progress({done.load(), total, seconds(), false});
        lock.lock();
      }
    }
  }
  for (std::thread& t : pool) t.join();
  if (progress) progress({total, total, seconds(), true});
  return out;
}

}  // namespace kiln::plan
