// libFuzzer target: ParseNpy on the bytes of a .npy file (see fuzz_entry.h).
#include <cstdio>
#include <cstdlib>

#include "fuzz/fuzz_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::Status s = dgptq::fuzz::FuzzNpy(data, size);
  if (absl::IsInternal(s)) {
    std::fprintf(stderr, "invariant broken: %s\n", s.ToString().c_str());
    std::abort();
  }
  return 0;
}
