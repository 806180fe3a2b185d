// A coordinator crash in the middle of a job (issue 6): a real `dgptq-coordinator` with
// --state-dir and two real CPU `dgptq-worker`s; the coordinator is killed with SIGKILL while
// the job is RUNNING and started again on the same port and state directory. The workers stop
// the job, register with the new coordinator, the job (re-queued) runs again and succeeds,
// and its quantized tensors are byte for byte those of an undisturbed one-process
// `dgptq quantize` with the same options.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/safetensors.h"
#include "coordinator/client/coordinator_client.h"
#include "tests/coordinator/durable_daemon_util.h"
#include "tests/subprocess.h"
#include "tests/test_util.h"
#include "tests/worker/output_test_util.h"

namespace dgptq::worker {
namespace {

using dgptq::testing::Subprocess;
using dgptq::testing::TempDir;
using namespace std::chrono_literals;

// The quantized tensors (qweight, qzeros, scales, g_idx) of two checkpoints are equal, byte
// for byte; returns how many were compared.
int ExpectSameQuantizedTensors(const std::string& a_dir, const std::string& b_dir) {
  auto a = Checkpoint::Open(a_dir), b = Checkpoint::Open(b_dir);
  EXPECT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
  if (!a.ok() || !b.ok()) return 0;
  int compared = 0;
  for (const std::string& name : (*a)->TensorNames()) {
    if (!absl::EndsWith(name, ".qweight") && !absl::EndsWith(name, ".qzeros") &&
        !absl::EndsWith(name, ".scales") && !absl::EndsWith(name, ".g_idx")) {
      continue;
    }
    auto ta = (*a)->Get(name), tb = (*b)->Get(name);
    EXPECT_TRUE(ta.ok() && tb.ok()) << name;
    if (!ta.ok() || !tb.ok()) continue;
    EXPECT_EQ(ta->dtype, tb->dtype) << name;
    EXPECT_EQ(ta->shape, tb->shape) << name;
    EXPECT_TRUE(ta->nbytes() == tb->nbytes() && std::memcmp(ta->data, tb->data, ta->nbytes()) == 0)
        << name << " differs";
    ++compared;
  }
  return compared;
}

class CoordinatorRestart : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = tmp_ / "model";
    calib_ = tmp_ / "calib.txt";
    auto r = MakeSmallModel(model_, 3, calib_, 300);
    ASSERT_EQ(r.code, 0) << r.output;
  }
  void TearDown() override { dgptq::testing::StopDaemons(&coordinator_, &workers_, HasFailure()); }
  // Starts the coordinator on `port` (0: any) over tmp_/state.
  void StartCoordinator(int port) {
    coordinator_ = dgptq::testing::StartDurableCoordinator(tmp_.path(), port);
    port_ = coordinator_.port;
    ASSERT_GT(port_, 0) << coordinator_.proc->Log();
    client::ClientOptions o;
    o.address = "127.0.0.1:" + std::to_string(port_);
    client_ = std::make_unique<client::CoordinatorClient>(o);
  }
  void StartWorker() {
    const std::string name = "w" + std::to_string(workers_.size());
    workers_.push_back(dgptq::testing::StartDaemon(
        dgptq::testing::WorkerArgv(DGPTQ_WORKER_BIN, coordinator_.address(), name), tmp_.path(),
        name));
  }
  v1::Job Get(const std::string& id) {
    absl::StatusOr<v1::Job> job = client_->GetJob(id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }
  // Polls until `done(job)` or `limit`; returns the job last seen.
  v1::Job WaitUntil(const std::string& id, const std::function<bool(const v1::Job&)>& done,
                    std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    v1::Job j = Get(id);
    while (!done(j) && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(20ms);
      j = Get(id);
    }
    return j;
  }

  TempDir tmp_;
  std::string model_, calib_;
  dgptq::testing::Daemon coordinator_;
  std::vector<dgptq::testing::Daemon> workers_;
  std::unique_ptr<client::CoordinatorClient> client_;
  int port_ = 0;
};

TEST_F(CoordinatorRestart, SigkilledMidJobTheJobRunsAgainAndMatchesOneProcess) {
  constexpr int kSamples = 1024;  // seconds of RUNNING on one core per worker
  StartCoordinator(0);
  StartWorker();
  StartWorker();
  v1::JobSpec spec;
  spec.set_model_path(model_);
  spec.set_output_path(tmp_ / "out");
  spec.mutable_quantization()->set_group_size(32);
  spec.mutable_quantization()->set_act_order(true);
  spec.mutable_quantization()->set_true_sequential(true);
  spec.mutable_calibration()->set_path(calib_);
  spec.mutable_calibration()->set_samples(kSamples);
  spec.mutable_calibration()->set_seq_len(64);
  spec.set_num_workers(2);
  absl::StatusOr<v1::SubmitJobResponse> submitted = client_->SubmitJob(spec, "restart-1");
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string id = submitted->job().job_id();
  const v1::Job running = WaitUntil(
      id,
      [](const v1::Job& j) {
        return j.state() != v1::JOB_STATE_QUEUED && j.state() != v1::JOB_STATE_PLANNING;
      },
      60s);
  ASSERT_EQ(running.state(), v1::JOB_STATE_RUNNING) << running.reason();
  // Killed between layers: one done, the others to come.
  const v1::Job before = WaitUntil(
      id,
      [](const v1::Job& j) { return j.layers_done() >= 1 || j.state() != v1::JOB_STATE_RUNNING; },
      60s);
  ASSERT_EQ(before.state(), v1::JOB_STATE_RUNNING) << before.reason();
  ASSERT_LT(before.layers_done(), 3) << "the job ended before the kill: make it longer";
  coordinator_.proc->Signal(SIGKILL);
  ASSERT_EQ(coordinator_.proc->Wait(10s), 128 + SIGKILL);

  const auto restarted = std::chrono::steady_clock::now();
  StartCoordinator(port_);
  const v1::Job done = WaitUntil(
      id, [](const v1::Job& j) { return j.state() >= v1::JOB_STATE_SUCCEEDED; }, 120s);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.reason();
  std::printf("killed after %d of 3 layers; after the restart the job took %.1f s\n",
              before.layers_done(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted).count());
  // The new run's workers (ids of the new coordinator instance), and every earlier event kept.
  ASSERT_EQ(done.worker_ids_size(), 2);
  EXPECT_NE(done.worker_ids(0), before.worker_ids(0));
  std::vector<v1::JobState> states;
  std::string requeue_reason;
  absl::StatusOr<v1::Job> watched = client_->WatchJob(id, 0, [&](const v1::JobEvent& e) {
    if (!e.has_state_change()) return;
    states.push_back(e.state_change().to_state());
    if (states.size() == 4) requeue_reason = e.state_change().reason();
  });
  ASSERT_TRUE(watched.ok()) << watched.status();
  EXPECT_EQ(states, (std::vector<v1::JobState>{v1::JOB_STATE_QUEUED, v1::JOB_STATE_PLANNING,
                                               v1::JOB_STATE_RUNNING, v1::JOB_STATE_QUEUED,
                                               v1::JOB_STATE_PLANNING, v1::JOB_STATE_RUNNING,
                                               v1::JOB_STATE_SUCCEEDED}));
  EXPECT_EQ(requeue_reason, "coordinator restarted while the job was RUNNING; re-queued");
  // Each worker's rank of the first run ended early (stopped when its control stream broke,
  // or failed when its peer stopped first), and the worker registered with the new coordinator.
  int stopped = 0;
  for (auto& w : workers_) {
    const std::string log = w.proc->Log();
    const size_t first_end = log.find(" ends: ");
    ASSERT_NE(first_end, std::string::npos) << log;
    EXPECT_NE(log.compare(first_end + 7, 2, "OK"), 0) << log;
    EXPECT_NE(log.find("registered with", log.find("registered with") + 1), std::string::npos);
    stopped += log.find("stopping job " + id) != std::string::npos;
  }
  EXPECT_GE(stopped, 1);

  auto q = RunDgptq(absl::StrFormat(
      "quantize --model %s --calib %s --samples %d --seq-len 64 --group-size 32 --act-order "
      "--true-sequential --threads 1 --out %s",
      model_, calib_, kSamples, std::string(tmp_ / "one")));
  ASSERT_EQ(q.code, 0) << q.output;
  EXPECT_EQ(ExpectSameQuantizedTensors(tmp_ / "one", tmp_ / "out"), 3 * 7 * 4);
  EXPECT_FALSE(HasStaging(tmp_.path()));
  EXPECT_FALSE(std::filesystem::exists(PartialDir(tmp_ / "out")));
}

}  // namespace
}  // namespace dgptq::worker
