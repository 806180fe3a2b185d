// The NCCL communicator: GPU ranks, one GPU per rank (NCCL rejects two ranks on one GPU; use
// the host transport for that). Buffers are device memory on `device`.
//
// - Rendezvous: rank 0 calls NewNcclUniqueId() and the coordinator hands the 128 raw bytes,
//   with rank and world size, to every rank; each calls CreateNcclCommunicator.
// - The communicator is non-blocking (ncclConfig_t.blocking = 0): init and every collective
//   are waited for by polling ncclCommGetAsyncError and the stream, so a dead or hung peer
//   turns into DeadlineExceeded (or the asynchronous NCCL error, Unavailable for remote and
//   system errors) within the timeout, and the communicator is aborted (ncclCommAbort).
// - Collectives run on a dedicated stream; grouped ops are one ncclGroupStart/ncclGroupEnd
//   and overlap. Each call returns after its stream work completed.
// - Sums are NCCL's (deterministic for one topology and size, not across topologies).
// - bytes_sent()/bytes_received(): algorithm-independent payload estimate (Reduce: each
//   non-root sends `bytes`, root receives (N-1)·bytes; Broadcast the reverse; AllReduce
//   2·(N-1)/N·bytes each way, as a ring).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace dgptq::worker {

inline constexpr size_t kNcclUniqueIdBytes = 128;

// A fresh ncclUniqueId as its raw 128 bytes (ncclGetUniqueId; needs no GPU).
absl::StatusOr<std::string> NewNcclUniqueId();

struct NcclCommOptions {
  int rank = 0;
  int world_size = 1;
  std::string unique_id;  // kNcclUniqueIdBytes raw bytes from rank 0's NewNcclUniqueId
  int device = 0;         // CUDA device ordinal this rank uses
  absl::Duration timeout = kDefaultCommTimeout;
};

// Initializes the communicator (bounded by options.timeout). FailedPrecondition without a
// usable GPU, InvalidArgument for bad options.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const NcclCommOptions& options);

}  // namespace dgptq::worker
