// What every libFuzzer target of fuzz/ does with its entry's status: abort on Internal (an
// invariant broken), so that libFuzzer keeps the input as a crash; any other status is the
// parser doing its job.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"

namespace dgptq::fuzz {

inline int AbortOnInternal(const absl::Status& s) {
  if (absl::IsInternal(s)) {
    std::fprintf(stderr, "invariant broken: %s\n", s.ToString().c_str());
    std::abort();
  }
  return 0;
}

}  // namespace dgptq::fuzz
