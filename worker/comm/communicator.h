// One communicator interface for the distributed pipeline; two backends implement it:
// the TCP host transport (host_comm.h) and NCCL (nccl_comm.h). The pipeline never knows
// which one it has.
//
// Contracts (every backend):
// - Buffers live in the memory of the caller's device: host memory for the host backend,
//   device memory of the communicator's GPU for NCCL. For NCCL the caller must have finished
//   writing the inputs (e.g. synchronized the producing stream) before the call.
// - Every rank issues the same collectives, with the same counts and roots, in the same order.
//   A mismatch is detected by the host backend (DataLoss naming the peer); NCCL may hang, which
//   the timeout turns into DeadlineExceeded.
// - Every call returns when its results are in place (recv/buf readable by the caller), or
//   fails. No collective waits longer than the timeout the backend was created with (a group
//   of k ops: k timeouts): a dead peer
//   gives Unavailable, a hung one DeadlineExceeded, and the message names the peer rank where
//   the backend can know it. After any error the communicator is broken: every later call
//   returns FailedPrecondition (recreate it; the peers see their own errors).
// - Grouping: between GroupStart() and GroupEnd() collectives are only recorded (their
//   buffers must stay valid and untouched until GroupEnd returns) and return OK; GroupEnd()
//   issues them all (NCCL: one ncclGroupStart/End, so they overlap) and waits for them.
//   Errors of grouped ops are reported by GroupEnd. Groups do not nest. Barrier is not
//   allowed inside a group.
// - Thread-safety: one thread per communicator. Only bytes_sent()/bytes_received(), rank(),
//   world_size() and backend() may be read from other threads (e.g. a metrics exporter).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace dgptq::worker {

// Default per-call timeout of every backend.
inline constexpr absl::Duration kDefaultCommTimeout = absl::Seconds(300);

class Communicator {
 public:
  Communicator(int rank, int world) : rank_(rank), world_(world) {}
  virtual ~Communicator() = default;

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  // "host" or "nccl".
  virtual std::string backend() const = 0;

  // Sums `count` floats of every rank's `send` onto rank `root`'s `recv`. `recv` is used only
  // on the root and may equal `send` there (in place). The host backend sums in rank order
  // 0, 1, 2, ... so results are bit-identical across runs.
  virtual absl::Status Reduce(const float* send, float* recv, size_t count, int root) = 0;
  // The same for doubles (the pipeline reduces Hessian sums in fp64 so that their rounding
  // to fp32 does not depend on how the samples were sharded).
  virtual absl::Status ReduceF64(const double* send, double* recv, size_t count, int root) = 0;
  // Copies `bytes` of root's `buf` into every other rank's `buf`.
  virtual absl::Status Broadcast(void* buf, size_t bytes, int root) = 0;
  // In-place sum of `count` floats across all ranks; every rank gets the same result.
  virtual absl::Status AllReduce(float* buf, size_t count) = 0;
  // Returns once every rank has entered Barrier.
  virtual absl::Status Barrier() = 0;

  virtual absl::Status GroupStart() = 0;
  virtual absl::Status GroupEnd() = 0;

  // Bytes this rank has moved so far (see the backend for what is counted).
  uint64_t bytes_sent() const { return sent_.load(); }
  uint64_t bytes_received() const { return received_.load(); }

 protected:
  // InvalidArgument unless 0 <= root < world_size().
  absl::Status CheckRoot(int root) const;

  const int rank_;
  const int world_;
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> received_{0};
};

}  // namespace dgptq::worker
