// Helpers of the coordinator service tests: a tiny Llama checkpoint written on the spot, an
// in-process CoordinatorServer on a loopback port 0 with a real client stub, and FakeWorker,
// a test client speaking the real worker protocol (register, heartbeat, control stream).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/safetensors_writer.h"
#include "common/tensor.h"
#include "coordinator/server.h"
#include "dgptq/v1/coordinator.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace dgptq::coordinator::testing {

using namespace std::chrono_literals;

// A Llama config.json (hidden 8, 2 heads, 1 KV head, intermediate 16) and a model.safetensors
// with every linear weight of `layers` layers (zeros) under `dir`.
inline void WriteTinyLlama(const std::string& dir, int layers = 2,
                           const std::string& model_type = "llama") {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << absl::StrFormat(
      R"({"model_type": "%s", "hidden_size": 8, "num_hidden_layers": %d,)"
      R"( "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16,)"
      R"( "vocab_size": 32})",
      model_type, layers);
  auto w = SafetensorsFileWriter::Create(dir + "/model.safetensors");
  ASSERT_TRUE(w.ok()) << w.status();
  const std::vector<float> zeros(16 * 8, 0.0f);
  const std::pair<const char*, Shape> linears[] = {
      {"self_attn.q_proj", {8, 8}}, {"self_attn.k_proj", {4, 8}}, {"self_attn.v_proj", {4, 8}},
      {"self_attn.o_proj", {8, 8}}, {"mlp.gate_proj", {16, 8}},   {"mlp.up_proj", {16, 8}},
      {"mlp.down_proj", {8, 16}}};
  for (int l = 0; l < layers; ++l) {
    for (const auto& [name, shape] : linears) {
      const TensorView t{DType::kF32, shape, zeros.data()};
      ASSERT_TRUE((*w)->Add(absl::StrFormat("model.layers.%d.%s.weight", l, name), t).ok());
    }
  }
  ASSERT_TRUE((*w)->Finish().ok());
}

// Options for fast tests: long lease (tests that need expiry shorten it), quick heartbeats.
inline CoordinatorOptions TestOptions() {
  CoordinatorOptions o;
  o.listen = "127.0.0.1:0";
  o.lease_ttl = absl::Seconds(30);
  o.heartbeat_interval = absl::Milliseconds(100);
  o.rendezvous_timeout = absl::Seconds(10);
  return o;
}

// A worker daemon stand-in: registers, opens its control stream and collects what the
// coordinator sends; the test answers by hand.
class FakeWorker {
 public:
  FakeWorker(v1::Coordinator::Stub* stub, std::string name,
             v1::DeviceKind kind = v1::DEVICE_KIND_CPU, std::string host = "127.0.0.1")
      : stub_(stub), name_(std::move(name)) {
    v1::RegisterWorkerRequest req;
    req.set_name(name_);
    req.mutable_capabilities()->set_device_kind(kind);
    req.mutable_capabilities()->set_host(host);
    v1::RegisterWorkerResponse resp;
    grpc::ClientContext ctx;
    status_ = stub_->RegisterWorker(&ctx, req, &resp);
    id_ = resp.worker_id();
    lease_ttl_ms_ = resp.lease_ttl().seconds() * 1000 + resp.lease_ttl().nanos() / 1000000;
    stream_ = stub_->Control(&ctx_);
    v1::ControlRequest hello;
    hello.mutable_hello()->set_worker_id(id_);
    stream_->Write(hello);
    reader_ = std::thread([this] {
      v1::ControlResponse msg;
      while (stream_->Read(&msg)) {
        std::lock_guard<std::mutex> lock(mu_);
        inbox_.push_back(msg);
        cv_.notify_all();
      }
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      cv_.notify_all();
    });
    heartbeats_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!cv_.wait_for(lock, 50ms, [&] { return stop_heartbeats_; })) {
        lock.unlock();
        Heartbeat();
        lock.lock();
      }
    });
  }
  ~FakeWorker() {
    StopHeartbeats();
    Disconnect();
  }

  // Ends the control stream from the worker's side, as a crashed worker would.
  void Disconnect() {
    if (!reader_.joinable()) return;
    ctx_.TryCancel();
    reader_.join();
    stream_->Finish();
  }

  const std::string& id() const { return id_; }
  const std::string& name() const { return name_; }
  const grpc::Status& register_status() const { return status_; }
  int64_t lease_ttl_ms() const { return lease_ttl_ms_; }

  grpc::Status Heartbeat() {
    v1::HeartbeatRequest req;
    req.set_worker_id(id_);
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    return stub_->Heartbeat(&ctx, req, &resp);
  }
  void StopHeartbeats() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_heartbeats_ = true;
      cv_.notify_all();
    }
    if (heartbeats_.joinable()) heartbeats_.join();
  }

  // The next message the coordinator sent, waiting up to `limit`.
  std::optional<v1::ControlResponse> Next(std::chrono::milliseconds limit = 5000ms) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, limit, [&] { return !inbox_.empty(); })) return std::nullopt;
    v1::ControlResponse msg = inbox_.front();
    inbox_.pop_front();
    return msg;
  }
  // Whether the coordinator ended the stream within `limit`.
  bool WaitClosed(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return closed_; });
  }
  void Send(const v1::ControlRequest& req) {
    std::lock_guard<std::mutex> lock(write_mu_);
    stream_->Write(req);
  }
  void Offer(const std::string& job_id, const std::string& address = "127.0.0.1:1") {
    v1::ControlRequest req;
    req.mutable_rendezvous_offer()->set_job_id(job_id);
    req.mutable_rendezvous_offer()->mutable_rendezvous()->set_backend("host");
    req.mutable_rendezvous_offer()->mutable_rendezvous()->set_host_address(address);
    Send(req);
  }
  // The Progress event a rank sends when it finished writing `layer`.
  void LayerDone(const std::string& job_id, int rank, int layer, int num_layers) {
    v1::ControlRequest req;
    req.mutable_event()->set_job_id(job_id);
    v1::Progress* p = req.mutable_event()->mutable_progress();
    p->set_rank(rank);
    p->set_layer(layer);
    p->set_num_layers(num_layers);
    p->set_phase(v1::PHASE_WRITE);
    p->set_done(1);
    p->set_total(1);
    Send(req);
  }
  void Result(const std::string& job_id, int rank, int code = 0, const std::string& message = "") {
    v1::ControlRequest req;
    req.mutable_result()->set_job_id(job_id);
    req.mutable_result()->set_rank(rank);
    req.mutable_result()->set_code(code);
    req.mutable_result()->set_message(message);
    Send(req);
  }

 private:
  v1::Coordinator::Stub* stub_;
  std::string name_, id_;
  grpc::Status status_;
  int64_t lease_ttl_ms_ = 0;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ControlRequest, v1::ControlResponse>> stream_;
  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::ControlResponse> inbox_;
  bool closed_ = false;
  bool stop_heartbeats_ = false;
  std::thread reader_, heartbeats_;
};

// A fixture with a tiny model, a calibration file and a coordinator started by Start().
class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = tmp_ / "model";
    calib_ = tmp_ / "calib.txt";
    WriteTinyLlama(model_);
    std::ofstream(calib_) << "calibration text\n";
  }
  void TearDown() override {
    workers_.clear();
    if (server_) server_->Shutdown(absl::Seconds(1));
  }
  void Start(CoordinatorOptions o = TestOptions()) {
    auto s = CoordinatorServer::Start(std::move(o));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    stub_ = v1::Coordinator::NewStub(grpc::CreateChannel(
        absl::StrFormat("127.0.0.1:%d", server_->port()), grpc::InsecureChannelCredentials()));
  }
  FakeWorker& AddWorker(const std::string& name, v1::DeviceKind kind = v1::DEVICE_KIND_CPU,
                        const std::string& host = "127.0.0.1") {
    workers_.push_back(std::make_unique<FakeWorker>(stub_.get(), name, kind, host));
    EXPECT_TRUE(workers_.back()->register_status().ok());
    return *workers_.back();
  }
  v1::JobSpec Spec(const std::string& out = "out", int num_workers = 1) const {
    v1::JobSpec s;
    s.set_model_path(model_);
    s.set_output_path(tmp_ / out);
    s.mutable_calibration()->set_path(calib_);
    s.mutable_calibration()->set_samples(10);
    s.set_num_workers(num_workers);
    return s;
  }
  grpc::Status Submit(const v1::JobSpec& spec, v1::SubmitJobResponse* resp,
                      const std::string& request_id = "") {
    v1::SubmitJobRequest req;
    *req.mutable_spec() = spec;
    req.set_request_id(request_id);
    grpc::ClientContext ctx;
    return stub_->SubmitJob(&ctx, req, resp);
  }
  // Submits a job that must be accepted; returns its id.
  std::string SubmitOk(const v1::JobSpec& spec) {
    v1::SubmitJobResponse resp;
    const grpc::Status st = Submit(spec, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.job().job_id();
  }
  v1::Job Get(const std::string& id) {
    v1::GetJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    grpc::ClientContext ctx;
    const grpc::Status st = stub_->GetJob(&ctx, req, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job;
  }
  // Polls until the job is in `state` (true) or `limit` passes (false).
  bool WaitForState(const std::string& id, v1::JobState state,
                    std::chrono::milliseconds limit = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (Get(id).state() == state) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  v1::Job Cancel(const std::string& id, const std::string& reason = "") {
    v1::CancelJobRequest req;
    req.set_job_id(id);
    req.set_reason(reason);
    v1::CancelJobResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status st = stub_->CancelJob(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.job();
  }

  dgptq::testing::TempDir tmp_;
  std::string model_, calib_;
  std::unique_ptr<CoordinatorServer> server_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::vector<std::unique_ptr<FakeWorker>> workers_;
};

// Next message of `w`, which must be of `kind`.
inline v1::ControlResponse Expect(FakeWorker& w, v1::ControlResponse::KindCase kind) {
  std::optional<v1::ControlResponse> msg = w.Next();
  EXPECT_TRUE(msg.has_value()) << w.name() << " got no message";
  if (!msg) return {};
  EXPECT_EQ(msg->kind_case(), kind) << w.name() << " got " << msg->DebugString();
  return *msg;
}

}  // namespace dgptq::coordinator::testing
