#include "worker/comm/host_socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dgptq::worker::net {
namespace {

std::string Errno(int e) { return std::strerror(e); }

sockaddr_in ToSockaddr(const Endpoint& e) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = e.ip;
  sa.sin_port = htons(e.port);
  return sa;
}

absl::StatusOr<Fd> NewSocket() {
  Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return absl::InternalError(absl::StrCat("socket(): ", Errno(errno)));
  return fd;
}

// Milliseconds left until `deadline`, for poll(); 0 when past it.
int MillisLeft(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
}

// Waits for `events` on `fd`; DeadlineExceeded naming `what` if the deadline passes first.
absl::Status WaitFor(int fd, short events, absl::Time deadline, const std::string& what) {
  while (true) {
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, MillisLeft(deadline));
    if (n > 0) return absl::OkStatus();  // readiness or an error; the next syscall tells
    if (n < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("poll(): ", Errno(errno)));
    }
    if (n == 0 && absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("timed out waiting for ", what));
    }
  }
}

std::string PeerName(int peer) { return absl::StrCat("rank ", peer); }

}  // namespace

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.release();
  }
  return *this;
}

int Fd::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void Fd::reset() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

absl::StatusOr<Endpoint> ParseAddress(std::string_view address) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(std::string(address.substr(colon + 1)), &port) || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad communicator address '",
                                                   std::string(address),
                                                   "': expected host:port, e.g. 127.0.0.1:29500"));
  }
  const std::string host(address.substr(0, colon));
  Endpoint e;
  e.port = static_cast<uint16_t>(port);
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) == 1) {
    e.ip = a.s_addr;
    return e;
  }
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("bad communicator address '",
                                                   std::string(address),
                                                   "': cannot resolve host: ", gai_strerror(rc)));
  }
  e.ip = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr.s_addr;
  freeaddrinfo(res);
  return e;
}

std::string FormatEndpoint(const Endpoint& e) {
  char buf[INET_ADDRSTRLEN] = {};
  in_addr a{};
  a.s_addr = e.ip;
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return absl::StrCat(buf, ":", e.port);
}

absl::StatusOr<Fd> Listen(const Endpoint& at) {
  absl::StatusOr<Fd> fd = NewSocket();
  if (!fd.ok()) return fd.status();
  const int one = 1;
  setsockopt(fd->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const sockaddr_in sa = ToSockaddr(at);
  if (bind(fd->get(), reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot bind ", FormatEndpoint(at), ": ", Errno(errno)));
  }
  if (listen(fd->get(), 128) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", FormatEndpoint(at), ": ", Errno(errno)));
  }
  return fd;
}

static absl::StatusOr<Endpoint> NameOf(int fd, bool peer) {
  sockaddr_in sa{};
  socklen_t len = sizeof(sa);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  if (rc != 0) return absl::InternalError(absl::StrCat("getsockname(): ", Errno(errno)));
  return Endpoint{sa.sin_addr.s_addr, ntohs(sa.sin_port)};
}

absl::StatusOr<Endpoint> LocalEndpoint(int fd) { return NameOf(fd, false); }
absl::StatusOr<Endpoint> PeerEndpoint(int fd) { return NameOf(fd, true); }

absl::StatusOr<Fd> Connect(const Endpoint& to, absl::Time deadline, std::string_view what) {
  const std::string where = absl::StrCat(std::string(what), " at ", FormatEndpoint(to));
  int last_errno = 0;
  while (true) {
    absl::StatusOr<Fd> fd = NewSocket();
    if (!fd.ok()) return fd.status();
    const sockaddr_in sa = ToSockaddr(to);
    int rc = connect(fd->get(), reinterpret_cast<const sockaddr*>(&sa), sizeof(sa));
    if (rc != 0 && errno == EINPROGRESS) {
      absl::Status w = WaitFor(fd->get(), POLLOUT, deadline, where);
      if (!w.ok()) return absl::DeadlineExceededError(absl::StrCat("cannot connect to ", where));
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd->get(), SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rc == 0) {
      const int one = 1;
      setsockopt(fd->get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return fd;
    }
    last_errno = errno;
    if (absl::Now() + absl::Milliseconds(50) >= deadline) break;
    absl::SleepFor(absl::Milliseconds(50));  // refused: the listener may come up later
  }
  return absl::UnavailableError(
      absl::StrCat("cannot connect to ", where, " before the deadline: ", Errno(last_errno)));
}

absl::StatusOr<Fd> Accept(int listen_fd, absl::Time deadline) {
  while (true) {
    Fd fd(accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (fd.valid()) {
      const int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return fd;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
      return absl::InternalError(absl::StrCat("accept(): ", Errno(errno)));
    }
    absl::Status w = WaitFor(listen_fd, POLLIN, deadline, "peers to connect");
    if (!w.ok()) return w;
  }
}

absl::Status SendAll(int fd, const void* data, size_t n, absl::Time deadline, int peer) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      absl::Status w = WaitFor(fd, POLLOUT, deadline, PeerName(peer) + " to receive");
      if (!w.ok()) return w;
      continue;
    }
    return absl::UnavailableError(
        absl::StrFormat("connection to rank %d lost while sending: %s", peer, Errno(errno)));
  }
  return absl::OkStatus();
}

absl::Status RecvAll(int fd, void* data, size_t n, absl::Time deadline, int peer) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = recv(fd, p, n, MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    if (k == 0) {
      return absl::UnavailableError(absl::StrFormat("rank %d closed the connection", peer));
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      absl::Status w = WaitFor(fd, POLLIN, deadline, PeerName(peer) + " to send");
      if (!w.ok()) return w;
      continue;
    }
    return absl::UnavailableError(
        absl::StrFormat("connection to rank %d lost while receiving: %s", peer, Errno(errno)));
  }
  return absl::OkStatus();
}

}  // namespace dgptq::worker::net
