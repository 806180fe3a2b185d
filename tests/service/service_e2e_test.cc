// The service end to end: a real `dgptq-coordinator` and real `dgptq-worker` processes on
// loopback, driven through the real gRPC API. A 2-rank job gives the one-process result
// (up to float summation order in the Hessian reduce) and the same codes every time;
// a job waits in the queue until enough workers exist; a worker stops on SIGTERM.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <map>
#include <memory>
#include <set>

#include "dgptq/v1/coordinator.grpc.pb.h"
#include "tests/cluster_util.h"
#include "tests/subprocess.h"
#include "tests/test_util.h"
#include "tests/worker/pipeline_test_util.h"
#include "absl/strings/str_format.h"
#include "common/token_data.h"
#include "common/tokenizer.h"
#include "kernels/backend.h"
#include "worker/model/eval.h"
#include "worker/output/model_reader.h"

namespace dgptq::worker {
namespace {

using dgptq::testing::Subprocess;
using dgptq::testing::TempDir;
using namespace std::chrono_literals;

const std::string kCoordinator = DGPTQ_COORDINATOR_BIN;
const std::string kWorker = DGPTQ_WORKER_BIN;

class Service : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = tmp_ / "model";
    calib_ = tmp_ / "calib.txt";
    auto r = MakeSmallModel(model_, 3, calib_, 300);
    ASSERT_EQ(r.code, 0) << r.output;
    StartCoordinator({});
  }
  // (Re)starts the coordinator with `extra` flags; call before starting workers.
  void StartCoordinator(const std::vector<std::string>& extra) {
    if (coordinator_.proc) {
      coordinator_.proc->Signal(SIGTERM);
      coordinator_.proc->Wait(10s);
    }
    std::vector<std::string> argv{kCoordinator, "--lease-ttl", "5", "--heartbeat-interval", "0.5"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    coordinator_ = dgptq::testing::StartDaemon(argv, tmp_.path(), "coordinator");
    ASSERT_GT(coordinator_.port, 0) << coordinator_.proc->Log();
    address_ = coordinator_.address();
    stub_ = v1::Coordinator::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { dgptq::testing::StopDaemons(&coordinator_, &workers_, HasFailure()); }
  Subprocess& StartWorker(const std::vector<std::string>& extra = {}) {
    const std::string name = "w" + std::to_string(workers_.size());
    workers_.push_back(dgptq::testing::StartDaemon(
        dgptq::testing::WorkerArgv(kWorker, address_, name, extra), tmp_.path(), name));
    return *workers_.back().proc;
  }
  // Waits until the job reaches `state` (or a terminal state), up to `limit`.
  v1::Job WaitFor(const std::string& id, v1::JobState state, std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    v1::Job j = Get(id);
    while (j.state() != state && j.state() < v1::JOB_STATE_SUCCEEDED &&
           std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(50ms);
      j = Get(id);
    }
    return j;
  }
  v1::JobSpec Spec(const std::string& out, int workers) const {
    v1::JobSpec s;
    s.set_model_path(model_);
    s.set_output_path(tmp_ / out);
    s.mutable_quantization()->set_group_size(32);
    s.mutable_quantization()->set_act_order(true);
    s.mutable_calibration()->set_path(calib_);
    s.mutable_calibration()->set_samples(10);
    s.mutable_calibration()->set_seq_len(64);
    s.set_num_workers(workers);
    return s;
  }
  v1::Job Submit(const v1::JobSpec& spec) {
    v1::SubmitJobRequest req;
    *req.mutable_spec() = spec;
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status st = stub_->SubmitJob(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.job();
  }
  v1::Job Get(const std::string& id) {
    v1::GetJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub_->GetJob(&ctx, req, &job).ok());
    return job;
  }
  // Every event of the job until its terminal state (bounded by `limit`).
  std::vector<v1::JobEvent> Watch(const std::string& id, std::chrono::seconds limit) {
    v1::WatchJobRequest req;
    req.set_job_id(id);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + limit);
    auto reader = stub_->WatchJob(&ctx, req);
    std::vector<v1::JobEvent> events;
    v1::JobEvent e;
    while (reader->Read(&e)) events.push_back(e);
    const grpc::Status st = reader->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
    return events;
  }
  TempDir tmp_;
  std::string model_, calib_, address_;
  dgptq::testing::Daemon coordinator_;
  std::vector<dgptq::testing::Daemon> workers_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(Service, TwoWorkerJobMatchesOneProcessAndRepeatsExactly) {
  StartWorker();
  StartWorker();
  const v1::Job job = Submit(Spec("dist", 2));
  ASSERT_FALSE(job.job_id().empty());
  const std::vector<v1::JobEvent> events = Watch(job.job_id(), 120s);
  ASSERT_FALSE(events.empty());
  const v1::Job done = Get(job.job_id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.reason();
  EXPECT_EQ(done.num_layers(), 3);
  EXPECT_EQ(done.layers_done(), 3);
  ASSERT_EQ(done.worker_ids_size(), 2);

  // The log: QUEUED -> PLANNING -> RUNNING -> SUCCEEDED, a loss for each of the 21
  // modules from both ranks, and communicator bytes in the reduce and broadcast phases.
  std::vector<v1::JobState> states;
  std::set<std::string> modules;
  std::set<int> loss_ranks;
  int64_t reduce_bytes = 0, broadcast_bytes = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    const v1::JobEvent& e = events[i];
    EXPECT_EQ(e.index(), static_cast<int64_t>(i));
    if (e.has_state_change()) states.push_back(e.state_change().to_state());
    if (e.has_module_loss()) {
      modules.insert(std::to_string(e.module_loss().layer()) + "." + e.module_loss().module());
      loss_ranks.insert(e.module_loss().rank());
      EXPECT_GE(e.module_loss().loss(), 0);
    }
    if (e.has_progress() && e.progress().phase() == v1::PHASE_REDUCE) {
      reduce_bytes += e.progress().bytes_communicated();
    }
    if (e.has_progress() && e.progress().phase() == v1::PHASE_BROADCAST) {
      broadcast_bytes += e.progress().bytes_communicated();
    }
  }
  EXPECT_EQ(states, (std::vector<v1::JobState>{v1::JOB_STATE_QUEUED, v1::JOB_STATE_PLANNING,
                                                v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED}));
  EXPECT_EQ(modules.size(), 21u);
  EXPECT_TRUE(modules.count("0.self_attn.q_proj")) << *modules.begin();
  EXPECT_EQ(loss_ranks, (std::set<int>{0, 1}));
  EXPECT_GT(reduce_bytes, 0);
  EXPECT_GT(broadcast_bytes, 0);

  // The same job in one process: the codes agree but for float summation order.
  const std::string one = tmp_ / "one";
  auto q = RunDgptq("quantize --model " + model_ + " --calib " + calib_ +
                    " --samples 10 --seq-len 64 --group-size 32 --act-order --threads 1 --out " + one);
  ASSERT_EQ(q.code, 0) << q.output;
  const auto a = LoadQuantizedModules(one), b = LoadQuantizedModules(tmp_ / "dist");
  ASSERT_EQ(a.size(), 21u);
  ASSERT_EQ(b.size(), 21u);
  int64_t same = 0, total = 0;
  for (const auto& [name, qa] : a) {
    const auto& qb = b.at(name);
    ASSERT_EQ(qa.codes.size(), qb.codes.size());
    for (size_t i = 0; i < qa.codes.size(); ++i) same += qa.codes[i] == qb.codes[i];
    total += static_cast<int64_t>(qa.codes.size());
  }
  EXPECT_EQ(same, total);  // fp64 Hessian sums: sharding does not change the codes

  // Again on the same two workers: bit-identical codes and scales.
  const v1::Job again = Submit(Spec("again", 2));
  Watch(again.job_id(), 120s);
  ASSERT_EQ(Get(again.job_id()).state(), v1::JOB_STATE_SUCCEEDED) << Get(again.job_id()).reason();
  const auto c = LoadQuantizedModules(tmp_ / "again");
  for (const auto& [name, qb] : b) {
    EXPECT_EQ(c.at(name).codes, qb.codes) << name;
    EXPECT_EQ(c.at(name).scales, qb.scales) << name;
  }
}

TEST_F(Service, JobWaitsForWorkersAndWorkersStopOnSigterm) {
  StartWorker();
  const v1::Job job = Submit(Spec("queued", 2));
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(Get(job.job_id()).state(), v1::JOB_STATE_QUEUED);
  StartWorker();
  Watch(job.job_id(), 120s);
  const v1::Job done = Get(job.job_id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.reason();
  EXPECT_TRUE(std::filesystem::exists(tmp_ / "queued/config.json"));
  for (auto& w : workers_) w.proc->Signal(SIGTERM);
  for (auto& w : workers_) EXPECT_EQ(w.proc->Wait(10s), 0) << w.proc->Log();
}

// A rank whose input went bad after submission (the calibration text truncated while the
// job waited for workers) fails the job with a reason naming the rank; nothing is left
// under the output name, and the workers return to idle and run the next job.
TEST_F(Service, FailedRankFailsTheJobAndWorkersRecover) {
  StartWorker();
  const std::string calib2 = tmp_ / "calib2.txt";
  std::filesystem::copy_file(calib_, calib2);
  v1::JobSpec bad = Spec("bad", 2);
  bad.mutable_calibration()->set_path(calib2);
  const v1::Job job = Submit(bad);  // valid now; queued: one worker of two
  std::ofstream(calib2, std::ios::trunc) << "x";
  StartWorker();
  Watch(job.job_id(), 120s);
  const v1::Job failed = Get(job.job_id());
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(failed.reason().find("rank"), std::string::npos) << failed.reason();
  EXPECT_NE(failed.reason().find("calib2.txt"), std::string::npos) << failed.reason();
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "bad"));
  const v1::Job next = Submit(Spec("next", 2));
  Watch(next.job_id(), 120s);
  EXPECT_EQ(Get(next.job_id()).state(), v1::JOB_STATE_SUCCEEDED) << Get(next.job_id()).reason();
}

// Three CPU workers quantize a real model (../shared's tinystories-llama-3m; the
// synthetic one without ../shared): the codes equal the one-process `dgptq quantize`
// output's on >= 99.9% of entries with the rest one step off, and the perplexity is
// within 0.5% of it.
TEST_F(Service, ThreeWorkersMatchOneProcessOnARealModel) {
  const std::string shared = dgptq::testing::SharedDir();
  std::string model = model_, calib = calib_;
  int64_t samples = 12, seq = 64, group = 32;
  if (!shared.empty()) {
    model = shared + "/models/tinystories-llama-3m";
    calib = shared + "/data/tinystories/calib_128x256.npy";
    samples = 48;
    seq = 256;
    group = 128;
  }
  for (int i = 0; i < 3; ++i) StartWorker();
  v1::JobSpec spec = Spec("three", 3);
  spec.set_model_path(model);
  spec.mutable_calibration()->set_path(calib);
  spec.mutable_calibration()->set_samples(samples);
  spec.mutable_calibration()->set_seq_len(seq);
  spec.mutable_quantization()->set_group_size(group);
  const v1::Job job = Submit(spec);
  Watch(job.job_id(), 600s);
  const v1::Job done = Get(job.job_id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.reason();
  const std::string one = tmp_ / "one";
  auto q = RunDgptq(absl::StrFormat(
      "quantize --model %s --calib %s --samples %d --seq-len %d --group-size %d --act-order "
      "--threads 1 --out %s", model, calib, samples, seq, group, one));
  ASSERT_EQ(q.code, 0) << q.output;
  const auto a = LoadQuantizedModules(one), b = LoadQuantizedModules(tmp_ / "three");
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  size_t total = 0, off_by_one = 0, off_more = 0;
  for (const auto& [name, qa] : a) {
    const dgptq::testing::CodeDiff d = dgptq::testing::CompareCodes(qa.codes, b.at(name).codes);
    off_by_one += d.off_by_one;
    off_more += d.off_more;
    total += qa.codes.size();
  }
  std::printf("3 workers vs one process: %zu of %zu codes one step off, %zu further\n",
              off_by_one, total, off_more);
  // Hessian sums are formed per window and added in fp64 on every rank, and reduced in
  // fp64, so the sharded sum rounds to the same fp32 Hessian: measured on
  // tinystories-llama-3m, every code equal. The bound is issue 4's (>= 99.9% equal, the
  // rest one step off).
  EXPECT_EQ(off_more, 0u);
  EXPECT_LE(off_by_one, total / 1000);
  // Perplexity on held-out windows (the model's eval set, or the calibration text).
  const std::string eval_path =
      shared.empty() ? calib_ : shared + "/data/tinystories/eval_windows_256.npy";
  std::unique_ptr<Tokenizer> tok;
  if (shared.empty()) tok = std::move(LoadTokenizer(model_)).value();
  auto windows = LoadTokenWindows(eval_path, tok.get(), seq);
  ASSERT_TRUE(windows.ok()) << windows.status();
  windows->count = std::min<int64_t>(windows->count, 64);
  windows->ids.resize(windows->count * windows->seq_len);
  const double pa = Perplexity(one, *windows, 16), pb = Perplexity(tmp_ / "three", *windows, 16);
  std::printf("perplexity: one process %.4f, 3 workers %.4f\n", pa, pb);
  EXPECT_NEAR(pb / pa, 1.0, 0.005);
}

// Cancelling a running job stops every worker within 5 s, leaves nothing under the
// output name, and the workers take the next job.
TEST_F(Service, CancelMidRunStopsEveryWorker) {
  StartWorker();
  StartWorker();
  v1::JobSpec spec = Spec("cancelled", 2);
  spec.mutable_calibration()->set_samples(1024);  // seconds: long enough to cancel mid-run
  spec.mutable_quantization()->set_true_sequential(true);
  const v1::Job job = Submit(spec);
  ASSERT_EQ(WaitFor(job.job_id(), v1::JOB_STATE_RUNNING, 60s).state(), v1::JOB_STATE_RUNNING);
  std::this_thread::sleep_for(200ms);
  v1::CancelJobRequest req;
  req.set_job_id(job.job_id());
  v1::CancelJobResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->CancelJob(&ctx, req, &resp).ok());
  const auto t0 = std::chrono::steady_clock::now();
  // Both workers report back (idle) within 5 s: a new 2-worker job starts at once.
  const v1::Job next = Submit(Spec("after-cancel", 2));
  const v1::Job running = WaitFor(next.job_id(), v1::JOB_STATE_RUNNING, 5s);
  EXPECT_GE(running.state(), v1::JOB_STATE_RUNNING) << running.reason();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(Get(job.job_id()).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "cancelled"));
  Watch(next.job_id(), 120s);
  EXPECT_EQ(Get(next.job_id()).state(), v1::JOB_STATE_SUCCEEDED) << Get(next.job_id()).reason();
  EXPECT_FALSE(HasStaging(tmp_.path()));
}

// Without retries (--max-job-retries 0), a worker killed with SIGKILL mid-job fails the
// job with a reason naming it, within the lease time; the surviving worker returns to idle
// and runs the next job with a new peer.
TEST_F(Service, KilledWorkerFailsTheJobAndTheOthersRecover) {
  StartCoordinator({"--max-job-retries", "0"});
  StartWorker();
  Subprocess& victim = StartWorker();
  v1::JobSpec spec = Spec("killed", 2);
  spec.mutable_calibration()->set_samples(1024);
  spec.mutable_quantization()->set_true_sequential(true);
  const v1::Job job = Submit(spec);
  ASSERT_EQ(WaitFor(job.job_id(), v1::JOB_STATE_RUNNING, 60s).state(), v1::JOB_STATE_RUNNING);
  std::this_thread::sleep_for(200ms);
  victim.Signal(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  const v1::Job failed = WaitFor(job.job_id(), v1::JOB_STATE_FAILED, 10s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);  // the lease is 5 s
  ASSERT_EQ(failed.state(), v1::JOB_STATE_FAILED) << failed.reason();
  EXPECT_NE(failed.reason().find("w1"), std::string::npos) << failed.reason();
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "killed"));
  StartWorker();
  const v1::Job next = Submit(Spec("after-kill", 2));
  Watch(next.job_id(), 120s);
  EXPECT_EQ(Get(next.job_id()).state(), v1::JOB_STATE_SUCCEEDED) << Get(next.job_id()).reason();
}

// A worker killed with SIGKILL mid-job: the job is re-queued naming it, re-planned over the
// two workers left, resumes after the layers its partial output holds and succeeds with the
// codes of an undisturbed one-process run.
TEST_F(Service, KilledWorkerJobResumesOnTheOthers) {
  StartWorker();
  StartWorker();
  Subprocess& victim = StartWorker();
  v1::JobSpec spec = Spec("resumed", 3);
  spec.mutable_calibration()->set_samples(1024);
  spec.mutable_quantization()->set_true_sequential(true);
  const v1::Job job = Submit(spec);
  const auto end = std::chrono::steady_clock::now() + 120s;
  v1::Job j = Get(job.job_id());
  while (j.layers_done() < 1 && j.state() < v1::JOB_STATE_SUCCEEDED &&
         std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(10ms);
    j = Get(job.job_id());
  }
  ASSERT_EQ(j.state(), v1::JOB_STATE_RUNNING) << j.reason();
  victim.Signal(SIGKILL);
  Watch(job.job_id(), 180s);
  const v1::Job done = Get(job.job_id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.reason();
  EXPECT_EQ(done.worker_ids_size(), 2);  // the re-planned run
  bool requeued = false;
  for (const v1::JobEvent& e : Watch(job.job_id(), 10s)) {
    if (e.has_state_change() && e.state_change().to_state() == v1::JOB_STATE_QUEUED &&
        e.state_change().reason().find("w2") != std::string::npos) {
      requeued = true;
    }
  }
  EXPECT_TRUE(requeued);
  bool resumed = false;
  for (size_t i = 0; i + 1 < workers_.size(); ++i) {
    resumed = resumed || std::regex_search(workers_[i].proc->Log(), std::regex("resumed after [1-9]"));
  }
  EXPECT_TRUE(resumed);

  auto one = RunDgptq("quantize --model " + model_ + " --calib " + calib_ +
                      " --samples 1024 --seq-len 64 --group-size 32 --act-order "
                      "--true-sequential --threads 1 --out " + std::string(tmp_ / "one"));
  ASSERT_EQ(one.code, 0) << one.output;
  const auto a = LoadQuantizedModules(tmp_ / "one");
  const auto b = LoadQuantizedModules(tmp_ / "resumed");
  ASSERT_EQ(b.size(), a.size());
  for (const auto& [name, q] : a) {
    EXPECT_EQ(b.at(name).codes, q.codes) << name;
    EXPECT_EQ(b.at(name).scales, q.scales) << name;
  }
  EXPECT_FALSE(HasStaging(tmp_.path()));
}

// A model file that changes on disk after the job was planned (here: rewritten in place
// while layer 1 runs) fails the job with a reason naming the file, before its weights are
// read again.
TEST_F(Service, AModelFileChangedAfterPlanningFailsTheJob) {
  StartWorker();
  StartWorker();
  v1::JobSpec spec = Spec("changed", 2);
  spec.mutable_calibration()->set_samples(1024);
  spec.mutable_quantization()->set_true_sequential(true);
  const v1::Job job = Submit(spec);
  ASSERT_EQ(WaitFor(job.job_id(), v1::JOB_STATE_RUNNING, 60s).state(), v1::JOB_STATE_RUNNING);
  const std::filesystem::path weights = std::filesystem::path(model_) / "model.safetensors";
  ASSERT_TRUE(std::filesystem::exists(weights));
  std::filesystem::last_write_time(
      weights, std::filesystem::last_write_time(weights) + std::chrono::seconds(5));
  const v1::Job failed = WaitFor(job.job_id(), v1::JOB_STATE_FAILED, 60s);
  ASSERT_EQ(failed.state(), v1::JOB_STATE_FAILED) << failed.reason();
  EXPECT_NE(failed.reason().find("model.safetensors changed on disk since the job was planned"),
            std::string::npos) << failed.reason();
}

// GPU machines only: one worker on the GPU (a 1-rank NCCL communicator), and two workers
// sharing the GPU over the host transport, both agreeing with the CPU run's codes.
TEST_F(Service, GpuWorkers) {
  if (!kernels::CudaAvailable()) GTEST_SKIP() << "no CUDA device";
  StartWorker({"--device", "cuda"});
  const v1::Job one = Submit(Spec("gpu1", 1));
  Watch(one.job_id(), 300s);
  ASSERT_EQ(Get(one.job_id()).state(), v1::JOB_STATE_SUCCEEDED) << Get(one.job_id()).reason();
  StartWorker({"--device", "cuda"});
  const v1::Job two = Submit(Spec("gpu2", 2));
  Watch(two.job_id(), 300s);
  ASSERT_EQ(Get(two.job_id()).state(), v1::JOB_STATE_SUCCEEDED) << Get(two.job_id()).reason();
  auto cpu = RunDgptq("quantize --model " + model_ + " --calib " + calib_ +
                      " --samples 10 --seq-len 64 --group-size 32 --act-order --out " +
                      std::string(tmp_ / "cpu"));
  ASSERT_EQ(cpu.code, 0) << cpu.output;
  const auto c = LoadQuantizedModules(tmp_ / "cpu");
  for (const char* out : {"gpu1", "gpu2"}) {
    const auto g = LoadQuantizedModules(tmp_ / out);
    ASSERT_EQ(g.size(), c.size());
    for (const auto& [name, qc] : c) {
      EXPECT_TRUE(dgptq::testing::CodesClose(qc.codes, g.at(name).codes)) << out << " " << name;
    }
  }
}

}  // namespace
}  // namespace dgptq::worker
