// Limits of a real `dgptq-coordinator`: WatchJob streams beyond --max-watchers and messages
// beyond --max-request-bytes are RESOURCE_EXHAUSTED; over-long fields are INVALID_ARGUMENT
// naming the field; bad limit flags exit 2.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <string>
#include <thread>

#include "common/grpc_options.h"
#include "dgptq/v1/coordinator.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/client_test_util.h"
#include "tests/security/security_test_util.h"

namespace dgptq::testing {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

// An INVALID_ARGUMENT status whose message names `field`.
MATCHER_P(InvalidArgumentNaming, field, "") {
  return arg.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
         arg.error_message().find(field) != std::string::npos;
}

class LimitsTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& flags) {
    coordinator_ = StartCoordinator(dir_, "coordinator", flags);
    ASSERT_GT(coordinator_.port, 0) << coordinator_.proc->Log();
    stub_ = v1::Coordinator::NewStub(MakeGrpcChannel(coordinator_.address()));
  }
  // A job that stays QUEUED (no worker registers).
  std::string SubmitQueuedJob() {
    const Result model = MakeTinyModel(dir_ / "model", outputs_);
    EXPECT_EQ(model.code, kOk) << model.err;
    v1::SubmitJobRequest req;
    req.mutable_spec()->set_model_path(dir_ / "model");
    req.mutable_spec()->set_output_path(dir_ / "out");
    req.mutable_spec()->mutable_quantization()->set_rtn(true);
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status st = stub_->SubmitJob(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.job().job_id();
  }
  grpc::Status Submit(const v1::SubmitJobRequest& req) {
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    return stub_->SubmitJob(&ctx, req, &resp);
  }

  // An open WatchJob stream that has delivered its first event (so the server counts it).
  struct Watch {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader;
  };
  std::unique_ptr<Watch> OpenWatch(const std::string& job_id, bool* got_event) {
    auto w = std::make_unique<Watch>();
    v1::WatchJobRequest req;
    req.set_job_id(job_id);
    w->reader = stub_->WatchJob(&w->ctx, req);
    v1::JobEvent e;
    *got_event = w->reader->Read(&e);
    return w;
  }

  TempDir dir_;
  Outputs outputs_{dir_};
  Coordinator coordinator_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(LimitsTest, WatchersBeyondTheLimitAreResourceExhausted) {
  Start({"--max-watchers", "2"});
  const std::string id = SubmitQueuedJob();
  ASSERT_FALSE(id.empty());
  bool ok = false;
  auto first = OpenWatch(id, &ok);
  ASSERT_TRUE(ok);
  auto second = OpenWatch(id, &ok);
  ASSERT_TRUE(ok);
  auto third = OpenWatch(id, &ok);
  EXPECT_FALSE(ok);
  const grpc::Status refused = third->reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("--max-watchers 2"));

  // A closed stream frees its slot (the server notices within a watch slice).
  first->ctx.TryCancel();
  first->reader->Finish();
  bool reopened = false;
  for (auto end = std::chrono::steady_clock::now() + 10s;
       !reopened && std::chrono::steady_clock::now() < end;) {
    auto again = OpenWatch(id, &reopened);
    if (!reopened) std::this_thread::sleep_for(50ms);
    again->ctx.TryCancel();
  }
  EXPECT_TRUE(reopened);
  second->ctx.TryCancel();
}

TEST_F(LimitsTest, OversizedRequestsAreResourceExhausted) {
  Start({});  // the default --max-request-bytes, 4 MiB
  v1::SubmitJobRequest req;
  req.set_request_id(std::string(5 << 20, 'x'));
  EXPECT_EQ(Submit(req).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  req.set_request_id(std::string(3 << 20, 'x'));  // under the limit: the field's own limit
  EXPECT_THAT(Submit(req), InvalidArgumentNaming("SubmitJobRequest.request_id"));
}

TEST_F(LimitsTest, OverLongFieldsAreInvalidArgumentNamingTheField) {
  Start({"--max-request-bytes", "65536"});
  v1::SubmitJobRequest req;
  req.mutable_spec()->set_model_path("/" + std::string(4096, 'm'));
  req.mutable_spec()->set_output_path("/tmp/out");
  EXPECT_THAT(Submit(req), InvalidArgumentNaming("JobSpec.model_path is 4097 bytes long"));
  req.mutable_spec()->set_model_path("/tmp/model");
  req.mutable_spec()->mutable_calibration()->set_path(std::string("/tmp/a\0b", 8));
  EXPECT_THAT(Submit(req), InvalidArgumentNaming("JobSpec.calibration.path must not contain"));
  req.set_request_id(std::string(257, 'r'));
  EXPECT_THAT(Submit(req), InvalidArgumentNaming("SubmitJobRequest.request_id"));
  req.set_request_id(std::string(70000, 'r'));  // above --max-request-bytes
  EXPECT_EQ(Submit(req).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  v1::RegisterWorkerRequest reg;
  reg.set_name(std::string(300, 'w'));
  v1::RegisterWorkerResponse registered;
  grpc::ClientContext reg_ctx;
  EXPECT_THAT(stub_->RegisterWorker(&reg_ctx, reg, &registered),
              InvalidArgumentNaming("RegisterWorkerRequest.name"));
  v1::CancelJobRequest cancel;
  cancel.set_job_id("j");
  cancel.set_reason(std::string(2000, 'c'));
  v1::CancelJobResponse cancelled;
  grpc::ClientContext cancel_ctx;
  EXPECT_THAT(stub_->CancelJob(&cancel_ctx, cancel, &cancelled),
              InvalidArgumentNaming("CancelJobRequest.reason"));
}

TEST_F(LimitsTest, BadLimitFlagsExitTwo) {
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--max-watchers", "0"},
        std::vector<std::string>{"--max-request-bytes", "1000"}}) {
    std::vector<std::string> argv = {DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:0",
                                     "--metrics-listen", ""};
    argv.insert(argv.end(), flags.begin(), flags.end());
    Subprocess p(argv, dir_ / "bad.log");
    EXPECT_EQ(p.Wait(20s), kUsage) << p.Log();
    EXPECT_THAT(p.Log(), HasSubstr(flags[0]));
  }
}

}  // namespace
}  // namespace dgptq::testing
