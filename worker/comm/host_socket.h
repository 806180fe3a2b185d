// TCP plumbing for the host communicator: address parsing, listen/connect, and
// deadline-bounded exact sends/receives on non-blocking sockets (poll()). Internal to
// worker/comm; errors name the peer rank.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dgptq::worker::net {

// An IPv4 endpoint; `ip` in network byte order, `port` in host order.
struct Endpoint {
  uint32_t ip = 0;
  uint16_t port = 0;
};

// Parses "a.b.c.d:port" or "hostname:port" (resolved to IPv4). InvalidArgument when malformed.
absl::StatusOr<Endpoint> ParseAddress(std::string_view address);
std::string FormatEndpoint(const Endpoint& e);

// Owns one file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();
  void reset();

 private:
  int fd_ = -1;
};

// Binds a listening, non-blocking socket; port 0 picks a free one.
absl::StatusOr<Fd> Listen(const Endpoint& at);
// The endpoint a socket is bound to (getsockname) or connected to (getpeername).
absl::StatusOr<Endpoint> LocalEndpoint(int fd);
absl::StatusOr<Endpoint> PeerEndpoint(int fd);

// Connects to `to`, retrying refused connections until `deadline` (the peer may not listen
// yet). Unavailable/DeadlineExceeded naming `what` on failure.
absl::StatusOr<Fd> Connect(const Endpoint& to, absl::Time deadline, std::string_view what);
// Accepts one connection before `deadline`.
absl::StatusOr<Fd> Accept(int listen_fd, absl::Time deadline);

// Sends/receives exactly `n` bytes before `deadline`. Unavailable when the peer closed or
// reset the connection, DeadlineExceeded when it did not move data in time; `peer` is the
// rank named in the message.
absl::Status SendAll(int fd, const void* data, size_t n, absl::Time deadline, int peer);
absl::Status RecvAll(int fd, void* data, size_t n, absl::Time deadline, int peer);

}  // namespace dgptq::worker::net
