#include "common/quant_config.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace dgptq {

absl::Status QuantConfig::Validate() const {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bits must be 2, 3, 4 or 8, got %d", bits));
  }
  if (group_size == 0 || group_size < -1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("group_size must be -1 (per channel) or positive, got %d", group_size));
  }
  if (!(damp_percent > 0.0f) || !std::isfinite(damp_percent) || damp_percent > damp_max) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "damp_percent must be in (0, %g], got %g", damp_max, damp_percent));
  }
  // 512 keeps the fused CUDA block kernel's shared-memory tile within an A100's 163 KB.
  if (block_size < 1 || block_size > 512) {
    return absl::InvalidArgumentError(
        absl::StrFormat("block_size must be in [1, 512], got %d", block_size));
  }
  if (static_groups && group_size <= 0) {
    return absl::InvalidArgumentError("static_groups needs a positive group_size");
  }
  return absl::OkStatus();
}

std::string QuantConfig::ToString() const {
  return absl::StrFormat("w%dg%d %s%s%s damp=%g block=%d%s", bits, group_size,
                         sym ? "sym" : "asym", act_order ? " act-order" : "",
                         static_groups ? " static-groups" : "", damp_percent, block_size,
                         mse ? " mse" : "");
}

}  // namespace dgptq
