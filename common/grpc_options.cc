#include "common/grpc_options.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace dgptq {
namespace {

int Ms(absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); }

}  // namespace

grpc::ChannelArguments GrpcChannelArguments() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kGrpcMaxMessageBytes);
  args.SetMaxSendMessageSize(kGrpcMaxMessageBytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, Ms(kGrpcKeepaliveTime));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Ms(kGrpcKeepaliveTimeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // pings on a silent stream too
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  return args;
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpcServer(
    const std::string& address, const std::vector<GrpcService>& services, int* port) {
  // Both must be set before the builder is made (TOOLCHAIN.md).
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
  for (const GrpcService& s : services) builder.RegisterService(s.service);
  builder.SetMaxReceiveMessageSize(kGrpcMaxMessageBytes);
  builder.SetMaxSendMessageSize(kGrpcMaxMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Ms(kGrpcKeepaliveTime));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Ms(kGrpcKeepaliveTimeout));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             Ms(kGrpcMinPingInterval));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve gRPC on ", address));
  }
  for (const GrpcService& s : services) {
    server->GetHealthCheckService()->SetServingStatus(s.name, true);
  }
  return server;
}

void SetGrpcServing(grpc::Server& server, bool serving) {
  server.GetHealthCheckService()->SetServingStatus(serving);
}

}  // namespace dgptq
