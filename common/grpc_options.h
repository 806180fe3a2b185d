// The gRPC settings every dgptq server and channel shares (issue 5), in one place: keepalive
// that keeps idle streams alive behind load balancers and NAT, explicit message size limits,
// quick reconnects, and the server both daemons run (their service, the standard
// grpc.health.v1 health service and grpc.reflection.v1alpha reflection), plaintext or TLS
// (grpc_security.h). Its own library, dgptq_grpc_options, beside dgptq_grpc_status: the rest of
// common/ knows no gRPC.
//
// Idle streams: a WatchJob of a queued job or a worker's control stream may carry nothing for
// hours. L4 load balancers and NAT drop connections idle for longer than their timeout (60 s
// to 350 s is common), silently, so both ends ping every kGrpcKeepaliveTime, with or without
// calls, and a peer that does not answer within kGrpcKeepaliveTimeout is dropped. Servers
// accept client pings down to kGrpcMinPingInterval apart; a client pinging more often would
// be sent GOAWAY "too_many_pings".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/grpc_security.h"
#include "grpcpp/channel.h"
#include "grpcpp/server.h"
#include "grpcpp/support/channel_arguments.h"

namespace dgptq {

// Largest message sent or received on any dgptq server or channel (an Assignment carries a
// whole plan; everything else is small).
inline constexpr int kGrpcMaxMessageBytes = 64 << 20;
inline constexpr absl::Duration kGrpcKeepaliveTime = absl::Seconds(30);
inline constexpr absl::Duration kGrpcKeepaliveTimeout = absl::Seconds(10);
inline constexpr absl::Duration kGrpcMinPingInterval = absl::Seconds(10);

// Arguments for a channel to a dgptq daemon: keepalive as above, the message size limits and
// reconnect backoff from 200 ms up to 2 s (gRPC's defaults start at 1 s and grow to 120 s,
// longer than a caller's whole connect deadline).
grpc::ChannelArguments GrpcChannelArguments();

// A channel to the daemon at `address` ("host:port") with GrpcChannelArguments(), TLS when
// `credentials` has it (and its server name override), and its bearer token, if any, in every
// call's metadata ("authorization: Bearer <token>"). No I/O until the first call.
std::shared_ptr<grpc::Channel> MakeGrpcChannel(const std::string& address,
                                               const GrpcChannelCredentials& credentials = {});

// A service to serve and the name health checks ask for (its full proto name, e.g.
// "dgptq.v1.Coordinator"). Not owned; it must outlive the server.
struct GrpcService {
  std::string name;
  grpc::Service* service = nullptr;
};

// Starts a gRPC server on `address` ("host:port"; port 0 picks one, written to `*port`)
// serving `services`, health (SERVING for "" and every service name until
// SetGrpcServing(false)) and reflection, with the keepalive settings above, plaintext or with
// `tls`, receiving messages of at most `max_receive_bytes` (larger ones fail with
// RESOURCE_EXHAUSTED before any handler runs). InvalidArgument naming the file when a TLS file
// is unusable (LoadServerCredentials); Unavailable when the address cannot be bound.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpcServer(
    const std::string& address, const std::vector<GrpcService>& services, int* port,
    const GrpcServerTls& tls = {}, int max_receive_bytes = kGrpcMaxMessageBytes);

// Sets the health status of "" and every service of `server` (a draining daemon reports
// NOT_SERVING before it stops).
void SetGrpcServing(grpc::Server& server, bool serving);

}  // namespace dgptq
