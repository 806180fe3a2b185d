// The job lifecycle with FakeWorkers on real control streams: queueing, CreateRendezvous ->
// RendezvousOffer -> Assignment, progress, results, failures, cancellation, lost workers.
#include <algorithm>
#include <set>

#include "gmock/gmock.h"
#include "tests/coordinator/coordinator_test_util.h"

namespace dgptq::coordinator::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using Kind = v1::ControlResponse::KindCase;

class SchedulingTest : public CoordinatorTest {
 protected:
  // Polls until the job's reason is `reason`.
  bool WaitForReason(const std::string& id, const std::string& reason) {
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < end) {
      if (Get(id).reason() == reason) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  // Polls until the coordinator no longer knows `w` (its heartbeat is NOT_FOUND).
  bool WaitUntilForgotten(FakeWorker& w) {
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < end) {
      if (w.Heartbeat().error_code() == grpc::StatusCode::NOT_FOUND) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  // Submits a job on `workers` (in registration order) and takes it to RUNNING; returns its id.
  std::string Run(const std::vector<FakeWorker*>& workers, const std::string& out = "out") {
    const std::string id = SubmitOk(Spec(out, static_cast<int>(workers.size())));
    const v1::ControlResponse cr = Expect(*workers[0], Kind::kCreateRendezvous);
    EXPECT_EQ(cr.create_rendezvous().job_id(), id);
    workers[0]->Offer(id);
    for (FakeWorker* w : workers) Expect(*w, Kind::kAssignment);
    EXPECT_TRUE(WaitForState(id, v1::JOB_STATE_RUNNING));
    return id;
  }
};

TEST_F(SchedulingTest, QueuedUntilASecondWorkerRegisters) {
  Start();
  FakeWorker& a = AddWorker("a");
  const std::string id = SubmitOk(Spec("out", 2));
  EXPECT_TRUE(WaitForReason(id, "waiting for 2 workers (1 idle)")) << Get(id).reason();
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_QUEUED);
  EXPECT_FALSE(a.Next(50ms).has_value());

  FakeWorker& b = AddWorker("b");
  const v1::ControlResponse cr = Expect(a, Kind::kCreateRendezvous);
  EXPECT_EQ(cr.create_rendezvous().job_id(), id);
  EXPECT_EQ(cr.create_rendezvous().backend(), "host");
  EXPECT_EQ(cr.create_rendezvous().world_size(), 2);
  const v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_PLANNING);
  EXPECT_THAT(job.worker_ids(), ::testing::ElementsAre(a.id(), b.id()));
  EXPECT_EQ(job.num_layers(), 2);
  EXPECT_FALSE(b.Next(50ms).has_value());  // only rank 0 is asked for the rendezvous
}

TEST_F(SchedulingTest, OfferBringsEveryRankItsAssignment) {
  Start();
  std::vector<FakeWorker*> w = {&AddWorker("a"), &AddWorker("b"), &AddWorker("c")};
  const v1::JobSpec spec = Spec("out", 3);
  const std::string id = SubmitOk(spec);
  Expect(*w[0], Kind::kCreateRendezvous);
  w[0]->Offer(id, "127.0.0.1:4567");
  std::vector<int64_t> bounds;
  for (int r = 0; r < 3; ++r) {
    const v1::Assignment a = Expect(*w[r], Kind::kAssignment).assignment();
    EXPECT_EQ(a.job_id(), id);
    EXPECT_EQ(a.rank(), r);
    EXPECT_EQ(a.world_size(), 3);
    EXPECT_EQ(a.rendezvous().backend(), "host");
    EXPECT_EQ(a.rendezvous().host_address(), "127.0.0.1:4567");
    EXPECT_EQ(a.spec().SerializeAsString(), spec.SerializeAsString());
    EXPECT_EQ(a.plan().total_samples(), 10);
    ASSERT_EQ(a.plan().layers_size(), 2);
    for (const v1::LayerPlan& layer : a.plan().layers()) {
      std::multiset<std::string> modules;
      for (const v1::ModuleGroup& g : layer.groups()) {
        EXPECT_GE(g.owner_rank(), 0);
        EXPECT_LT(g.owner_rank(), 3);
        EXPECT_GT(g.estimated_cost(), 0);
        modules.insert(g.modules().begin(), g.modules().end());
      }
      EXPECT_THAT(modules, UnorderedElementsAre("self_attn.q_proj", "self_attn.k_proj",
                                                "self_attn.v_proj", "self_attn.o_proj",
                                                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"));
    }
    bounds.push_back(a.shard().begin());
    bounds.push_back(a.shard().end());
  }
  // Shards partition [0, 10) in rank order.
  EXPECT_EQ(bounds.front(), 0);
  EXPECT_EQ(bounds.back(), 10);
  for (size_t i = 1; i + 1 < bounds.size(); i += 2) EXPECT_EQ(bounds[i], bounds[i + 1]);
  for (size_t i = 0; i < bounds.size(); i += 2) EXPECT_LT(bounds[i], bounds[i + 1]);
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_RUNNING));
  EXPECT_THAT(Get(id).worker_ids(), ::testing::ElementsAre(w[0]->id(), w[1]->id(), w[2]->id()));
}

TEST_F(SchedulingTest, EveryRankSucceedingSucceedsTheJob) {
  Start();
  FakeWorker& a = AddWorker("a");
  FakeWorker& b = AddWorker("b");
  const std::string id = Run({&a, &b});
  a.LayerDone(id, 0, 0, 2);
  a.LayerDone(id, 0, 1, 2);
  b.LayerDone(id, 1, 0, 2);
  // layers_done is the minimum over ranks.
  const auto end = std::chrono::steady_clock::now() + 5s;
  while (Get(id).event_count() < 6 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(Get(id).layers_done(), 1);
  b.LayerDone(id, 1, 1, 2);
  a.Result(id, 0);
  b.Result(id, 1);
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_SUCCEEDED)) << Get(id).reason();
  const v1::Job job = Get(id);
  EXPECT_EQ(job.layers_done(), 2);
  EXPECT_EQ(job.num_layers(), 2);
  EXPECT_EQ(job.reason(), "all 2 ranks finished");
  // Both workers are free again.
  Run({&a, &b}, "out2");
}

TEST_F(SchedulingTest, AFailingRankFailsTheJobAndStopsTheOthers) {
  Start();
  FakeWorker& a = AddWorker("a");
  FakeWorker& b = AddWorker("b");
  const std::string id = Run({&a, &b});
  b.Result(id, 1, 13, "Hessian reduce: peer reset");
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_FAILED));
  EXPECT_EQ(Get(id).reason(), "rank 1 (worker b): Hessian reduce: peer reset");
  const v1::StopJob stop = Expect(a, Kind::kStopJob).stop_job();
  EXPECT_EQ(stop.job_id(), id);
  EXPECT_THAT(stop.reason(), HasSubstr("rank 1 (worker b)"));
  EXPECT_FALSE(b.Next(50ms).has_value());
  // a stays busy until it reports back; then both run the next job.
  const std::string next = SubmitOk(Spec("out2", 2));
  EXPECT_FALSE(a.Next(100ms).has_value());
  a.Result(id, 0, 1, "cancelled");
  EXPECT_EQ(Expect(a, Kind::kCreateRendezvous).create_rendezvous().job_id(), next);
}

TEST_F(SchedulingTest, AFatalErrorEventFailsTheJob) {
  Start();
  FakeWorker& a = AddWorker("a");
  FakeWorker& b = AddWorker("b");
  const std::string id = Run({&a, &b});
  v1::ControlRequest req;
  req.mutable_event()->set_job_id(id);
  req.mutable_event()->mutable_error()->set_rank(0);
  req.mutable_event()->mutable_error()->set_code(8);
  req.mutable_event()->mutable_error()->set_message("out of GPU memory");
  req.mutable_event()->mutable_error()->set_fatal(true);
  a.Send(req);
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_FAILED));
  EXPECT_EQ(Get(id).reason(), "rank 0 (worker a): out of GPU memory");
  EXPECT_EQ(Expect(b, Kind::kStopJob).stop_job().job_id(), id);
}

TEST_F(SchedulingTest, CancelStopsEveryRank) {
  Start();
  FakeWorker& a = AddWorker("a");
  FakeWorker& b = AddWorker("b");
  const std::string id = Run({&a, &b});
  const v1::Job job = Cancel(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.reason(), "cancelled by user");
  EXPECT_EQ(Expect(a, Kind::kStopJob).stop_job().reason(), "cancelled by user");
  EXPECT_EQ(Expect(b, Kind::kStopJob).stop_job().job_id(), id);
  // A terminal job is returned unchanged; late reports leave it alone.
  const int64_t events = Get(id).event_count();
  a.Result(id, 0, 1, "cancelled");
  b.LayerDone(id, 1, 0, 2);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(Cancel(id, "again").reason(), "cancelled by user");
  EXPECT_EQ(Get(id).event_count(), events);
}

TEST_F(SchedulingTest, CancelAQueuedJob) {
  Start();
  const std::string id = SubmitOk(Spec("out", 2));
  const v1::Job job = Cancel(id, "changed my mind");
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.reason(), "changed my mind");
  // It never starts, even once workers exist.
  FakeWorker& a = AddWorker("a");
  AddWorker("b");
  EXPECT_FALSE(a.Next(100ms).has_value());
}

TEST_F(SchedulingTest, ALaterJobThatFitsStartsFirst) {
  Start();
  FakeWorker& a = AddWorker("a");
  const std::string big = SubmitOk(Spec("big", 3));
  const std::string small = SubmitOk(Spec("small", 1));
  EXPECT_EQ(Expect(a, Kind::kCreateRendezvous).create_rendezvous().job_id(), small);
  EXPECT_EQ(Get(big).state(), v1::JOB_STATE_QUEUED);
}

TEST_F(SchedulingTest, DeviceKindAndCommBackend) {
  Start();
  FakeWorker& cpu = AddWorker("cpu");
  v1::JobSpec spec = Spec("out", 2);
  spec.set_worker_device_kind(v1::DEVICE_KIND_CUDA);
  const std::string id = SubmitOk(spec);
  FakeWorker& g1 = AddWorker("g1", v1::DEVICE_KIND_CUDA, "host-1");
  FakeWorker& g2 = AddWorker("g2", v1::DEVICE_KIND_CUDA, "host-2");
  const v1::CreateRendezvous cr = Expect(g1, Kind::kCreateRendezvous).create_rendezvous();
  EXPECT_EQ(cr.job_id(), id);
  EXPECT_EQ(cr.backend(), "nccl");  // CUDA ranks on distinct hosts
  EXPECT_FALSE(cpu.Next(50ms).has_value());
  Cancel(id);
  Expect(g1, Kind::kStopJob);
  Expect(g2, Kind::kStopJob);

  // Two CUDA ranks on one host may share a GPU: host transport.
  FakeWorker& g3 = AddWorker("g3", v1::DEVICE_KIND_CUDA, "host-3");
  FakeWorker& g4 = AddWorker("g4", v1::DEVICE_KIND_CUDA, "host-3");
  g1.Disconnect();
  g2.Disconnect();
  ASSERT_TRUE(WaitUntilForgotten(g1));
  ASSERT_TRUE(WaitUntilForgotten(g2));
  SubmitOk(spec);
  EXPECT_EQ(Expect(g3, Kind::kCreateRendezvous).create_rendezvous().backend(), "host");
  EXPECT_FALSE(g4.Next(50ms).has_value());
}

// Without retries (--max-job-retries 0) a lost worker fails its job.
TEST_F(SchedulingTest, ALostLeaseFailsTheJobNamingTheWorker) {
  CoordinatorOptions o = TestOptions();
  o.max_job_retries = 0;
  o.lease_ttl = absl::Milliseconds(400);
  o.heartbeat_interval = absl::Milliseconds(50);
  Start(o);
  FakeWorker& a = AddWorker("a");
  FakeWorker& b = AddWorker("b");
  const std::string id = Run({&a, &b});
  b.StopHeartbeats();
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_FAILED));
  EXPECT_EQ(Get(id).reason(), "worker b lost its lease");
  EXPECT_THAT(Expect(a, Kind::kStopJob).stop_job().reason(), HasSubstr("worker b lost its lease"));
  EXPECT_TRUE(b.WaitClosed(2000ms));
  EXPECT_EQ(b.Heartbeat().error_code(), grpc::StatusCode::NOT_FOUND);
}

// A disconnected worker's job goes back to QUEUED naming it, its other rank is stopped
// (keeping the partial output), and once that rank is idle the job is re-planned over the
// one worker left; when retries run out it fails naming the worker.
TEST_F(SchedulingTest, ADisconnectedWorkerRequeuesItsJobOverTheWorkersLeft) {
  CoordinatorOptions o = TestOptions();
  o.max_job_retries = 1;
  Start(o);
  FakeWorker& a = AddWorker("a");
  FakeWorker& b = AddWorker("b");
  const std::string id = Run({&a, &b});
  a.LayerDone(id, 0, 0, 2);
  b.LayerDone(id, 1, 0, 2);
  for (int i = 0; i < 1000 && Get(id).layers_done() < 1; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(Get(id).layers_done(), 1);
  b.Disconnect();
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_QUEUED));
  EXPECT_THAT(Get(id).reason(), HasSubstr("worker b disconnected; re-queued to resume after layer 0 (retry 1 of 1)"));
  const v1::ControlResponse stop = Expect(a, Kind::kStopJob);
  EXPECT_FALSE(stop.stop_job().discard_output());
  EXPECT_EQ(b.Heartbeat().error_code(), grpc::StatusCode::NOT_FOUND);
  a.Result(id, 0, 1, "cancelled");  // the stopped rank reports back: idle again
  const v1::ControlResponse rdv = Expect(a, Kind::kCreateRendezvous);
  EXPECT_EQ(rdv.create_rendezvous().job_id(), id);
  EXPECT_EQ(rdv.create_rendezvous().world_size(), 1);
  a.Offer(id);
  EXPECT_EQ(Expect(a, Kind::kAssignment).assignment().world_size(), 1);
  a.Disconnect();  // no retry left
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_FAILED));
  EXPECT_EQ(Get(id).reason(), "worker a disconnected (after 1 retries)");
}

// A worker lost while it winds down a run its job was already re-queued from does not
// re-queue the job again: the next run starts once on the workers left.
TEST_F(SchedulingTest, AWorkerLostAfterTheRequeueDoesNotRequeueAgain) {
  Start();
  FakeWorker& a = AddWorker("a");
  FakeWorker& b = AddWorker("b");
  const std::string id = Run({&a, &b});
  FakeWorker& c = AddWorker("c");
  b.Disconnect();
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_QUEUED));
  Expect(a, Kind::kStopJob);
  a.Disconnect();  // before it reported back
  const v1::ControlResponse rdv = Expect(c, Kind::kCreateRendezvous);
  EXPECT_EQ(rdv.create_rendezvous().job_id(), id);
  EXPECT_EQ(rdv.create_rendezvous().world_size(), 1);
  Cancel(id);
  v1::WatchJobRequest req;
  req.set_job_id(id);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  auto reader = stub_->WatchJob(&ctx, req);
  int requeues = 0;
  v1::JobEvent e;
  while (reader->Read(&e)) {
    requeues += e.has_state_change() && e.state_change().to_state() == v1::JOB_STATE_QUEUED &&
                e.state_change().from_state() != v1::JOB_STATE_UNSPECIFIED;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(requeues, 1);
}

// A rank's communicator error waits briefly for the lost worker it is the symptom of, which
// then names the reason; a cancelled job tells its ranks to discard the partial output.
TEST_F(SchedulingTest, ACommunicatorErrorDefersToTheLostWorker) {
  CoordinatorOptions o = TestOptions();
  o.max_job_retries = 0;
  Start(o);
  FakeWorker& a = AddWorker("a");
  FakeWorker& b = AddWorker("b");
  const std::string id = Run({&a, &b});
  a.Result(id, 0, 14, "broadcast: connection reset by peer");  // UNAVAILABLE
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_RUNNING);
  b.Disconnect();
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_FAILED));
  EXPECT_EQ(Get(id).reason(), "worker b disconnected");

  FakeWorker& c = AddWorker("c");
  const std::string next = Run({&a, &c}, "out2");
  Cancel(next);
  EXPECT_TRUE(Expect(a, Kind::kStopJob).stop_job().discard_output());
}

TEST_F(SchedulingTest, NoOfferWithinTheTimeoutFailsTheJobAndFreesTheWorkers) {
  CoordinatorOptions o = TestOptions();
  o.rendezvous_timeout = absl::Milliseconds(200);
  Start(o);
  FakeWorker& a = AddWorker("a");
  FakeWorker& b = AddWorker("b");
  const std::string id = SubmitOk(Spec("out", 2));
  Expect(a, Kind::kCreateRendezvous);
  ASSERT_TRUE(WaitForState(id, v1::JOB_STATE_FAILED));
  EXPECT_THAT(Get(id).reason(), HasSubstr("rendezvous timed out: rank 0 (worker a)"));
  Expect(a, Kind::kStopJob);
  Expect(b, Kind::kStopJob);
  // No result is owed for a job never assigned: both take the next job at once.
  const std::string next = SubmitOk(Spec("out2", 2));
  EXPECT_EQ(Expect(a, Kind::kCreateRendezvous).create_rendezvous().job_id(), next);
}

TEST_F(SchedulingTest, ControlStreamProtocolErrors) {
  Start();
  // The status a control stream ends with when its first message is `first`.
  auto open_with = [&](const v1::ControlRequest& first) {
    grpc::ClientContext ctx;
    auto stream = stub_->Control(&ctx);
    stream->Write(first);
    v1::ControlResponse msg;
    EXPECT_FALSE(stream->Read(&msg));
    return stream->Finish().error_code();
  };
  v1::ControlRequest hello;
  hello.mutable_hello()->set_worker_id("w-unknown");
  EXPECT_EQ(open_with(hello), grpc::StatusCode::NOT_FOUND);
  v1::ControlRequest result;
  result.mutable_result()->set_job_id("j");
  EXPECT_EQ(open_with(result), grpc::StatusCode::INVALID_ARGUMENT);

  v1::HeartbeatRequest req;
  req.set_worker_id("w-unknown");
  v1::HeartbeatResponse resp;
  grpc::ClientContext ctx;
  EXPECT_EQ(stub_->Heartbeat(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  FakeWorker& a = AddWorker("a");
  EXPECT_EQ(a.id().rfind("w-", 0), 0u);
  EXPECT_EQ(a.lease_ttl_ms(), 30000);
  EXPECT_TRUE(a.Heartbeat().ok());
  // One control stream per worker: a second hello is refused while the first is open.
  const std::string id = SubmitOk(Spec("out", 1));
  Expect(a, Kind::kCreateRendezvous);  // a's stream is open now
  hello.mutable_hello()->set_worker_id(a.id());
  EXPECT_EQ(open_with(hello), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_PLANNING);
}

}  // namespace
}  // namespace dgptq::coordinator::testing
