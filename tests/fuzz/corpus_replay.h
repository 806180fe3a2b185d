// Replays every input under fuzz/corpus/<target>/ through its fuzz entry point
// (fuzz/fuzz_entry.h, fuzz/job_spec_entry.h): no crash, and the status is OK or
// InvalidArgument. Crash inputs found by scripts/fuzz.sh are kept in the corpus, so they stay
// regression tests in the regular (uninstrumented) build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace dgptq::fuzz {

using FuzzEntry = absl::Status (*)(const uint8_t*, size_t);

inline void ReplayCorpus(const std::string& target, FuzzEntry entry) {
  const std::filesystem::path dir =
      std::filesystem::path(DGPTQ_SOURCE_DIR) / "fuzz" / "corpus" / target;
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const absl::Status s = entry(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    EXPECT_TRUE(s.ok() || absl::IsInvalidArgument(s)) << e.path() << ": " << s;
    ++files;
  }
  EXPECT_GT(files, 0) << "empty corpus " << dir;
}

}  // namespace dgptq::fuzz
