// WatchJob (replay, resume, live, end at the terminal state) and ListJobs (paging, filter).
#include <set>

#include "gmock/gmock.h"
#include "tests/coordinator/coordinator_test_util.h"

namespace dgptq::coordinator::testing {
namespace {

using Kind = v1::ControlResponse::KindCase;

class WatchListTest : public CoordinatorTest {
 protected:
  // Every event WatchJob streams from `from` until the stream ends, and its status.
  grpc::Status Watch(const std::string& id, int64_t from, std::vector<v1::JobEvent>* events) {
    v1::WatchJobRequest req;
    req.set_job_id(id);
    req.set_from_index(from);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    auto reader = stub_->WatchJob(&ctx, req);
    v1::JobEvent e;
    while (reader->Read(&e)) events->push_back(e);
    return reader->Finish();
  }
  grpc::Status List(std::vector<v1::JobState> states, int page_size, const std::string& token,
                    v1::ListJobsResponse* resp) {
    v1::ListJobsRequest req;
    for (v1::JobState s : states) req.add_states(s);
    req.set_page_size(page_size);
    req.set_page_token(token);
    grpc::ClientContext ctx;
    return stub_->ListJobs(&ctx, req, resp);
  }
  // A job taken through RUNNING to SUCCEEDED on one worker, with one progress event.
  std::string Succeeded(FakeWorker& w) {
    const std::string id = SubmitOk(Spec("out", 1));
    Expect(w, Kind::kCreateRendezvous);
    w.Offer(id);
    Expect(w, Kind::kAssignment);
    w.LayerDone(id, 0, 0, 2);
    w.Result(id, 0);
    EXPECT_TRUE(WaitForState(id, v1::JOB_STATE_SUCCEEDED));
    return id;
  }
};

TEST_F(WatchListTest, ReplaysTheWholeLogAndEndsAtTheTerminalState) {
  Start();
  FakeWorker& w = AddWorker("a");
  const std::string id = Succeeded(w);
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(Watch(id, 0, &events).ok());
  ASSERT_EQ(events.size(), 5u);  // QUEUED, PLANNING, RUNNING, progress, SUCCEEDED
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].index(), static_cast<int64_t>(i));
    EXPECT_EQ(events[i].job_id(), id);
    EXPECT_GT(events[i].time().seconds(), 0);
  }
  EXPECT_EQ(events[1].state_change().to_state(), v1::JOB_STATE_PLANNING);
  EXPECT_EQ(events[2].state_change().from_state(), v1::JOB_STATE_PLANNING);
  EXPECT_EQ(events[2].state_change().to_state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(events[3].progress().phase(), v1::PHASE_WRITE);
  EXPECT_EQ(events[4].state_change().from_state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(events[4].state_change().to_state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Get(id).event_count(), 5);
}

TEST_F(WatchListTest, ResumesFromAnIndex) {
  Start();
  FakeWorker& w = AddWorker("a");
  const std::string id = Succeeded(w);
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(Watch(id, 3, &events).ok());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].index(), 3);
  EXPECT_EQ(events[1].index(), 4);
  events.clear();
  ASSERT_TRUE(Watch(id, 5, &events).ok());  // the end of a terminal job's log: nothing more
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(Watch(id, 6, &events).error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(Watch("j-nope", 0, &events).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(WatchListTest, StreamsLiveEventsUntilTheJobEnds) {
  Start();
  const std::string id = SubmitOk(Spec("out", 1));
  std::vector<v1::JobEvent> events;
  grpc::Status status;
  std::thread watcher([&] { status = Watch(id, 0, &events); });
  std::this_thread::sleep_for(100ms);  // the watcher has the replay and waits for more
  FakeWorker& w = AddWorker("a");
  Expect(w, Kind::kCreateRendezvous);
  Cancel(id, "stop");
  watcher.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(events.size(), 3u);  // QUEUED, PLANNING, CANCELLED
  EXPECT_EQ(events.back().state_change().to_state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(events.back().state_change().reason(), "stop");
}

TEST_F(WatchListTest, AWatchEndsWhenTheServerShutsDown) {
  Start();
  const std::string id = SubmitOk(Spec("out", 1));
  std::vector<v1::JobEvent> events;
  grpc::Status status;
  std::thread watcher([&] { status = Watch(id, 0, &events); });
  std::this_thread::sleep_for(100ms);
  const auto t0 = std::chrono::steady_clock::now();
  server_->Shutdown(absl::Seconds(5));
  watcher.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(events.size(), 1u);
}

TEST_F(WatchListTest, ListsNewestFirstInPages) {
  Start();
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(SubmitOk(Spec("out", 1)));
  std::vector<std::string> seen;
  std::vector<int> sizes;
  std::string token;
  do {
    v1::ListJobsResponse resp;
    ASSERT_TRUE(List({}, 3, token, &resp).ok());
    sizes.push_back(resp.jobs_size());
    for (const v1::Job& j : resp.jobs()) seen.push_back(j.job_id());
    token = resp.next_page_token();
  } while (!token.empty() && sizes.size() < 10);
  EXPECT_THAT(sizes, ::testing::ElementsAre(3, 3, 1));
  EXPECT_EQ(seen, std::vector<std::string>(ids.rbegin(), ids.rend()));

  v1::ListJobsResponse all;
  ASSERT_TRUE(List({}, 0, "", &all).ok());
  EXPECT_EQ(all.jobs_size(), 7);
  EXPECT_TRUE(all.next_page_token().empty());
}

TEST_F(WatchListTest, FiltersByStateAndRejectsForeignTokens) {
  Start();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(SubmitOk(Spec("out", 1)));
  Cancel(ids[1]);
  Cancel(ids[3]);
  v1::ListJobsResponse resp;
  ASSERT_TRUE(List({v1::JOB_STATE_CANCELLED}, 0, "", &resp).ok());
  ASSERT_EQ(resp.jobs_size(), 2);
  EXPECT_EQ(resp.jobs(0).job_id(), ids[3]);
  EXPECT_EQ(resp.jobs(1).job_id(), ids[1]);
  resp.Clear();
  ASSERT_TRUE(List({v1::JOB_STATE_QUEUED, v1::JOB_STATE_SUCCEEDED}, 2, "", &resp).ok());
  EXPECT_EQ(resp.jobs_size(), 2);
  const std::string token = resp.next_page_token();
  resp.Clear();
  ASSERT_TRUE(List({v1::JOB_STATE_QUEUED}, 2, token, &resp).ok());
  ASSERT_EQ(resp.jobs_size(), 1);
  EXPECT_EQ(resp.jobs(0).job_id(), ids[0]);
  EXPECT_TRUE(resp.next_page_token().empty());

  EXPECT_EQ(List({}, 0, "not-a-token", &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(List({}, 0, "djE6eHh4eHh4OjE", &resp).error_code(),  // "v1:xxxxxx:1"
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(List({}, -1, "", &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace dgptq::coordinator::testing
