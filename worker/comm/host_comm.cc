// The host communicator's collectives; the rendezvous that builds its mesh is in
// host_rendezvous.cc.
#include "worker/comm/host_comm.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/comm/host_comm_internal.h"

namespace dgptq::worker {
namespace {

enum class Op : uint32_t {
  kReduce = 1,
  kBroadcast = 2,
  kAllReduceUp = 3,
  kAllReduceDown = 4,
  kBarrierUp = 5,
  kBarrierDown = 6,
  kReduceF64 = 7,
};

const char* OpName(uint32_t op) {
  switch (static_cast<Op>(op)) {
    case Op::kReduce:
      return "Reduce";
    case Op::kBroadcast:
      return "Broadcast";
    case Op::kAllReduceUp:
      return "AllReduce(reduce)";
    case Op::kAllReduceDown:
      return "AllReduce(broadcast)";
    case Op::kBarrierUp:
      return "Barrier(enter)";
    case Op::kBarrierDown:
      return "Barrier(leave)";
    case Op::kReduceF64:
      return "ReduceF64";
  }
  return "(unknown op)";
}

struct Header {
  uint32_t magic;
  uint32_t op;
  uint64_t seq;
  uint64_t bytes;
};
static_assert(sizeof(Header) == 24);
constexpr uint32_t kMsgMagic = 0x44475451;        // "DGTQ"
constexpr size_t kChunkFloats = size_t{1} << 18;  // 1 MiB per step of the reduction

// One collective, as recorded for a group or run at once.
struct Pending {
  Op op;
  const void* send;  // Reduce: float, ReduceF64: double
  void* recv;        // Reduce (root), AllReduce
  void* buf;         // Broadcast
  size_t n;          // elements (Reduce, AllReduce) or bytes (Broadcast)
  int root;
};

class HostCommunicator final : public Communicator {
 public:
  HostCommunicator(int rank, int world, absl::Duration timeout, std::vector<net::Fd> peers)
      : Communicator(rank, world), timeout_(timeout), peers_(std::move(peers)) {}

  std::string backend() const override { return "host"; }

  absl::Status Reduce(const float* send, float* recv, size_t count, int root) override;
  absl::Status ReduceF64(const double* send, double* recv, size_t count, int root) override;
  absl::Status Broadcast(void* buf, size_t bytes, int root) override;
  absl::Status AllReduce(float* buf, size_t count) override;
  absl::Status Barrier() override;
  absl::Status GroupStart() override;
  absl::Status GroupEnd() override;

 private:
  absl::Status CheckUsable(const char* what) const;
  absl::Status Submit(const Pending& p);
  absl::Status Execute(const Pending& p);
  absl::Status Dispatch(const Pending& p, absl::Time deadline);
  template <typename T>
  absl::Status DoReduce(Op op, const T* send, T* recv, size_t count, int root,
                        absl::Time deadline);
  absl::Status DoBroadcast(Op op, void* buf, size_t bytes, int root, absl::Time deadline);
  absl::Status SendMsg(int peer, Op op, const void* data, size_t bytes, absl::Time deadline);
  absl::Status RecvHeader(int peer, Op op, size_t bytes, absl::Time deadline);
  absl::Status RecvPayload(int peer, void* data, size_t bytes, absl::Time deadline);

  const absl::Duration timeout_;
  std::vector<net::Fd> peers_;  // peers_[rank_] is empty
  uint64_t seq_ = 0;
  bool broken_ = false;
  bool in_group_ = false;
  std::vector<Pending> group_;
};

absl::Status HostCommunicator::CheckUsable(const char* what) const {
  if (broken_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "host communicator (rank %d) is unusable after an earlier error; %s refused", rank_, what));
  }
  return absl::OkStatus();
}

absl::Status HostCommunicator::Reduce(const float* send, float* recv, size_t count, int root) {
  DGPTQ_RETURN_IF_ERROR(CheckUsable("Reduce"));
  DGPTQ_RETURN_IF_ERROR(CheckRoot(root));
  if (count > 0 && (send == nullptr || (rank_ == root && recv == nullptr))) {
    return absl::InvalidArgumentError("Reduce: null buffer");
  }
  return Submit({Op::kReduce, send, recv, nullptr, count, root});
}

absl::Status HostCommunicator::ReduceF64(const double* send, double* recv, size_t count,
                                         int root) {
  DGPTQ_RETURN_IF_ERROR(CheckUsable("ReduceF64"));
  DGPTQ_RETURN_IF_ERROR(CheckRoot(root));
  if (count > 0 && (send == nullptr || (rank_ == root && recv == nullptr))) {
    return absl::InvalidArgumentError("ReduceF64: null buffer");
  }
  return Submit({Op::kReduceF64, send, recv, nullptr, count, root});
}

absl::Status HostCommunicator::Broadcast(void* buf, size_t bytes, int root) {
  DGPTQ_RETURN_IF_ERROR(CheckUsable("Broadcast"));
  DGPTQ_RETURN_IF_ERROR(CheckRoot(root));
  if (bytes > 0 && buf == nullptr) return absl::InvalidArgumentError("Broadcast: null buffer");
  return Submit({Op::kBroadcast, nullptr, nullptr, buf, bytes, root});
}

absl::Status HostCommunicator::AllReduce(float* buf, size_t count) {
  DGPTQ_RETURN_IF_ERROR(CheckUsable("AllReduce"));
  if (count > 0 && buf == nullptr) return absl::InvalidArgumentError("AllReduce: null buffer");
  return Submit({Op::kAllReduceUp, buf, buf, nullptr, count, 0});
}

absl::Status HostCommunicator::Barrier() {
  DGPTQ_RETURN_IF_ERROR(CheckUsable("Barrier"));
  if (in_group_) return absl::FailedPreconditionError("Barrier inside GroupStart/GroupEnd");
  return Execute({Op::kBarrierUp, nullptr, nullptr, nullptr, 0, 0});
}

absl::Status HostCommunicator::GroupStart() {
  DGPTQ_RETURN_IF_ERROR(CheckUsable("GroupStart"));
  if (in_group_) return absl::FailedPreconditionError("GroupStart: groups do not nest");
  in_group_ = true;
  return absl::OkStatus();
}

absl::Status HostCommunicator::GroupEnd() {
  if (!in_group_) return absl::FailedPreconditionError("GroupEnd without GroupStart");
  in_group_ = false;
  std::vector<Pending> ops = std::move(group_);
  group_.clear();
  DGPTQ_RETURN_IF_ERROR(CheckUsable("GroupEnd"));
  // Every rank runs the same list in the same order, and each op only sends towards or
  // receives from its root, so running them one after the other cannot deadlock.
  for (const Pending& p : ops) DGPTQ_RETURN_IF_ERROR(Execute(p));
  return absl::OkStatus();
}

absl::Status HostCommunicator::Submit(const Pending& p) {
  if (in_group_) {
    group_.push_back(p);
    return absl::OkStatus();
  }
  return Execute(p);
}

absl::Status HostCommunicator::Execute(const Pending& p) {
  ++seq_;
  absl::Status s = Dispatch(p, absl::Now() + timeout_);
  if (s.ok()) return s;
  broken_ = true;
  const std::string what = p.op == Op::kAllReduceUp ? "AllReduce"
                           : p.op == Op::kBarrierUp ? "Barrier"
                                                    : OpName(static_cast<uint32_t>(p.op));
  return Annotate(s, absl::StrFormat("host communicator rank %d/%d: %s #%d (root %d)", rank_,
                                     world_, what, seq_, p.root));
}

absl::Status HostCommunicator::Dispatch(const Pending& p, absl::Time deadline) {
  switch (p.op) {
    case Op::kReduce:
      return DoReduce(Op::kReduce, static_cast<const float*>(p.send), static_cast<float*>(p.recv),
                      p.n, p.root, deadline);
    case Op::kReduceF64:
      return DoReduce(Op::kReduceF64, static_cast<const double*>(p.send),
                      static_cast<double*>(p.recv), p.n, p.root, deadline);
    case Op::kBroadcast:
      return DoBroadcast(Op::kBroadcast, p.buf, p.n, p.root, deadline);
    case Op::kAllReduceUp:
      DGPTQ_RETURN_IF_ERROR(DoReduce(Op::kAllReduceUp, static_cast<const float*>(p.recv),
                                     static_cast<float*>(p.recv), p.n, 0, deadline));
      return DoBroadcast(Op::kAllReduceDown, p.recv, p.n * sizeof(float), 0, deadline);
    case Op::kBarrierUp:
      DGPTQ_RETURN_IF_ERROR(
          DoReduce<float>(Op::kBarrierUp, nullptr, nullptr, 0, 0, deadline));
      return DoBroadcast(Op::kBarrierDown, nullptr, 0, 0, deadline);
    default:
      return absl::InternalError("host communicator: bad op");
  }
}

// Root: sums chunk by chunk, adding the ranks' chunks in rank order. `send` may equal `recv`.
template <typename T>
absl::Status HostCommunicator::DoReduce(Op op, const T* send, T* recv, size_t count, int root,
                                        absl::Time deadline) {
  const size_t bytes = count * sizeof(T);
  if (rank_ != root) return SendMsg(root, op, send, bytes, deadline);
  for (int j = 0; j < world_; ++j) {
    if (j != rank_) DGPTQ_RETURN_IF_ERROR(RecvHeader(j, op, bytes, deadline));
  }
  const size_t chunk = std::min(count, kChunkFloats * sizeof(float) / sizeof(T));
  std::vector<T> own(chunk), tmp(chunk);
  for (size_t off = 0; off < count; off += chunk) {
    const size_t n = std::min(chunk, count - off);
    std::memcpy(own.data(), send + off, n * sizeof(T));
    T* acc = recv + off;
    for (int j = 0; j < world_; ++j) {
      const T* src = own.data();
      if (j != rank_) {
        DGPTQ_RETURN_IF_ERROR(RecvPayload(j, tmp.data(), n * sizeof(T), deadline));
        src = tmp.data();
      }
      if (j == 0) {
        std::memcpy(acc, src, n * sizeof(T));
      } else {
        for (size_t i = 0; i < n; ++i) acc[i] += src[i];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status HostCommunicator::DoBroadcast(Op op, void* buf, size_t bytes, int root,
                                           absl::Time deadline) {
  if (rank_ == root) {
    for (int j = 0; j < world_; ++j) {
      if (j != rank_) DGPTQ_RETURN_IF_ERROR(SendMsg(j, op, buf, bytes, deadline));
    }
    return absl::OkStatus();
  }
  DGPTQ_RETURN_IF_ERROR(RecvHeader(root, op, bytes, deadline));
  return RecvPayload(root, buf, bytes, deadline);
}

absl::Status HostCommunicator::SendMsg(int peer, Op op, const void* data, size_t bytes,
                                       absl::Time deadline) {
  const Header h{kMsgMagic, static_cast<uint32_t>(op), seq_, bytes};
  DGPTQ_RETURN_IF_ERROR(net::SendAll(peers_[peer].get(), &h, sizeof(h), deadline, peer));
  sent_ += sizeof(h);
  DGPTQ_RETURN_IF_ERROR(net::SendAll(peers_[peer].get(), data, bytes, deadline, peer));
  sent_ += bytes;
  return absl::OkStatus();
}

absl::Status HostCommunicator::RecvHeader(int peer, Op op, size_t bytes, absl::Time deadline) {
  Header h{};
  DGPTQ_RETURN_IF_ERROR(net::RecvAll(peers_[peer].get(), &h, sizeof(h), deadline, peer));
  received_ += sizeof(h);
  if (h.magic != kMsgMagic) {
    return absl::DataLossError(
        absl::StrFormat("rank %d sent a corrupt message header (magic %#x)", peer, h.magic));
  }
  if (h.op != static_cast<uint32_t>(op) || h.seq != seq_ || h.bytes != bytes) {
    return absl::DataLossError(absl::StrFormat(
        "rank %d sent %s #%d of %d bytes where %s #%d of %d bytes was expected: the ranks "
        "issued different collectives",
        peer, OpName(h.op), h.seq, h.bytes, OpName(static_cast<uint32_t>(op)), seq_, bytes));
  }
  return absl::OkStatus();
}

absl::Status HostCommunicator::RecvPayload(int peer, void* data, size_t bytes,
                                           absl::Time deadline) {
  DGPTQ_RETURN_IF_ERROR(net::RecvAll(peers_[peer].get(), data, bytes, deadline, peer));
  received_ += bytes;
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<Communicator> NewHostCommunicator(int rank, int world, absl::Duration timeout,
                                                  std::vector<net::Fd> peers) {
  return std::make_unique<HostCommunicator>(rank, world, timeout, std::move(peers));
}

}  // namespace dgptq::worker
