// A minimal fork-join loop over an index range for the CPU backend.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace dgptq::kernels::cpu {

// Calls fn(begin, end) on contiguous chunks of [0, n) from up to `threads` threads.
// Runs inline when the range is small.
template <typename Fn>
void ParallelFor(int64_t n, int threads, int64_t min_chunk, Fn&& fn) {
  const int64_t max_tasks = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  const int tasks = static_cast<int>(std::min<int64_t>(threads, max_tasks));
  if (tasks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(tasks - 1);
  const int64_t chunk = (n + tasks - 1) / tasks;
  for (int t = 1; t < tasks; ++t) {
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back([&fn, b, e] { fn(b, e); });
  }
  fn(int64_t{0}, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

}  // namespace dgptq::kernels::cpu
