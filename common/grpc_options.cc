#include "common/grpc_options.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/support/client_interceptor.h"

namespace dgptq {
namespace {

int Ms(absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); }

// Adds "authorization: Bearer <token>" to the initial metadata of every call. An interceptor
// rather than call credentials: gRPC sends call credentials over TLS only, and tokens also
// serve plaintext deployments on a trusted network (and the tests).
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;  // owned by the factory, which the channel keeps
};

class BearerTokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : header_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(&header_);
  }

 private:
  const std::string header_;
};

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

std::shared_ptr<grpc::Channel> MakeGrpcChannel(const std::string& address,
                                               const GrpcChannelCredentials& credentials) {
  grpc::ChannelArguments args = GrpcChannelArguments();
  if (!credentials.server_name.empty()) args.SetSslTargetNameOverride(credentials.server_name);
  std::shared_ptr<grpc::ChannelCredentials> creds =
      credentials.tls != nullptr ? credentials.tls : grpc::InsecureChannelCredentials();
  if (credentials.token.empty()) return grpc::CreateCustomChannel(address, creds, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> token;
  token.push_back(std::make_unique<BearerTokenInterceptorFactory>(credentials.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, creds, args,
                                                                 std::move(token));
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpcServer(
    const std::string& address, const std::vector<GrpcService>& services, int* port,
    const GrpcServerTls& tls, int max_receive_bytes) {
  DGPTQ_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds,
                         LoadServerCredentials(tls));
  // Both must be set before the builder is made (TOOLCHAIN.md).
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, creds, port);
  for (const GrpcService& s : services) builder.RegisterService(s.service);
  builder.SetMaxReceiveMessageSize(max_receive_bytes);
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
