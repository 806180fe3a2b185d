// A real gRPC server on loopback (port 0) with a trivial Coordinator implementation, called
// through a real client stub: asserts the codes and messages a client sees.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "dgptq/v1/coordinator.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace dgptq {
namespace {

using v1::Coordinator;

// Knows no jobs; echoes ListJobs paging so the test can see the request arrived intact.
class FakeCoordinator final : public Coordinator::Service {
 public:
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* request, v1::Job*) override {
    return ToGrpcStatus(
        absl::NotFoundError(absl::StrCat("job '", request->job_id(), "' not found")));
  }

  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    if (request->page_size() < 0) {
      return ToGrpcStatus(absl::InvalidArgumentError("page_size must be >= 0"));
    }
    for (int s : request->states()) {
      v1::Job* job = response->add_jobs();
      job->set_job_id(absl::StrCat("job-", s));
      job->set_state(static_cast<v1::JobState>(s));
    }
    response->set_next_page_token(absl::StrCat(request->page_token(), "+", request->page_size()));
    return grpc::Status::OK;
  }

  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest*,
                         v1::SubmitJobResponse*) override {
    return ToGrpcStatus(absl::InvalidArgumentError(std::string(100000, 'm')));
  }
};

class CoordinatorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
    stub_ = Coordinator::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  static void SetDeadline(grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  }

  FakeCoordinator service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Coordinator::Stub> stub_;
};

TEST_F(CoordinatorServiceTest, GetJobUnknownIsNotFoundWithMessage) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::GetJobRequest request;
  request.set_job_id("j-42");
  v1::Job job;
  const grpc::Status status = stub_->GetJob(&ctx, request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "job 'j-42' not found");
  const absl::Status back = FromGrpcStatus(status);
  EXPECT_TRUE(absl::IsNotFound(back));
  EXPECT_EQ(back.message(), "job 'j-42' not found");
}

TEST_F(CoordinatorServiceTest, ListJobsEchoesPagingAndFilter) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::ListJobsRequest request;
  request.set_page_size(7);
  request.set_page_token("tok");
  request.add_states(v1::JOB_STATE_RUNNING);
  request.add_states(v1::JOB_STATE_FAILED);
  v1::ListJobsResponse response;
  const grpc::Status status = stub_->ListJobs(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.next_page_token(), "tok+7");
  ASSERT_EQ(response.jobs_size(), 2);
  EXPECT_EQ(response.jobs(0).state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(response.jobs(1).job_id(), absl::StrCat("job-", int{v1::JOB_STATE_FAILED}));
}

TEST_F(CoordinatorServiceTest, InvalidArgumentReachesClient) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::ListJobsRequest request;
  request.set_page_size(-1);
  v1::ListJobsResponse response;
  const grpc::Status status = stub_->ListJobs(&ctx, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "page_size must be >= 0");
}

TEST_F(CoordinatorServiceTest, LongErrorMessageArrivesCapped) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::SubmitJobResponse response;
  const grpc::Status status = stub_->SubmitJob(&ctx, v1::SubmitJobRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message().size(), kMaxGrpcStatusMessageBytes);
}

TEST_F(CoordinatorServiceTest, UnimplementedRpcIsUnimplemented) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::CancelJobRequest request;
  request.set_job_id("j-1");
  v1::CancelJobResponse response;
  EXPECT_EQ(stub_->CancelJob(&ctx, request, &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(CoordinatorServiceTest, DeadServerIsUnavailable) {
  server_->Shutdown();
  server_.reset();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::Job job;
  const grpc::Status status = stub_->GetJob(&ctx, v1::GetJobRequest(), &job);
  EXPECT_TRUE(status.error_code() == grpc::StatusCode::UNAVAILABLE ||
              status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
      << status.error_code() << " " << status.error_message();
  EXPECT_TRUE(absl::IsUnavailable(FromGrpcStatus(status)) ||
              absl::IsDeadlineExceeded(FromGrpcStatus(status)));
}

}  // namespace
}  // namespace dgptq
