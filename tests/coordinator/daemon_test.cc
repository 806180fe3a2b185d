// The real `dgptq-coordinator` executable as a child process: port file, an RPC, SIGTERM.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>

#include "dgptq/v1/coordinator.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/subprocess.h"
#include "tests/test_util.h"

namespace dgptq::coordinator {
namespace {

using dgptq::testing::Subprocess;
using dgptq::testing::TempDir;
using namespace std::chrono_literals;

TEST(DaemonTest, ServesOnThePortFileAndExitsCleanlyOnSigterm) {
  TempDir tmp;
  const std::string port_file = tmp / "port";
  Subprocess daemon({DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--port-file", port_file,
                     "--lease-ttl", "2", "--heartbeat-interval", "0.5"},
                    tmp / "log");
  const int port = dgptq::testing::WaitForPortFile(port_file, 10s);
  ASSERT_GT(port, 0) << daemon.Log();
  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = v1::Coordinator::NewStub(channel);
  v1::SubmitJobRequest req;  // no model_path
  v1::SubmitJobResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  const grpc::Status st = stub->SubmitJob(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("model_path"));

  daemon.Signal(SIGTERM);
  // A sync C++ client drives its connection only while it waits on it: watch the channel so
  // it sees the server's GOAWAY (an idle one would hold the server's shutdown to its grace).
  const auto t0 = std::chrono::steady_clock::now();
  int code = -1;
  while (code < 0 && std::chrono::steady_clock::now() - t0 < 5s) {
    channel->WaitForStateChange(channel->GetState(false), std::chrono::system_clock::now() + 20ms);
    code = daemon.Wait(0ms);
  }
  EXPECT_EQ(code, 0) << daemon.Log();
}

TEST(DaemonTest, BadFlagsExitWithTwo) {
  TempDir tmp;
  Subprocess daemon({DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--comm-backend", "mpi"},
                    tmp / "log");
  EXPECT_EQ(daemon.Wait(5s), 2) << daemon.Log();
  EXPECT_THAT(daemon.Log(), ::testing::HasSubstr("--comm-backend"));
}

}  // namespace
}  // namespace dgptq::coordinator
