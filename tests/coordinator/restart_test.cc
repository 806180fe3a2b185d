// The real `dgptq-coordinator` with --state-dir, killed with SIGKILL and started again on the
// same directory (issue 6): every job, its state and every event is still there through the
// real client (GetJob, ListJobs with a page token of the first run, WatchJob from index 0), a
// retried request id gives the same job, and the job that was RUNNING is re-queued with a
// StateChange event and runs again on a worker of the new run. A state file that is not a
// job database stops the daemon with exit code 1 and a message naming the file.
#include <signal.h>

#include <chrono>
#include <map>

#include "coordinator/client/coordinator_client.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/coordinator/coordinator_test_util.h"
#include "tests/coordinator/durable_daemon_util.h"

namespace dgptq::coordinator::testing {
namespace {

using dgptq::testing::Subprocess;
using google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;
using Kind = v1::ControlResponse::KindCase;

class RestartTest : public CoordinatorTest {
 protected:
  void TearDown() override {
    workers_.clear();
    if (HasFailure() && daemon_) std::printf("--- coordinator log:\n%s\n", daemon_->Log().c_str());
    daemon_.reset();
  }
  // Starts the daemon on `port` (0: any) over tmp_/state; stub_ and client_ talk to it.
  void StartDaemon(int port = 0) {
    workers_.clear();  // FakeWorkers hold the old stub
    dgptq::testing::Daemon d = dgptq::testing::StartDurableCoordinator(tmp_.path(), port);
    daemon_ = std::move(d.proc);
    port_ = d.port;
    ASSERT_GT(port_, 0) << daemon_->Log();
    const std::string address = "127.0.0.1:" + std::to_string(port_);
    stub_ =
        v1::Coordinator::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    client::ClientOptions o;
    o.address = address;
    client_ = std::make_unique<client::CoordinatorClient>(o);
  }
  void Kill() {
    daemon_->Signal(SIGKILL);
    EXPECT_EQ(daemon_->Wait(10s), 128 + SIGKILL);
  }
  std::string SubmitWithId(const std::string& out, const std::string& request_id) {
    absl::StatusOr<v1::SubmitJobResponse> r = client_->SubmitJob(Spec(out), request_id);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->job().job_id() : "";
  }
  // The job's first `n` events through WatchJob from index 0 (the stream of an unfinished job
  // stays open: cancelled once `n` arrived).
  std::vector<v1::JobEvent> Events(const std::string& id, int64_t n) {
    v1::WatchJobRequest req;
    req.set_job_id(id);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    auto reader = stub_->WatchJob(&ctx, req);
    std::vector<v1::JobEvent> events;
    v1::JobEvent e;
    while (static_cast<int64_t>(events.size()) < n && reader->Read(&e)) events.push_back(e);
    ctx.TryCancel();
    reader->Finish();
    EXPECT_EQ(static_cast<int64_t>(events.size()), n) << id;
    return events;
  }
  bool WaitForEvents(const std::string& id, int64_t n) {
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (Get(id).event_count() < n && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(5ms);
    }
    return Get(id).event_count() >= n;
  }
  // Submits a job and takes it to RUNNING on a new FakeWorker; returns its id.
  std::string RunOnFakeWorker(const std::string& out, const std::string& request_id) {
    const std::string id = SubmitWithId(out, request_id);
    FakeWorker& w = AddWorker("w" + std::to_string(workers_.size()));
    EXPECT_EQ(Expect(w, Kind::kCreateRendezvous).create_rendezvous().job_id(), id);
    w.Offer(id);
    Expect(w, Kind::kAssignment);
    EXPECT_TRUE(WaitForState(id, v1::JOB_STATE_RUNNING));
    return id;
  }
  std::vector<std::string> Ids(const v1::ListJobsResponse& page) {
    std::vector<std::string> ids;
    for (const v1::Job& j : page.jobs()) ids.push_back(j.job_id());
    return ids;
  }

  std::unique_ptr<Subprocess> daemon_;
  std::unique_ptr<client::CoordinatorClient> client_;
  int port_ = 0;
};

TEST_F(RestartTest, SigkillKeepsEveryJobAndEventAndRequeuesTheRunningOne) {
  StartDaemon();
  // a runs on a worker and reports a layer; c is cancelled; b and d wait.
  const std::string a = RunOnFakeWorker("out-a", "req-a");
  const std::string b = SubmitWithId("out-b", ""), c = SubmitWithId("out-c", "req-c"),
                    d = SubmitWithId("out-d", "");
  workers_[0]->LayerDone(a, 0, 0, 2);
  ASSERT_TRUE(WaitForEvents(a, 4));
  ASSERT_TRUE(client_->CancelJob(c, "not needed").ok());

  std::map<std::string, v1::Job> jobs;
  std::map<std::string, std::vector<v1::JobEvent>> events;
  for (const std::string& id : {a, b, c, d}) {
    jobs[id] = Get(id);
    events[id] = Events(id, jobs[id].event_count());
  }
  EXPECT_EQ(jobs[a].layers_done(), 1);
  v1::ListJobsRequest list;
  list.set_page_size(2);
  absl::StatusOr<v1::ListJobsResponse> page1 = client_->ListJobs(list);
  ASSERT_TRUE(page1.ok()) << page1.status();
  EXPECT_EQ(Ids(*page1), (std::vector<std::string>{d, c}));

  Kill();
  StartDaemon(port_);

  for (const std::string& id : {b, c, d}) {
    EXPECT_TRUE(MessageDifferencer::Equals(Get(id), jobs[id])) << Get(id).DebugString();
  }
  const v1::Job requeued = Get(a);
  EXPECT_EQ(requeued.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(requeued.worker_ids_size(), 0);
  EXPECT_EQ(requeued.layers_done(), 1);  // what its partial output holds
  ASSERT_EQ(requeued.event_count(), jobs[a].event_count() + 1);
  for (const std::string& id : {a, b, c, d}) {
    const std::vector<v1::JobEvent> now = Events(id, Get(id).event_count());
    ASSERT_GE(now.size(), events[id].size()) << id;
    for (size_t i = 0; i < events[id].size(); ++i) {
      EXPECT_TRUE(MessageDifferencer::Equals(now[i], events[id][i])) << id << " event " << i;
    }
    if (id == a) {
      const v1::StateChange& sc = now.back().state_change();
      EXPECT_EQ(sc.from_state(), v1::JOB_STATE_RUNNING);
      EXPECT_EQ(sc.to_state(), v1::JOB_STATE_QUEUED);
      EXPECT_EQ(sc.reason(), "coordinator restarted while the job was RUNNING; re-queued");
    }
  }
  // The terminal job through the client's WatchJob: the whole log, then the end.
  std::vector<v1::JobEvent> watched;
  absl::StatusOr<v1::Job> watched_job =
      client_->WatchJob(c, 0, [&](const v1::JobEvent& e) { watched.push_back(e); });
  ASSERT_TRUE(watched_job.ok()) << watched_job.status();
  EXPECT_EQ(watched.size(), events[c].size());
  EXPECT_EQ(watched_job->state(), v1::JOB_STATE_CANCELLED);

  // The first run's page token goes on where it stopped.
  list.set_page_token(page1->next_page_token());
  absl::StatusOr<v1::ListJobsResponse> page2 = client_->ListJobs(list);
  ASSERT_TRUE(page2.ok()) << page2.status();
  EXPECT_EQ(Ids(*page2), (std::vector<std::string>{b, a}));

  // A retried submission finds its job; a new one gets an id of its own.
  absl::StatusOr<v1::SubmitJobResponse> retry = client_->SubmitJob(Spec("out-a"), "req-a");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_FALSE(retry->created());
  EXPECT_EQ(retry->job().job_id(), a);
  const std::string e = SubmitWithId("out-e", "req-e");
  for (const std::string& id : {a, b, c, d}) EXPECT_NE(e, id);
  absl::StatusOr<v1::ListJobsResponse> all = client_->ListAllJobs(v1::ListJobsRequest());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(Ids(*all), (std::vector<std::string>{e, d, c, b, a}));

  // The re-queued job is the oldest: the first worker of the new run gets it, and it finishes.
  FakeWorker& w2 = AddWorker("w2");
  ASSERT_EQ(Expect(w2, Kind::kCreateRendezvous).create_rendezvous().job_id(), a);
  w2.Offer(a);
  EXPECT_TRUE(MessageDifferencer::Equals(Expect(w2, Kind::kAssignment).assignment().spec(),
                                         jobs[a].spec()));
  w2.Result(a, 0);
  EXPECT_TRUE(WaitForState(a, v1::JOB_STATE_SUCCEEDED));
}

// A RUNNING job whose output (empty at submission) holds a model after the restart finished
// just before the kill: it is not run again (the re-run would be refused), and says why.
TEST_F(RestartTest, ARunningJobWhoseOutputAppearedIsNotRunAgain) {
  StartDaemon();
  const std::string a = RunOnFakeWorker("out-a", "");
  std::filesystem::create_directories(tmp_ / "out-a");
  std::ofstream(tmp_ / "out-a/config.json") << "{}";
  Kill();
  StartDaemon(port_);
  const v1::Job job = Get(a);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.reason(), HasSubstr("now holds a model: the job most likely finished"));
  FakeWorker& w = AddWorker("after");
  EXPECT_FALSE(w.Next(300ms).has_value());
}

// The retry budget survives a restart: a job re-queued once before the restart is on its
// second retry after it, not its first again.
TEST_F(RestartTest, RetriesAreCountedAcrossARestart) {
  StartDaemon();
  const std::string id = RunOnFakeWorker("out-r", "");
  workers_.front()->Disconnect();
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_QUEUED));
  EXPECT_EQ(Get(id).retries(), 1);
  EXPECT_THAT(Get(id).reason(), HasSubstr("(retry 1 of 3)"));
  Kill();
  StartDaemon(port_);
  EXPECT_EQ(Get(id).retries(), 1);
  FakeWorker& w = AddWorker("after");
  EXPECT_EQ(Expect(w, Kind::kCreateRendezvous).create_rendezvous().job_id(), id);
  w.Offer(id);
  Expect(w, Kind::kAssignment);
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_RUNNING));
  w.Disconnect();
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_QUEUED));
  EXPECT_EQ(Get(id).retries(), 2);
  EXPECT_THAT(Get(id).reason(), HasSubstr("(retry 2 of 3)"));
}

TEST_F(RestartTest, AStateFileThatIsNotAJobDatabaseStopsTheDaemon) {
  std::filesystem::create_directories(tmp_ / "state");
  const std::string path = tmp_ / "state/jobs.db";
  std::ofstream(path) << "not a database, but someone's data\n";
  Subprocess daemon({DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "",
                     "--state-dir", tmp_ / "state"},
                    tmp_ / "log");
  EXPECT_EQ(daemon.Wait(10s), 1) << daemon.Log();
  EXPECT_THAT(daemon.Log(), HasSubstr(path));
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  EXPECT_EQ(line, "not a database, but someone's data");
}

}  // namespace
}  // namespace dgptq::coordinator::testing
