// Reads ranges of memory-mapped files into the page cache on a background thread, so that
// a later read finds them resident: the pipeline fetches layer l+1's weights from disk while
// layer l computes (DESIGN.md "Performance model": overlap loading with compute). Purely
// advisory: nothing depends on a batch finishing, and a read that gets there first just
// faults the page in itself.
// Thread-compatible: one owner calls Start/Wait; the background thread only reads the spans.
#pragma once

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace dgptq {

class PagePrefetcher {
 public:
  struct Span {
    const void* data = nullptr;
    size_t bytes = 0;
  };
  PagePrefetcher() = default;
  PagePrefetcher(const PagePrefetcher&) = delete;
  PagePrefetcher& operator=(const PagePrefetcher&) = delete;
  // Stops the batch in flight (within a few pages) and joins.
  ~PagePrefetcher();

  // Joins the previous batch, then starts reading `spans` (madvise WILLNEED and one load per
  // page). The memory must stay mapped until the next Start, Wait or the destructor returns.
  void Start(std::vector<Span> spans);
  // Joins the batch in flight; returns the bytes the last batch read (0 if none ran).
  size_t Wait();

 private:
  void Stop();
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> read_{0};
};

}  // namespace dgptq
