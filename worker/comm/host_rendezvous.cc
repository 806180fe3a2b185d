// Rendezvous of the host communicator: builds the full TCP mesh described in host_comm.h.
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/comm/host_comm.h"
#include "worker/comm/host_comm_internal.h"
#include "worker/comm/host_socket.h"

namespace dgptq::worker {
namespace {

constexpr uint32_t kHelloMagic = 0x44474831;  // "DGH1"

struct Hello {
  uint32_t magic;
  int32_t rank;
  int32_t world;
  uint32_t port;
};

struct TableEntry {
  uint32_t ip;
  uint32_t port;
};

std::string Missing(const std::vector<net::Fd>& peers, int self) {
  std::vector<int> missing;
  for (int j = 0; j < static_cast<int>(peers.size()); ++j) {
    if (j != self && !peers[j].valid()) missing.push_back(j);
  }
  return absl::StrJoin(missing, ", ");
}

// Reads a hello from a freshly accepted connection and checks it names a rank in
// [lo, world) not seen yet.
absl::StatusOr<int> ReadHello(int fd, int lo, int world, const std::vector<net::Fd>& peers,
                              absl::Time deadline, Hello* hello) {
  DGPTQ_RETURN_IF_ERROR(Annotate(net::RecvAll(fd, hello, sizeof(*hello), deadline, -1),
                                 "reading the hello of a connecting rank"));
  if (hello->magic != kHelloMagic) {
    return absl::DataLossError("a connection that is not a dgptq host communicator peer");
  }
  if (hello->world != world) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "rank %d connected with world size %d, expected %d", hello->rank, hello->world, world));
  }
  if (hello->rank < lo || hello->rank >= world || peers[hello->rank].valid()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("unexpected or duplicate rank %d connected", hello->rank));
  }
  return hello->rank;
}

absl::Status RendezvousRoot(int listen_fd, int world, absl::Time deadline,
                            std::vector<net::Fd>* peers) {
  std::vector<TableEntry> table(world, TableEntry{0, 0});
  for (int i = 1; i < world; ++i) {
    absl::StatusOr<net::Fd> conn = net::Accept(listen_fd, deadline);
    if (!conn.ok()) {
      return Annotate(conn.status(), absl::StrCat("ranks not connected: ", Missing(*peers, 0)));
    }
    Hello hello{};
    DGPTQ_ASSIGN_OR_RETURN(const int r, ReadHello(conn->get(), 1, world, *peers, deadline, &hello));
    DGPTQ_ASSIGN_OR_RETURN(const net::Endpoint ep, net::PeerEndpoint(conn->get()));
    table[r] = TableEntry{ep.ip, hello.port};
    (*peers)[r] = std::move(*conn);
  }
  for (int r = 1; r < world; ++r) {
    DGPTQ_RETURN_IF_ERROR(net::SendAll((*peers)[r].get(), table.data(),
                                       table.size() * sizeof(TableEntry), deadline, r));
  }
  return absl::OkStatus();
}

absl::Status RendezvousPeer(int rank, int world, const std::string& address, absl::Time deadline,
                            std::vector<net::Fd>* peers) {
  DGPTQ_ASSIGN_OR_RETURN(const net::Endpoint root, net::ParseAddress(address));
  DGPTQ_ASSIGN_OR_RETURN(net::Fd conn0, net::Connect(root, deadline, "rank 0"));
  DGPTQ_ASSIGN_OR_RETURN(net::Endpoint local, net::LocalEndpoint(conn0.get()));
  local.port = 0;
  DGPTQ_ASSIGN_OR_RETURN(net::Fd listener, net::Listen(local));
  DGPTQ_ASSIGN_OR_RETURN(const net::Endpoint mine, net::LocalEndpoint(listener.get()));
  const Hello hello{kHelloMagic, rank, world, mine.port};
  DGPTQ_RETURN_IF_ERROR(net::SendAll(conn0.get(), &hello, sizeof(hello), deadline, 0));
  std::vector<TableEntry> table(world);
  DGPTQ_RETURN_IF_ERROR(Annotate(
      net::RecvAll(conn0.get(), table.data(), table.size() * sizeof(TableEntry), deadline, 0),
      "waiting for the rank table from rank 0 (are all ranks started?)"));
  (*peers)[0] = std::move(conn0);
  for (int j = 1; j < rank; ++j) {
    const net::Endpoint ep{table[j].ip, static_cast<uint16_t>(table[j].port)};
    DGPTQ_ASSIGN_OR_RETURN(net::Fd c, net::Connect(ep, deadline, absl::StrCat("rank ", j)));
    DGPTQ_RETURN_IF_ERROR(net::SendAll(c.get(), &hello, sizeof(hello), deadline, j));
    (*peers)[j] = std::move(c);
  }
  for (int k = rank + 1; k < world; ++k) {
    absl::StatusOr<net::Fd> c = net::Accept(listener.get(), deadline);
    if (!c.ok()) {
      return Annotate(c.status(), absl::StrCat("ranks not connected: ", Missing(*peers, rank)));
    }
    Hello h{};
    DGPTQ_ASSIGN_OR_RETURN(const int r, ReadHello(c->get(), rank + 1, world, *peers, deadline, &h));
    (*peers)[r] = std::move(*c);
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const HostCommOptions& o, bool has_listener) {
  if (o.world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("world size must be >= 1, got ", o.world_size));
  }
  if (o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("rank %d out of range for world size %d", o.rank, o.world_size));
  }
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("communicator timeout must be positive");
  }
  if (has_listener && o.rank != 0) {
    return absl::InvalidArgumentError("only rank 0 takes a HostListener");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HostListener>> HostListener::Bind(std::string_view address) {
  DGPTQ_ASSIGN_OR_RETURN(const net::Endpoint at, net::ParseAddress(address));
  DGPTQ_ASSIGN_OR_RETURN(net::Fd fd, net::Listen(at));
  DGPTQ_ASSIGN_OR_RETURN(const net::Endpoint bound, net::LocalEndpoint(fd.get()));
  return std::unique_ptr<HostListener>(new HostListener(fd.release(), net::FormatEndpoint(bound)));
}

HostListener::~HostListener() {
  if (fd_ >= 0) close(fd_);
}

int HostListener::release_fd() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateHostCommunicator(
    const HostCommOptions& options, std::unique_ptr<HostListener> listener) {
  DGPTQ_RETURN_IF_ERROR(ValidateOptions(options, listener != nullptr));
  const int rank = options.rank, world = options.world_size;
  std::vector<net::Fd> peers(world);
  if (world == 1) return NewHostCommunicator(rank, world, options.timeout, std::move(peers));
  const absl::Time deadline = absl::Now() + options.timeout;
  const std::string where = absl::StrFormat("host communicator rendezvous (rank %d/%d, at %s)",
                                            rank, world, options.address);
  if (rank == 0) {
    if (listener == nullptr) {
      DGPTQ_ASSIGN_OR_RETURN(listener, HostListener::Bind(options.address));
    }
    net::Fd listen_fd(listener->release_fd());
    DGPTQ_RETURN_IF_ERROR(
        Annotate(RendezvousRoot(listen_fd.get(), world, deadline, &peers), where));
  } else {
    DGPTQ_RETURN_IF_ERROR(
        Annotate(RendezvousPeer(rank, world, options.address, deadline, &peers), where));
  }
  std::unique_ptr<Communicator> comm =
      NewHostCommunicator(rank, world, options.timeout, std::move(peers));
  DGPTQ_RETURN_IF_ERROR(Annotate(comm->Barrier(), where));
  return comm;
}

}  // namespace dgptq::worker
