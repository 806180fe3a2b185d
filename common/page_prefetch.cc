#include "common/page_prefetch.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

namespace dgptq {

PagePrefetcher::~PagePrefetcher() { Stop(); }

void PagePrefetcher::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  stop_ = false;
}

size_t PagePrefetcher::Wait() {
  if (thread_.joinable()) thread_.join();
  return read_;
}

void PagePrefetcher::Start(std::vector<Span> spans) {
  Wait();
  read_ = 0;
  thread_ = std::thread([this, spans = std::move(spans)] {
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    for (const Span& s : spans) {
      if (s.data == nullptr || s.bytes == 0) continue;
      const uintptr_t begin = reinterpret_cast<uintptr_t>(s.data) & ~(page - 1);
      const uintptr_t end = reinterpret_cast<uintptr_t>(s.data) + s.bytes;
      // Lets the kernel queue the whole range's reads at once (it may refuse: advisory).
      ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);
      uint8_t sink = 0;
      for (uintptr_t p = begin; p < end; p += page) {
        if (stop_.load(std::memory_order_relaxed)) return;
        sink ^= *reinterpret_cast<const volatile uint8_t*>(p);
      }
      (void)sink;
      read_ += s.bytes;
    }
  });
}

}  // namespace dgptq
