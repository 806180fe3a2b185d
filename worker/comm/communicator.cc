#include "worker/comm/communicator.h"

#include "absl/strings/str_format.h"

namespace dgptq::worker {

absl::Status Communicator::CheckRoot(int root) const {
  if (root < 0 || root >= world_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("root %d out of range for world size %d", root, world_));
  }
  return absl::OkStatus();
}

}  // namespace dgptq::worker
