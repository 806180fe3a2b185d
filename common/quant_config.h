// Quantization settings for one job or one module (GPTQ and RTN share them).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace dgptq {

struct QuantConfig {
  int bits = 4;               // 2, 3, 4 or 8
  int group_size = 128;       // -1: one group per output row (per channel)
  bool sym = true;            // symmetric grid (zero fixed at 2^(bits-1))
  bool act_order = false;     // columns by descending diag(H)
  bool static_groups = false; // group parameters fixed before the permutation
  float damp_percent = 0.01f; // H += damp_percent * mean(diag H) * I
  float damp_max = 1.0f;      // damping is raised x10 up to this when Cholesky fails
  int block_size = 128;       // lazy-batch block (columns)
  bool mse = false;           // grid search shrinking the range before fixing scale/zero

  // InvalidArgument naming the offending field.
  absl::Status Validate() const;
  int maxq() const { return (1 << bits) - 1; }
  // Number of groups for `cols` input columns.
  long NumGroups(long cols) const {
    return group_size <= 0 ? 1 : (cols + group_size - 1) / group_size;
  }
  std::string ToString() const;
};

}  // namespace dgptq
