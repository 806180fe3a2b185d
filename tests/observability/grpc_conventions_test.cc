// The gRPC conventions of both daemons, through their real ports: grpc.health.v1 answers
// SERVING for the server and for its service, reflection lists the services, and a
// coordinator stopped by SIGTERM ends an open WatchJob with UNAVAILABLE (clients resume)
// and exits 0 within its bound.
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/observability/observability_test_util.h"

namespace dgptq::observability {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using ::testing::Contains;
using ::testing::HasSubstr;

std::shared_ptr<grpc::Channel> Channel(int port) {
  return grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                             grpc::InsecureChannelCredentials());
}

// grpc.health.v1.Health/Check of `service` on `port`.
grpc::Status Check(int port, const std::string& service, HealthCheckResponse* resp) {
  auto stub = grpc::health::v1::Health::NewStub(Channel(port));
  HealthCheckRequest req;
  req.set_service(service);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  return stub->Check(&ctx, req, resp);
}

// The services reflection lists on `port`.
std::vector<std::string> ListServices(int port) {
  namespace rf = grpc::reflection::v1alpha;
  auto stub = rf::ServerReflection::NewStub(Channel(port));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  auto stream = stub->ServerReflectionInfo(&ctx);
  rf::ServerReflectionRequest req;
  req.set_list_services("");
  std::vector<std::string> names;
  rf::ServerReflectionResponse resp;
  if (stream->Write(req) && stream->Read(&resp)) {
    for (const rf::ServiceResponse& s : resp.list_services_response().service()) {
      names.push_back(s.name());
    }
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  return names;
}

using GrpcConventions = Cluster;

TEST_F(GrpcConventions, HealthServesAndReflectionListsServicesOnBothDaemons) {
  const Daemon& worker = StartWorker();
  ASSERT_GT(worker.port, 0) << worker.proc->Log();
  const std::pair<int, std::string> daemons[] = {{coordinator_.port, "dgptq.v1.Coordinator"},
                                                 {worker.port, "dgptq.v1.Worker"}};
  for (const auto& [port, service] : daemons) {
    for (const std::string& name : {std::string(), service}) {
      HealthCheckResponse resp;
      const grpc::Status st = Check(port, name, &resp);
      ASSERT_TRUE(st.ok()) << service << " '" << name << "': " << st.error_message();
      EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING) << service << " '" << name << "'";
    }
    HealthCheckResponse resp;
    EXPECT_EQ(Check(port, "no.such.Service", &resp).error_code(), grpc::StatusCode::NOT_FOUND);
    const std::vector<std::string> names = ListServices(port);
    EXPECT_THAT(names, Contains(service));
    EXPECT_THAT(names, Contains("grpc.health.v1.Health"));
    EXPECT_THAT(names, Contains("grpc.reflection.v1alpha.ServerReflection"));
  }
}

TEST_F(GrpcConventions, SigtermEndsWatchJobWithUnavailable) {
  // No worker: the job stays QUEUED and its watch stays open.
  const std::string id = Submit(Spec("out", 1));
  ASSERT_FALSE(id.empty());
  v1::WatchJobRequest req;
  req.set_job_id(id);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 20s);
  auto reader = stub_->WatchJob(&ctx, req);
  v1::JobEvent e;
  ASSERT_TRUE(reader->Read(&e));  // QUEUED
  const auto t0 = std::chrono::steady_clock::now();
  coordinator_.proc->Signal(SIGTERM);
  while (reader->Read(&e)) {
  }
  const grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("coordinator shutting down"));
  EXPECT_EQ(coordinator_.proc->Wait(10s), 0) << coordinator_.proc->Log();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 6s);  // the 3 s grace and some
}

}  // namespace
}  // namespace dgptq::observability
