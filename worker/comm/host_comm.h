// The host (TCP) communicator: CPU workers, and several workers sharing one machine or GPU.
//
// Topology: a full mesh of TCP connections, one per pair of ranks, built at init.
// - Rendezvous: rank 0 listens on `address` (see HostListener). Every other rank opens its own
//   listener (same local interface it reaches rank 0 through, port picked by the kernel),
//   connects to rank 0 and says hello {rank, world_size, listen port}. Rank 0 answers with the
//   table of all ranks' endpoints; then rank r connects to every rank 0 < j < r and accepts
//   from every j > r. Init ends with a Barrier, so Create returns only with a complete mesh.
// - Reduce(root): non-roots send to root; root sums in rank order 0, 1, ..., N-1 (fp32,
//   chunk by chunk) so results are deterministic and identical across runs and roots.
//   Broadcast(root): root sends to every rank. AllReduce = Reduce to 0 + Broadcast from 0.
//   Barrier = an empty message to rank 0 and an empty answer from it.
// - Framing: every message is a 24-byte header {magic, op tag, sequence number, payload
//   bytes} followed by the payload; the sequence number counts collectives on this
//   communicator. A header that does not match what this rank expects is DataLoss naming the
//   peer (the ranks issued different collectives). Native byte order: all ranks are assumed
//   to share one architecture.
// - Timeouts: every collective (each op of a group) has `timeout` to finish; a closed or reset
//   connection is Unavailable naming the peer, silence is DeadlineExceeded naming the peer.
// - bytes_sent()/bytes_received(): bytes on the wire, headers included.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace dgptq::worker {

// Rank 0's listening socket, bound before the communicator is created so that its address
// (with the port the kernel picked for port 0) can be relayed to the other ranks.
class HostListener {
 public:
  // `address` is "host:port"; port 0 picks a free port.
  static absl::StatusOr<std::unique_ptr<HostListener>> Bind(std::string_view address);
  ~HostListener();
  HostListener(const HostListener&) = delete;
  HostListener& operator=(const HostListener&) = delete;

  // "ip:port" the other ranks connect to.
  const std::string& address() const { return address_; }
  // Hands the socket to the caller (the communicator); the listener is empty afterwards.
  int release_fd();

 private:
  HostListener(int fd, std::string address) : fd_(fd), address_(std::move(address)) {}
  int fd_;
  std::string address_;
};

struct HostCommOptions {
  int rank = 0;
  int world_size = 1;
  // "host:port" of rank 0's listener. Rank 0 binds it unless it passes a HostListener.
  std::string address;
  // Limit of every call, and of the whole rendezvous at init.
  absl::Duration timeout = kDefaultCommTimeout;
};

// Builds the mesh (blocking, bounded by options.timeout). Rank 0 may pass a listener bound
// beforehand; other ranks pass none. InvalidArgument for bad options or address, Unavailable
// or DeadlineExceeded when peers cannot be reached in time.
absl::StatusOr<std::unique_ptr<Communicator>> CreateHostCommunicator(
    const HostCommOptions& options, std::unique_ptr<HostListener> listener = nullptr);

}  // namespace dgptq::worker
