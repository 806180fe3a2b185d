// SubmitJob over real gRPC: each validation failure's code and message, request_id
// deduplication, the queue limit and --allowed-root.
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "tests/coordinator/coordinator_test_util.h"

namespace dgptq::coordinator::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class SubmitTest : public CoordinatorTest {
 protected:
  // Submits `spec` and expects `code` with a message containing `text`.
  void ExpectRejected(const v1::JobSpec& spec, grpc::StatusCode code, const std::string& text) {
    v1::SubmitJobResponse resp;
    const grpc::Status st = Submit(spec, &resp);
    EXPECT_EQ(st.error_code(), code) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(text));
  }
};

TEST_F(SubmitTest, NewJobIsQueuedWithItsFirstEvent) {
  Start();
  v1::SubmitJobResponse resp;
  ASSERT_TRUE(Submit(Spec(), &resp).ok());
  EXPECT_TRUE(resp.created());
  const v1::Job& job = resp.job();
  EXPECT_FALSE(job.job_id().empty());
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.reason(), "waiting for 1 workers (0 idle)");
  EXPECT_EQ(job.event_count(), 1);
  EXPECT_TRUE(job.worker_ids().empty());
  EXPECT_GT(job.create_time().seconds(), 0);

  v1::WatchJobRequest req;
  req.set_job_id(job.job_id());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 300ms);
  auto reader = stub_->WatchJob(&ctx, req);
  v1::JobEvent e;
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.index(), 0);
  EXPECT_EQ(e.job_id(), job.job_id());
  EXPECT_EQ(e.state_change().from_state(), v1::JOB_STATE_UNSPECIFIED);
  EXPECT_EQ(e.state_change().to_state(), v1::JOB_STATE_QUEUED);
}

TEST_F(SubmitTest, MissingModelIsNotFound) {
  Start();
  v1::JobSpec spec = Spec();
  spec.set_model_path(tmp_ / "no-such-model");
  ExpectRejected(spec, grpc::StatusCode::NOT_FOUND, "no-such-model' is not an existing directory");
  fs::create_directories(tmp_ / "empty-model");
  spec.set_model_path(tmp_ / "empty-model");
  ExpectRejected(spec, grpc::StatusCode::NOT_FOUND, "has no config.json");
}

TEST_F(SubmitTest, UnknownModelTypeIsInvalidArgument) {
  Start();
  WriteTinyLlama(tmp_ / "gpt9", 2, "gpt9");
  v1::JobSpec spec = Spec();
  spec.set_model_path(tmp_ / "gpt9");
  ExpectRejected(spec, grpc::StatusCode::INVALID_ARGUMENT, "gpt9");
}

TEST_F(SubmitTest, CheckpointMissingALayerNamesTheTensor) {
  Start();
  WriteTinyLlama(tmp_ / "short", 1);
  std::ofstream(tmp_ / "short/config.json")
      << R"({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 2,)"
         R"( "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16,)"
         R"( "vocab_size": 32})";
  v1::JobSpec spec = Spec();
  spec.set_model_path(tmp_ / "short");
  ExpectRejected(spec, grpc::StatusCode::INVALID_ARGUMENT, "model.layers.1.self_attn.q_proj");
}

TEST_F(SubmitTest, BadSpecFieldsAreInvalidArgument) {
  Start();
  v1::JobSpec spec = Spec();
  spec.mutable_quantization()->set_bits(5);
  ExpectRejected(spec, grpc::StatusCode::INVALID_ARGUMENT, "quantization");
  spec = Spec();
  spec.clear_output_path();
  ExpectRejected(spec, grpc::StatusCode::INVALID_ARGUMENT, "output_path is required");
  spec = Spec();
  spec.set_num_workers(11);  // more ranks than the 10 samples
  ExpectRejected(spec, grpc::StatusCode::INVALID_ARGUMENT, "num_workers");
}

TEST_F(SubmitTest, MissingCalibrationIsNotFound) {
  Start();
  v1::JobSpec spec = Spec();
  spec.mutable_calibration()->set_path(tmp_ / "no-calib.txt");
  ExpectRejected(spec, grpc::StatusCode::NOT_FOUND, "no-calib.txt' does not exist");
}

TEST_F(SubmitTest, RtnJobNeedsNoCalibrationAndAnySampleCount) {
  Start();
  v1::JobSpec spec = Spec();
  spec.clear_calibration();
  spec.mutable_quantization()->set_rtn(true);
  spec.set_num_workers(200);  // above the default 128 samples: rtn forwards none
  v1::SubmitJobResponse resp;
  const grpc::Status st = Submit(spec, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
}

TEST_F(SubmitTest, OutputHoldingAModelNeedsOverwrite) {
  Start();
  fs::create_directories(tmp_ / "out");
  std::ofstream(tmp_ / "out/notes.txt") << "not a model";
  v1::SubmitJobResponse resp;
  EXPECT_TRUE(Submit(Spec("out"), &resp).ok());  // an existing directory without a model

  fs::create_directories(tmp_ / "out2");
  std::ofstream(tmp_ / "out2/model-00001-of-00002.safetensors") << "x";
  ExpectRejected(Spec("out2"), grpc::StatusCode::FAILED_PRECONDITION,
                 "out2' already holds a model; set overwrite");
  fs::create_directories(tmp_ / "out3");
  std::ofstream(tmp_ / "out3/config.json") << "{}";
  ExpectRejected(Spec("out3"), grpc::StatusCode::FAILED_PRECONDITION, "set overwrite");
  v1::JobSpec spec = Spec("out3");
  spec.set_overwrite(true);
  EXPECT_TRUE(Submit(spec, &resp).ok());

  spec = Spec();
  spec.set_output_path(model_);
  spec.set_overwrite(true);
  ExpectRejected(spec, grpc::StatusCode::INVALID_ARGUMENT, "is the model_path");
}

TEST_F(SubmitTest, RequestIdReturnsTheSameJob) {
  Start();
  v1::SubmitJobResponse first, again, other;
  ASSERT_TRUE(Submit(Spec(), &first, "req-1").ok());
  ASSERT_TRUE(Submit(Spec(), &again, "req-1").ok());
  ASSERT_TRUE(Submit(Spec(), &other, "req-2").ok());
  EXPECT_TRUE(first.created());
  EXPECT_FALSE(again.created());
  EXPECT_EQ(again.job().job_id(), first.job().job_id());
  EXPECT_EQ(again.job().request_id(), "req-1");
  EXPECT_TRUE(other.created());
  EXPECT_NE(other.job().job_id(), first.job().job_id());
}

TEST_F(SubmitTest, FullQueueIsResourceExhausted) {
  CoordinatorOptions o = TestOptions();
  o.max_queued_jobs = 2;
  Start(o);
  v1::SubmitJobResponse resp;
  ASSERT_TRUE(Submit(Spec(), &resp, "a").ok());
  ASSERT_TRUE(Submit(Spec(), &resp).ok());
  ExpectRejected(Spec(), grpc::StatusCode::RESOURCE_EXHAUSTED, "queue is full");
  // A retry of an accepted request still gets its job.
  EXPECT_TRUE(Submit(Spec(), &resp, "a").ok());
  EXPECT_FALSE(resp.created());
  // Room again once a queued job leaves the queue.
  Cancel(resp.job().job_id());
  EXPECT_TRUE(Submit(Spec(), &resp).ok());
}

class AllowedRootTest : public SubmitTest {
 protected:
  void SetUp() override {
    SubmitTest::SetUp();
    root_ = tmp_ / "root";
    fs::create_directories(root_);
    WriteTinyLlama(root_ + "/model");
    std::ofstream(root_ + "/calib.txt") << "text\n";
    CoordinatorOptions o = TestOptions();
    o.allowed_roots = {root_};
    Start(o);
  }
  v1::JobSpec Inside() const {
    v1::JobSpec spec = Spec();
    spec.set_model_path(root_ + "/model");
    spec.set_output_path(root_ + "/new/out");  // does not exist yet
    spec.mutable_calibration()->set_path(root_ + "/calib.txt");
    return spec;
  }
  std::string root_;
};

TEST_F(AllowedRootTest, PathsInsideARootAreAccepted) {
  v1::SubmitJobResponse resp;
  const grpc::Status st = Submit(Inside(), &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
}

TEST_F(AllowedRootTest, PathOutsideIsPermissionDenied) {
  v1::JobSpec spec = Inside();
  spec.set_model_path(model_);  // tmp_/model, beside the root
  ExpectRejected(spec, grpc::StatusCode::PERMISSION_DENIED, "JobSpec.model_path '" + model_ + "'");
  ExpectRejected(spec, grpc::StatusCode::PERMISSION_DENIED, "outside the allowed roots: " + root_);
  spec = Inside();
  spec.mutable_calibration()->set_path(calib_);
  ExpectRejected(spec, grpc::StatusCode::PERMISSION_DENIED, "calibration.path");
}

TEST_F(AllowedRootTest, SymlinkEscapingTheRootIsPermissionDenied) {
  fs::create_directory_symlink(model_, root_ + "/link");  // root/link -> tmp_/model
  v1::JobSpec spec = Inside();
  spec.set_model_path(root_ + "/link");
  ExpectRejected(spec, grpc::StatusCode::PERMISSION_DENIED,
                 "resolves to '" + fs::canonical(model_).string() + "'");
  // An output below a symlinked directory that does not exist yet resolves through the link.
  spec = Inside();
  spec.set_output_path(root_ + "/link/sub/out");
  ExpectRejected(spec, grpc::StatusCode::PERMISSION_DENIED, "output_path");
}

TEST_F(AllowedRootTest, DotDotEscapingTheRootIsPermissionDenied) {
  v1::JobSpec spec = Inside();
  spec.set_model_path(root_ + "/../model");
  ExpectRejected(spec, grpc::StatusCode::PERMISSION_DENIED, "model_path");
  spec = Inside();
  spec.set_output_path(root_ + "/new/../../escaped");  // through a part that does not exist
  ExpectRejected(spec, grpc::StatusCode::PERMISSION_DENIED,
                 "resolves to '" + fs::weakly_canonical(tmp_ / "escaped").string() + "'");
  // ".." that stays inside is fine.
  spec = Inside();
  spec.set_output_path(root_ + "/new/../out");
  v1::SubmitJobResponse resp;
  EXPECT_TRUE(Submit(spec, &resp).ok());
}

}  // namespace
}  // namespace dgptq::coordinator::testing
