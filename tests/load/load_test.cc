// Load on the coordinator (issue 6), bounded in count and time, loopback only, against
// dgptq-coordinator-asan (the daemon built with AddressSanitizer + UBSan): 200 concurrent
// SubmitJob calls with request ids (150 ids, 50 of them sent twice at once), 200 concurrent
// GetJob calls, 100 concurrent WatchJob streams followed to the end while their jobs are
// cancelled, and ListJobs paged through. No job is lost or duplicated, every stream sees a
// gap-free log, p50/p99 latencies are printed, and the sanitizers report nothing.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dgptq/v1/coordinator.grpc.pb.h"
#include "tests/cluster_util.h"
#include "tests/test_util.h"

namespace dgptq {
namespace {

using dgptq::testing::TempDir;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kIds = 150, kRetries = 50, kGets = 200, kWatchers = 100;

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

void PrintLatencies(const char* what, const std::vector<double>& ms) {
  std::printf("%s: %zu calls, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", what, ms.size(),
              Percentile(ms, 0.50), Percentile(ms, 0.99), Percentile(ms, 1.0));
}

class CoordinatorLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = tmp_ / "model";
    const std::string make = std::string(DGPTQ_BINARY_DIR) + "/worker/dgptq make-model --out " +
                             model_ + " --hidden 64 --layers 2 --heads 4 --kv-heads 2 " +
                             "--intermediate 128 --vocab 300 --max-position 256 > /dev/null";
    ASSERT_EQ(std::system(make.c_str()), 0);
    calib_ = tmp_ / "calib.txt";
    std::ofstream calib(calib_);
    for (int i = 0; i < 300; ++i) calib << "Line " << i * 7 << ": the quick brown fox. ";
    // The sanitizers stop the daemon at the first report; leaks are reported at exit.
    ::setenv("ASAN_OPTIONS", "halt_on_error=1:detect_leaks=1", 1);
    ::setenv("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1", 1);
    coordinator_ =
        dgptq::testing::StartDaemon({DGPTQ_COORDINATOR_ASAN_BIN}, tmp_.path(), "coordinator", 60s);
    ASSERT_GT(coordinator_.port, 0) << coordinator_.proc->Log();
    channel_ = grpc::CreateChannel(coordinator_.address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Coordinator::NewStub(channel_);
  }

  v1::SubmitJobRequest Request(int id) const {
    v1::SubmitJobRequest req;
    req.set_request_id("load-" + std::to_string(id));
    v1::JobSpec* s = req.mutable_spec();
    s->set_model_path(model_);
    s->set_output_path(tmp_ / ("out-" + std::to_string(id)));
    s->mutable_calibration()->set_path(calib_);
    s->mutable_calibration()->set_samples(4);
    s->mutable_calibration()->set_seq_len(32);
    s->mutable_quantization()->set_group_size(32);
    s->set_num_workers(1);
    return req;
  }

  TempDir tmp_;
  std::string model_, calib_;
  dgptq::testing::Daemon coordinator_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(CoordinatorLoad, ConcurrentSubmitGetWatchAndListUnderSanitizers) {
  // --- 200 concurrent submits: ids 0..149, and 0..49 once more at the same time.
  std::mutex mu;
  std::map<std::string, std::set<std::string>> jobs_of;  // request id -> job ids returned
  std::vector<double> submit_ms;
  std::atomic<int> submit_errors{0};
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kIds + kRetries; ++i) {
      threads.emplace_back([&, i] {
        const v1::SubmitJobRequest req = Request(i % kIds);
        v1::SubmitJobResponse resp;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + 60s);
        const auto t0 = Clock::now();
        const grpc::Status st = stub_->SubmitJob(&ctx, req, &resp);
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        std::lock_guard<std::mutex> lock(mu);
        if (!st.ok()) {
          ++submit_errors;
          ADD_FAILURE() << req.request_id() << ": " << st.error_message();
          return;
        }
        submit_ms.push_back(ms);
        jobs_of[req.request_id()].insert(resp.job().job_id());
      });
    }
    for (auto& t : threads) t.join();
  }
  ASSERT_EQ(submit_errors.load(), 0);
  ASSERT_EQ(jobs_of.size(), static_cast<size_t>(kIds));
  std::set<std::string> job_ids;
  for (const auto& [rid, ids] : jobs_of) {
    EXPECT_EQ(ids.size(), 1u) << rid << " got " << ids.size() << " jobs";  // retries dedup
    job_ids.insert(ids.begin(), ids.end());
  }
  ASSERT_EQ(job_ids.size(), static_cast<size_t>(kIds));  // none lost, none shared
  const std::vector<std::string> ids(job_ids.begin(), job_ids.end());

  // --- 200 concurrent GetJob calls.
  std::vector<double> get_ms;
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kGets; ++i) {
      threads.emplace_back([&, i] {
        v1::GetJobRequest req;
        req.set_job_id(ids[i % ids.size()]);
        v1::Job job;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + 60s);
        const auto t0 = Clock::now();
        const grpc::Status st = stub_->GetJob(&ctx, req, &job);
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        std::lock_guard<std::mutex> lock(mu);
        EXPECT_TRUE(st.ok()) << st.error_message();
        EXPECT_EQ(job.job_id(), req.job_id());
        EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);  // no workers: all wait
        get_ms.push_back(ms);
      });
    }
    for (auto& t : threads) t.join();
  }

  // --- 100 watchers, each followed to the end while its job is cancelled.
  std::atomic<int> watching{0}, complete{0};
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kWatchers; ++i) {
      threads.emplace_back([&, i] {
        v1::WatchJobRequest req;
        req.set_job_id(ids[i]);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + 120s);
        auto reader = stub_->WatchJob(&ctx, req);
        v1::JobEvent e;
        int64_t next = 0;
        bool cancelled = false;
        while (reader->Read(&e)) {
          if (next == 0) ++watching;
          EXPECT_EQ(e.index(), next) << ids[i];  // gap-free, in order
          ++next;
          cancelled = cancelled || (e.has_state_change() &&
                                    e.state_change().to_state() == v1::JOB_STATE_CANCELLED);
        }
        const grpc::Status st = reader->Finish();
        EXPECT_TRUE(st.ok()) << ids[i] << ": " << st.error_message();
        if (st.ok() && cancelled) ++complete;
      });
    }
    const auto end = Clock::now() + 60s;
    while (watching.load() < kWatchers && Clock::now() < end) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(watching.load(), kWatchers);
    std::vector<std::thread> cancels;
    for (int i = 0; i < kWatchers; ++i) {
      cancels.emplace_back([&, i] {
        v1::CancelJobRequest req;
        req.set_job_id(ids[i]);
        v1::CancelJobResponse resp;
        grpc::ClientContext ctx;
        const grpc::Status st = stub_->CancelJob(&ctx, req, &resp);
        EXPECT_TRUE(st.ok()) << st.error_message();
      });
    }
    for (auto& t : cancels) t.join();
    for (auto& t : threads) t.join();
  }
  EXPECT_EQ(complete.load(), kWatchers);

  // --- ListJobs, 7 per page: every job exactly once, states as left.
  std::map<std::string, v1::JobState> listed;
  std::string token;
  int pages = 0;
  do {
    v1::ListJobsRequest req;
    req.set_page_size(7);
    req.set_page_token(token);
    v1::ListJobsResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status st = stub_->ListJobs(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    for (const v1::Job& j : resp.jobs()) {
      EXPECT_TRUE(listed.emplace(j.job_id(), j.state()).second) << "listed twice: " << j.job_id();
    }
    token = resp.next_page_token();
    ASSERT_LT(++pages, 100);
  } while (!token.empty());
  EXPECT_EQ(listed.size(), static_cast<size_t>(kIds));
  int cancelled = 0;
  for (const auto& [id, state] : listed) {
    EXPECT_TRUE(job_ids.count(id)) << id;
    cancelled += state == v1::JOB_STATE_CANCELLED;
  }
  EXPECT_EQ(cancelled, kWatchers);

  PrintLatencies("SubmitJob", submit_ms);
  PrintLatencies("GetJob", get_ms);

  // --- A clean stop: exit 0 and no sanitizer report (leaks are checked at exit).
  coordinator_.proc->Signal(SIGTERM);
  EXPECT_EQ(coordinator_.proc->Wait(60s), 0) << coordinator_.proc->Log();
  const std::string log = coordinator_.proc->Log();
  for (const char* report : {"AddressSanitizer", "LeakSanitizer", "runtime error:"}) {
    EXPECT_EQ(log.find(report), std::string::npos) << log;
  }
}

}  // namespace
}  // namespace dgptq
