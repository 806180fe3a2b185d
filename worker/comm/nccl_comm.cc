#include "worker/comm/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/comm/nccl_check.h"

namespace dgptq::worker {
namespace {

absl::Status CudaStatus(cudaError_t e, const char* expr) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrFormat("CUDA error %s in %s", cudaGetErrorString(e), expr));
}

#define DGPTQ_COMM_CUDA(expr) DGPTQ_RETURN_IF_ERROR(CudaStatus((expr), #expr))

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const NcclCommOptions& o, cudaStream_t stream, float* scratch)
      : Communicator(o.rank, o.world_size),
        device_(o.device),
        timeout_(o.timeout),
        stream_(stream),
        scratch_(scratch) {}
  ~NcclCommunicator() override;

  // Starts ncclCommInitRankConfig and waits for it.
  absl::Status Init(const ncclUniqueId& id);

  std::string backend() const override { return "nccl"; }

  absl::Status Reduce(const float* send, float* recv, size_t count, int root) override;
  absl::Status ReduceF64(const double* send, double* recv, size_t count, int root) override;
  absl::Status Broadcast(void* buf, size_t bytes, int root) override;
  absl::Status AllReduce(float* buf, size_t count) override;
  absl::Status Barrier() override;
  absl::Status GroupStart() override;
  absl::Status GroupEnd() override;

 private:
  absl::Status Begin(const char* what, int root);
  // Checks an issuing call's result; outside a group, waits for the op.
  absl::Status Issued(ncclResult_t r, const char* expr, const std::string& what);
  // Polls the async error and the stream until done or `deadline`.
  absl::Status Wait(const std::string& what, absl::Time deadline);
  absl::Status Fail(const absl::Status& s, const std::string& what);

  const int device_;
  const absl::Duration timeout_;
  cudaStream_t stream_;
  float* scratch_;  // one device float for Barrier
  ncclComm_t comm_ = nullptr;
  bool broken_ = false;
  bool in_group_ = false;
  int group_ops_ = 0;
};

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(device_);
  if (comm_ != nullptr) {
    if (broken_) {
      ncclCommAbort(comm_);
    } else {
      ncclCommDestroy(comm_);
    }
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status NcclCommunicator::Init(const ncclUniqueId& id) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const ncclResult_t r = ncclCommInitRankConfig(&comm_, world_, id, rank_, &config);
  const std::string what = absl::StrFormat("NCCL init (rank %d of %d)", rank_, world_);
  if (r != ncclSuccess && r != ncclInProgress) {
    return Fail(ToStatus(r, "ncclCommInitRankConfig", __FILE__, __LINE__), what);
  }
  return Wait(what, absl::Now() + timeout_);
}

absl::Status NcclCommunicator::Begin(const char* what, int root) {
  if (broken_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "NCCL communicator (rank %d) is unusable after an earlier error; %s refused", rank_, what));
  }
  DGPTQ_RETURN_IF_ERROR(CheckRoot(root));
  DGPTQ_COMM_CUDA(cudaSetDevice(device_));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Issued(ncclResult_t r, const char* expr, const std::string& what) {
  if (r != ncclSuccess && r != ncclInProgress) {
    return Fail(ToStatus(r, expr, __FILE__, __LINE__), what);
  }
  if (in_group_) {
    ++group_ops_;
    return absl::OkStatus();
  }
  return Wait(what, absl::Now() + timeout_);
}

absl::Status NcclCommunicator::Wait(const std::string& what, absl::Time deadline) {
  while (true) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r != ncclSuccess)
      return Fail(ToStatus(r, "ncclCommGetAsyncError", __FILE__, __LINE__), what);
    if (state != ncclSuccess && state != ncclInProgress) {
      return Fail(ToStatus(state, "asynchronous NCCL error", __FILE__, __LINE__), what);
    }
    if (state == ncclSuccess) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) return Fail(CudaStatus(q, "cudaStreamQuery"), what);
    }
    if (absl::Now() >= deadline) {
      return Fail(absl::DeadlineExceededError(
                      absl::StrFormat("did not complete within %s: a peer rank is dead or hung "
                                      "(NCCL cannot tell which); communicator aborted",
                                      absl::FormatDuration(timeout_))),
                  what);
    }
    absl::SleepFor(absl::Microseconds(50));
  }
}

absl::Status NcclCommunicator::Fail(const absl::Status& s, const std::string& what) {
  broken_ = true;
  if (comm_ != nullptr) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  return Annotate(s, absl::StrFormat("NCCL communicator rank %d/%d: %s", rank_, world_, what));
}

absl::Status NcclCommunicator::Reduce(const float* send, float* recv, size_t count, int root) {
  DGPTQ_RETURN_IF_ERROR(Begin("Reduce", root));
  const uint64_t bytes = count * sizeof(float);
  if (rank_ == root) {
    received_ += bytes * (world_ - 1);
  } else {
    sent_ += bytes;
  }
  return Issued(ncclReduce(send, recv, count, ncclFloat, ncclSum, root, comm_, stream_),
                "ncclReduce", absl::StrFormat("Reduce of %d floats to root %d", count, root));
}

absl::Status NcclCommunicator::ReduceF64(const double* send, double* recv, size_t count,
                                         int root) {
  DGPTQ_RETURN_IF_ERROR(Begin("ReduceF64", root));
  const uint64_t bytes = count * sizeof(double);
  if (rank_ == root) {
    received_ += bytes * (world_ - 1);
  } else {
    sent_ += bytes;
  }
  return Issued(ncclReduce(send, recv, count, ncclFloat64, ncclSum, root, comm_, stream_),
                "ncclReduce", absl::StrFormat("Reduce of %d doubles to root %d", count, root));
}

absl::Status NcclCommunicator::Broadcast(void* buf, size_t bytes, int root) {
  DGPTQ_RETURN_IF_ERROR(Begin("Broadcast", root));
  if (rank_ == root) {
    sent_ += bytes * (world_ - 1);
  } else {
    received_ += bytes;
  }
  return Issued(ncclBroadcast(buf, buf, bytes, ncclChar, root, comm_, stream_), "ncclBroadcast",
                absl::StrFormat("Broadcast of %d bytes from root %d", bytes, root));
}

absl::Status NcclCommunicator::AllReduce(float* buf, size_t count) {
  DGPTQ_RETURN_IF_ERROR(Begin("AllReduce", 0));
  const uint64_t ring = 2 * (world_ - 1) * count * sizeof(float) / world_;
  sent_ += ring;
  received_ += ring;
  return Issued(ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, comm_, stream_), "ncclAllReduce",
                absl::StrFormat("AllReduce of %d floats", count));
}

absl::Status NcclCommunicator::Barrier() {
  DGPTQ_RETURN_IF_ERROR(Begin("Barrier", 0));
  if (in_group_) return absl::FailedPreconditionError("Barrier inside GroupStart/GroupEnd");
  return Issued(ncclAllReduce(scratch_, scratch_, 1, ncclFloat, ncclSum, comm_, stream_),
                "ncclAllReduce", "Barrier");
}

absl::Status NcclCommunicator::GroupStart() {
  DGPTQ_RETURN_IF_ERROR(Begin("GroupStart", 0));
  if (in_group_) return absl::FailedPreconditionError("GroupStart: groups do not nest");
  const ncclResult_t r = ncclGroupStart();
  if (r != ncclSuccess) return Fail(ToStatus(r, "ncclGroupStart()", __FILE__, __LINE__), "group");
  in_group_ = true;
  group_ops_ = 0;
  return absl::OkStatus();
}

absl::Status NcclCommunicator::GroupEnd() {
  if (!in_group_) return absl::FailedPreconditionError("GroupEnd without GroupStart");
  in_group_ = false;
  const ncclResult_t r = ncclGroupEnd();  // always close NCCL's group, even when broken
  const std::string what = absl::StrFormat("group of %d ops", group_ops_);
  DGPTQ_RETURN_IF_ERROR(Begin("GroupEnd", 0));
  if (r != ncclSuccess && r != ncclInProgress) {
    return Fail(ToStatus(r, "ncclGroupEnd()", __FILE__, __LINE__), what);
  }
  return Wait(what, absl::Now() + timeout_ * std::max(1, group_ops_));
}

absl::Status ValidateOptions(const NcclCommOptions& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bad NCCL rank %d / world size %d", o.rank, o.world_size));
  }
  if (o.unique_id.size() != kNcclUniqueIdBytes) {
    return absl::InvalidArgumentError(absl::StrFormat("NCCL unique id must be %d bytes, got %d",
                                                      kNcclUniqueIdBytes, o.unique_id.size()));
  }
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("communicator timeout must be positive");
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return absl::FailedPreconditionError("NCCL communicator needs a CUDA GPU; none is visible");
  }
  if (o.device < 0 || o.device >= devices) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CUDA device %d out of range (%d visible)", o.device, devices));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> NewNcclUniqueId() {
  static_assert(sizeof(ncclUniqueId) == kNcclUniqueIdBytes);
  ncclUniqueId id;
  DGPTQ_NCCL_CHECK(ncclGetUniqueId(&id));
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const NcclCommOptions& options) {
  DGPTQ_RETURN_IF_ERROR(ValidateOptions(options));
  DGPTQ_COMM_CUDA(cudaSetDevice(options.device));
  cudaStream_t stream = nullptr;
  DGPTQ_COMM_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  float* scratch = nullptr;
  const cudaError_t e = cudaMalloc(&scratch, sizeof(float));
  auto comm = std::make_unique<NcclCommunicator>(options, stream, scratch);
  DGPTQ_COMM_CUDA(e);
  DGPTQ_COMM_CUDA(cudaMemset(scratch, 0, sizeof(float)));
  ncclUniqueId id;
  std::memcpy(id.internal, options.unique_id.data(), kNcclUniqueIdBytes);
  DGPTQ_RETURN_IF_ERROR(comm->Init(id));
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace dgptq::worker
