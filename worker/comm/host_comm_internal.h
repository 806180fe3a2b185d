// Shared between host_comm.cc (collectives) and host_rendezvous.cc (mesh setup). Internal.
#pragma once

#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/comm/host_socket.h"

namespace dgptq::worker {

// A host communicator over an established mesh: `peers[j]` is the connection to rank j
// (empty for j == rank).
std::unique_ptr<Communicator> NewHostCommunicator(int rank, int world, absl::Duration timeout,
                                                  std::vector<net::Fd> peers);

}  // namespace dgptq::worker
