// PagePrefetcher: a file evicted from the page cache is resident after a batch (mincore),
// batches follow each other, and the destructor stops a batch in flight.
#include "common/page_prefetch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vector>

#include "tests/test_util.h"

namespace dgptq {
namespace {

size_t ResidentPages(void* base, size_t bytes) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> v((bytes + page - 1) / page);
  if (::mincore(base, bytes, v.data()) != 0) return 0;
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

class MappedFile {
 public:
  MappedFile(const std::string& path, size_t bytes) : bytes_(bytes) {
    const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
    std::vector<char> chunk(1 << 20, 'x');
    for (size_t done = 0; done < bytes; done += chunk.size()) {
      EXPECT_EQ(::write(fd, chunk.data(), chunk.size()), static_cast<ssize_t>(chunk.size()));
    }
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // evict (clean pages; advisory)
    data_ = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
  }
  ~MappedFile() {
    if (data_ != MAP_FAILED) ::munmap(data_, bytes_);
  }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  size_t pages() const { return bytes_ / static_cast<size_t>(::sysconf(_SC_PAGESIZE)); }

 private:
  size_t bytes_;
  void* data_ = MAP_FAILED;
};

TEST(PagePrefetcher, MakesAnEvictedFileResident) {
  testing::TempDir dir;
  MappedFile f(dir / "weights.bin", 16 << 20);
  ASSERT_NE(f.data(), MAP_FAILED);
  const size_t before = ResidentPages(f.data(), f.bytes());
  PagePrefetcher p;
  // An unaligned span in the middle and one at the start: both read, whole pages.
  const size_t mid = (8 << 20) + 123;
  p.Start({{static_cast<char*>(f.data()) + mid, f.bytes() - mid}, {f.data(), mid}});
  EXPECT_EQ(p.Wait(), f.bytes());
  EXPECT_EQ(ResidentPages(f.data(), f.bytes()), f.pages())
      << "resident before the batch: " << before << " of " << f.pages();
}

TEST(PagePrefetcher, BatchesFollowEachOther) {
  testing::TempDir dir;
  MappedFile a(dir / "a.bin", 2 << 20), b(dir / "b.bin", 3 << 20);
  ASSERT_NE(a.data(), MAP_FAILED);
  ASSERT_NE(b.data(), MAP_FAILED);
  PagePrefetcher p;
  EXPECT_EQ(p.Wait(), 0u);
  p.Start({{a.data(), a.bytes()}, {nullptr, 10}, {a.data(), 0}});
  p.Start({{b.data(), b.bytes()}});  // joins the first batch
  EXPECT_EQ(p.Wait(), b.bytes());
  EXPECT_EQ(ResidentPages(a.data(), a.bytes()), a.pages());
  EXPECT_EQ(ResidentPages(b.data(), b.bytes()), b.pages());
}

TEST(PagePrefetcher, DestructorStopsABatchInFlight) {
  // 64 GiB of address space, never backed: reading it all would take far longer than the
  // test; the destructor must stop after a few pages instead.
  const size_t bytes = size_t{64} << 30;
  void* m = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  {
    PagePrefetcher p;
    p.Start({{m, bytes}});
  }
  EXPECT_LT(ResidentPages(m, bytes), size_t{1} << 24);
  ::munmap(m, bytes);
}

}  // namespace
}  // namespace dgptq
