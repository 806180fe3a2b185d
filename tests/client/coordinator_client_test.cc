// CoordinatorClient against a scripted in-process Coordinator on loopback port 0: retries keep
// the request id, a broken WatchJob stream resumes at the next index, errors other than
// UNAVAILABLE are returned at once, and an address nobody listens on fails fast.
#include "coordinator/client/coordinator_client.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/client/client_test_util.h"

namespace dgptq::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::JobEvent StateEvent(int64_t index, v1::JobState from, v1::JobState to) {
  v1::JobEvent e;
  e.set_index(index);
  e.set_job_id("j-1");
  e.mutable_state_change()->set_from_state(from);
  e.mutable_state_change()->set_to_state(to);
  return e;
}

v1::JobEvent ProgressEvent(int64_t index, int layer) {
  v1::JobEvent e;
  e.set_index(index);
  e.set_job_id("j-1");
  e.mutable_progress()->set_layer(layer);
  e.mutable_progress()->set_num_layers(4);
  return e;
}

// Each RPC answers from a script the test sets up; requests are recorded.
class ScriptedCoordinator final : public v1::Coordinator::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override {
    std::lock_guard<std::mutex> lock(mu_);
    request_ids_.push_back(request->request_id());
    if (submit_unavailable_ > 0) {
      --submit_unavailable_;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining");
    }
    if (request->spec().quantization().bits() == 5) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "quantization.bits must be 2..8");
    }
    response->mutable_job()->set_job_id("j-1");
    response->set_created(true);
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                      v1::Job* job) override {
    if (get_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(get_delay_ms_));
    job->set_job_id(request->job_id());
    job->set_state(final_state_);
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    std::lock_guard<std::mutex> lock(mu_);
    page_tokens_.push_back(request->page_token());
    const int start = request->page_token().empty() ? 0 : std::stoi(request->page_token());
    const int end = std::min(kJobs, start + request->page_size());
    for (int i = start; i < end; ++i) response->add_jobs()->set_job_id(absl::StrCat("j-", i));
    if (end < kJobs) response->set_next_page_token(absl::StrCat(end));
    return grpc::Status::OK;
  }

  // Stream k sends events [from, stream_ends_[k]) of `log_`, then ends with stream_status_[k]
  // (the last entries repeat).
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    size_t k;
    {
      std::lock_guard<std::mutex> lock(mu_);
      k = std::min(watch_from_.size(), stream_ends_.size() - 1);
      watch_from_.push_back(request->from_index());
    }
    for (int64_t i = request->from_index(); i < stream_ends_[k]; ++i) writer->Write(log_[i]);
    return stream_status_[std::min(k, stream_status_.size() - 1)];
  }

  static constexpr int kJobs = 5;
  std::mutex mu_;
  int submit_unavailable_ = 0;
  int get_delay_ms_ = 0;
  std::atomic<v1::JobState> final_state_ = v1::JOB_STATE_SUCCEEDED;  // set by the test thread
  std::vector<std::string> request_ids_, page_tokens_;
  std::vector<v1::JobEvent> log_;
  std::vector<int64_t> stream_ends_, watch_from_;
  std::vector<grpc::Status> stream_status_;
};

class CoordinatorClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    service_.log_ = {StateEvent(0, v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED),
                     StateEvent(1, v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING),
                     ProgressEvent(2, 0), ProgressEvent(3, 1),
                     StateEvent(4, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED)};
  }
  void TearDown() override { server_->Shutdown(); }

  ClientOptions Options() const {
    ClientOptions o;
    o.address = absl::StrCat("127.0.0.1:", port_);
    o.connect_timeout = absl::Seconds(5);
    o.initial_backoff = absl::Milliseconds(10);
    return o;
  }

  ScriptedCoordinator service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(CoordinatorClientTest, SubmitRetriesUnavailableWithTheSameRequestId) {
  service_.submit_unavailable_ = 2;
  CoordinatorClient client(Options());
  v1::JobSpec spec;
  auto r = client.SubmitJob(spec, "req-7");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->job().job_id(), "j-1");
  EXPECT_THAT(service_.request_ids_, ElementsAre("req-7", "req-7", "req-7"));
}

TEST_F(CoordinatorClientTest, SubmitGivesUpAfterMaxAttempts) {
  service_.submit_unavailable_ = 100;
  ClientOptions o = Options();
  o.max_attempts = 3;
  CoordinatorClient client(o);
  auto r = client.SubmitJob(v1::JobSpec(), "req-8");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.request_ids_.size(), 3u);
}

TEST_F(CoordinatorClientTest, InvalidArgumentIsReturnedWithoutRetry) {
  CoordinatorClient client(Options());
  v1::JobSpec spec;
  spec.mutable_quantization()->set_bits(5);
  auto r = client.SubmitJob(spec, "req-9");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("quantization.bits"));
  EXPECT_EQ(service_.request_ids_.size(), 1u);
}

TEST_F(CoordinatorClientTest, ListAllJobsFollowsPageTokens) {
  CoordinatorClient client(Options());
  v1::ListJobsRequest request;
  request.set_page_size(2);
  auto r = client.ListAllJobs(request);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<std::string> ids;
  for (const auto& j : r->jobs()) ids.push_back(j.job_id());
  EXPECT_THAT(ids, ElementsAre("j-0", "j-1", "j-2", "j-3", "j-4"));
  EXPECT_TRUE(r->next_page_token().empty());
  EXPECT_THAT(service_.page_tokens_, ElementsAre("", "2", "4"));
}

TEST_F(CoordinatorClientTest, WatchResumesABrokenStreamAtTheNextIndex) {
  service_.stream_ends_ = {2, 5};
  service_.stream_status_ = {grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset"),
                             grpc::Status::OK};
  CoordinatorClient client(Options());
  std::vector<int64_t> seen;
  auto job = client.WatchJob("j-1", 0, [&](const v1::JobEvent& e) { seen.push_back(e.index()); });
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_THAT(seen, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(service_.watch_from_, ElementsAre(0, 2));
}

TEST_F(CoordinatorClientTest, WatchResumesAStreamTheServerCancelled) {
  service_.stream_ends_ = {3, 5};
  service_.stream_status_ = {grpc::Status(grpc::StatusCode::CANCELLED, "server shutting down"),
                             grpc::Status::OK};
  CoordinatorClient client(Options());
  std::vector<int64_t> seen;
  auto job = client.WatchJob("j-1", 0, [&](const v1::JobEvent& e) { seen.push_back(e.index()); });
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_THAT(seen, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(service_.watch_from_, ElementsAre(0, 3));
}

TEST_F(CoordinatorClientTest, WatchReopensAStreamThatEndsBeforeTheJobIsTerminal) {
  service_.stream_ends_ = {3, 5};
  service_.stream_status_ = {grpc::Status::OK};
  service_.final_state_ = v1::JOB_STATE_RUNNING;  // first GetJob: still running
  CoordinatorClient client(Options());
  std::vector<int64_t> seen;
  auto job = client.WatchJob("j-1", 1, [&](const v1::JobEvent& e) {
    seen.push_back(e.index());
    if (e.index() == 4) service_.final_state_ = v1::JOB_STATE_CANCELLED;
  });
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(seen, ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(service_.watch_from_, ElementsAre(1, 3));
}

TEST_F(CoordinatorClientTest, WatchGivesUpAfterConsecutiveBrokenStreams) {
  service_.stream_ends_ = {0};
  service_.stream_status_ = {grpc::Status(grpc::StatusCode::UNAVAILABLE, "down")};
  ClientOptions o = Options();
  o.max_attempts = 3;
  CoordinatorClient client(o);
  auto job = client.WatchJob("j-1", 0, [](const v1::JobEvent&) {});
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.watch_from_.size(), 3u);
}

TEST_F(CoordinatorClientTest, WatchReturnsOtherErrorsAtOnce) {
  service_.stream_ends_ = {0};
  service_.stream_status_ = {grpc::Status(grpc::StatusCode::NOT_FOUND, "job 'j-1' not found")};
  CoordinatorClient client(Options());
  auto job = client.WatchJob("j-1", 0, [](const v1::JobEvent&) {});
  EXPECT_EQ(job.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(service_.watch_from_.size(), 1u);
}

TEST_F(CoordinatorClientTest, AHungCallEndsWithDeadlineExceeded) {
  service_.get_delay_ms_ = 2000;
  ClientOptions o = Options();
  o.rpc_timeout = absl::Milliseconds(200);
  CoordinatorClient client(o);
  auto job = client.GetJob("j-1");
  EXPECT_EQ(job.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(CoordinatorClientUnreachableTest, FailsWithUnavailableWithinTheConnectTimeout) {
  ClientOptions o;
  o.address = absl::StrCat("127.0.0.1:", testing::UnusedPort());
  o.connect_timeout = absl::Seconds(1);
  CoordinatorClient client(o);
  const absl::Time start = absl::Now();
  auto job = client.GetJob("j-1");
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(job.status().message(), HasSubstr(o.address));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST(ClientOptionsTest, Validate) {
  ClientOptions o;
  EXPECT_TRUE(o.Validate().ok());
  o.address = "";
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = ClientOptions();
  o.max_attempts = 0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = ClientOptions();
  o.connect_timeout = absl::ZeroDuration();
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NewRequestIdTest, IsARandomVersion4Uuid) {
  const std::string a = NewRequestId(), b = NewRequestId();
  EXPECT_NE(a, b);
  EXPECT_THAT(a, ::testing::MatchesRegex(
                     "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"));
}

}  // namespace
}  // namespace dgptq::client
