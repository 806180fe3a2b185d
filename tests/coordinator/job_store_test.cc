// The durable JobStore (issue 6) on a temporary state directory: what is written comes back
// after a reopen (jobs, events, request ids, paging, the tag), a writer killed with SIGKILL
// loses nothing it returned from, and files that are not ours, of another schema version or
// corrupt are refused with a message naming them and left as they are.
#include "coordinator/job_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace dgptq::coordinator {
namespace {

using dgptq::testing::TempDir;
using google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

v1::Job NewJob(const std::string& id, const std::string& request_id = "") {
  v1::Job job;
  job.set_job_id(id);
  job.set_request_id(request_id);
  job.mutable_spec()->set_model_path("/models/" + id);
  job.mutable_spec()->set_num_workers(2);
  return job;
}

v1::JobEvent LayerDone(int rank, int layer) {
  v1::JobEvent e;
  e.mutable_progress()->set_rank(rank);
  e.mutable_progress()->set_layer(layer);
  e.mutable_progress()->set_phase(v1::PHASE_WRITE);
  return e;
}

JobStore OpenOk(const std::string& dir) {
  absl::StatusOr<JobStore> s = JobStore::Open(dir);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : JobStore();
}

// Three jobs: j1 (request r1) RUNNING with progress, j2 CANCELLED, j3 (request r3) QUEUED.
void Fill(JobStore& s) {
  ASSERT_TRUE(s.Create(NewJob("j1", "r1"), "waiting", kT0).ok());
  ASSERT_TRUE(s.Create(NewJob("j2"), "waiting", kT0 + absl::Seconds(1)).ok());
  ASSERT_TRUE(s.Create(NewJob("j3", "r3"), "waiting", kT0 + absl::Seconds(2)).ok());
  s.Update("j1", [](v1::Job* j) {
    j->add_worker_ids("w-a");
    j->add_worker_ids("w-b");
    j->set_num_layers(4);
  });
  s.Transition("j1", v1::JOB_STATE_PLANNING, "planning", kT0 + absl::Seconds(3));
  s.Transition("j1", v1::JOB_STATE_RUNNING, "assigned", kT0 + absl::Seconds(4));
  for (int layer = 0; layer < 3; ++layer) {
    for (int rank = 0; rank < 2; ++rank) s.Append("j1", LayerDone(rank, layer), kT0);
  }
  s.Update("j1", [](v1::Job* j) { j->set_layers_done(3); });
  s.Transition("j2", v1::JOB_STATE_CANCELLED, "cancelled by user", kT0 + absl::Seconds(5));
}

// Every job and every event of `a` is in `b`, equal.
void ExpectSameJobs(const JobStore& a, const JobStore& b) {
  ASSERT_EQ(a.size(), b.size());
  int64_t last = 0;
  bool more = false;
  for (const v1::Job& job : a.List({}, 0, 1000, &last, &more)) {
    const v1::Job* other = b.Get(job.job_id());
    ASSERT_NE(other, nullptr) << job.job_id();
    EXPECT_TRUE(MessageDifferencer::Equals(job, *other))
        << job.DebugString() << other->DebugString();
    const std::vector<v1::JobEvent> ea = a.Events(job.job_id(), 0), eb = b.Events(job.job_id(), 0);
    ASSERT_EQ(ea.size(), eb.size()) << job.job_id();
    for (size_t i = 0; i < ea.size(); ++i) {
      EXPECT_TRUE(MessageDifferencer::Equals(ea[i], eb[i])) << job.job_id() << " event " << i;
    }
  }
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void Sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
}

TEST(JobStoreTest, ReopenGivesEveryJobEventAndRequestId) {
  TempDir tmp;
  const std::string dir = tmp / "state";
  {
    JobStore s = OpenOk(dir);
    EXPECT_EQ(s.path(), dir + "/jobs.db");
    Fill(s);
  }
  JobStore s = OpenOk(dir);
  // What the same calls leave in memory is what the reopened store holds.
  JobStore mem;
  Fill(mem);
  ExpectSameJobs(mem, s);
  ASSERT_EQ(s.size(), 3);
  EXPECT_EQ(s.Get("j1")->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(s.Get("j1")->event_count(), 9);  // QUEUED, PLANNING, RUNNING, 6 progress
  EXPECT_EQ(s.Get("j1")->layers_done(), 3);
  EXPECT_EQ(s.Get("j2")->state(), v1::JOB_STATE_CANCELLED);
  ASSERT_NE(s.GetByRequestId("r1"), nullptr);
  EXPECT_EQ(s.GetByRequestId("r1")->job_id(), "j1");
  EXPECT_EQ(s.GetByRequestId("r3")->job_id(), "j3");
  EXPECT_EQ(s.GetByRequestId("r2"), nullptr);
  EXPECT_EQ(s.Unfinished(), (std::vector<std::string>{"j1", "j3"}));
  // The reopened store goes on: a new job gets the next sequence number, and it is saved.
  ASSERT_TRUE(s.Create(NewJob("j4", "r4"), "waiting", kT0).ok());
  s.Append("j1", LayerDone(0, 3), kT0);
  s = JobStore();  // closes the file
  JobStore again = OpenOk(dir);
  EXPECT_EQ(again.size(), 4);
  EXPECT_EQ(again.GetByRequestId("r4")->job_id(), "j4");
  EXPECT_EQ(again.Get("j1")->event_count(), 10);
  EXPECT_EQ(again.Events("j1", 9)[0].progress().layer(), 3);
}

TEST(JobStoreTest, ReopenKeepsTheTagAndPagesGoOn) {
  TempDir tmp;
  const std::string dir = tmp / "state";
  std::string tag;
  int64_t last = 0;
  bool more = false;
  std::vector<std::string> first;
  {
    JobStore s = OpenOk(dir);
    tag = s.tag();
    for (int i = 1; i <= 7; ++i) {
      ASSERT_TRUE(s.Create(NewJob("j" + std::to_string(i)), "waiting", kT0).ok());
      if (i % 2 == 0) s.Transition("j" + std::to_string(i), v1::JOB_STATE_FAILED, "x", kT0);
    }
    for (const v1::Job& j : s.List({v1::JOB_STATE_QUEUED}, 0, 2, &last, &more)) {
      first.push_back(j.job_id());
    }
  }
  EXPECT_EQ(first, (std::vector<std::string>{"j7", "j5"}));
  EXPECT_TRUE(more);
  EXPECT_EQ(last, 5);
  JobStore s = OpenOk(dir);
  EXPECT_EQ(s.tag(), tag);
  EXPECT_NE(JobStore().tag(), JobStore().tag());  // in memory: new every time
  std::vector<std::string> rest;
  for (const v1::Job& j : s.List({v1::JOB_STATE_QUEUED}, last, 2, &last, &more)) {
    rest.push_back(j.job_id());
  }
  EXPECT_EQ(rest, (std::vector<std::string>{"j3", "j1"}));
  EXPECT_FALSE(more);
}

// A child process writes and kills itself with SIGKILL without closing anything: every change
// it returned from is in the file.
TEST(JobStoreTest, NothingReturnedIsLostToSigkill) {
  TempDir tmp;
  const std::string dir = tmp / "state";
  const pid_t pid = ::fork();
  if (pid == 0) {
    absl::StatusOr<JobStore> s = JobStore::Open(dir);
    if (!s.ok()) ::_exit(3);
    for (int i = 0; i < 20; ++i) {
      const std::string id = "k" + std::to_string(i);
      if (!s->Create(NewJob(id, "req-" + id), "waiting", kT0).ok()) ::_exit(4);
      s->Transition(id, v1::JOB_STATE_RUNNING, "assigned", kT0);
      s->Append(id, LayerDone(0, 0), kT0);
    }
    ::kill(::getpid(), SIGKILL);
    ::_exit(5);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  JobStore s = OpenOk(dir);
  ASSERT_EQ(s.size(), 20);
  for (int i = 0; i < 20; ++i) {
    const std::string id = "k" + std::to_string(i);
    const v1::Job* job = s.GetByRequestId("req-" + id);
    ASSERT_NE(job, nullptr) << id;
    EXPECT_EQ(job->job_id(), id);
    EXPECT_EQ(job->state(), v1::JOB_STATE_RUNNING);
    ASSERT_EQ(job->event_count(), 3);
    EXPECT_TRUE(s.Events(id, 2)[0].has_progress());
  }
}

TEST(JobStoreTest, RefusesAForeignDatabaseAndLeavesItAlone) {
  TempDir tmp;
  const std::string dir = tmp / "state", path = dir + "/jobs.db";
  std::filesystem::create_directories(dir);
  Sql(path, "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');");
  const std::string before = Slurp(path);
  absl::StatusOr<JobStore> s = JobStore::Open(dir);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr(path));
  EXPECT_THAT(s.status().message(), HasSubstr("not a dgptq job database"));
  EXPECT_EQ(Slurp(path), before);
  EXPECT_FALSE(std::filesystem::exists(path + "-wal"));
}

TEST(JobStoreTest, RefusesAnotherSchemaVersion) {
  TempDir tmp;
  const std::string dir = tmp / "state", path = dir + "/jobs.db";
  {
    JobStore s = OpenOk(dir);
    Fill(s);
  }
  Sql(path, "PRAGMA user_version = 2");
  absl::StatusOr<JobStore> s = JobStore::Open(dir);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr(path));
  EXPECT_THAT(s.status().message(), HasSubstr("schema version 2"));
}

TEST(JobStoreTest, RefusesGarbageAndCorruptFiles) {
  TempDir tmp;
  const std::string garbage_dir = tmp / "garbage", garbage = garbage_dir + "/jobs.db";
  std::filesystem::create_directories(garbage_dir);
  std::ofstream(garbage, std::ios::binary) << std::string(8192, '\x5a');
  absl::StatusOr<JobStore> s = JobStore::Open(garbage_dir);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr(garbage));
  EXPECT_EQ(Slurp(garbage), std::string(8192, '\x5a'));

  // A database of ours with a page overwritten in the middle of its jobs.
  const std::string dir = tmp / "corrupt", path = dir + "/jobs.db";
  {
    JobStore ok = OpenOk(dir);
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(ok.Create(NewJob("j" + std::to_string(i)), std::string(300, 'r'), kT0).ok());
    }
  }
  std::string bytes = Slurp(path);
  ASSERT_GT(bytes.size(), 16u * 4096);
  for (size_t i = 8 * 4096; i < 9 * 4096; ++i) bytes[i] = static_cast<char>(i * 7);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  s = JobStore::Open(dir);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr(path));
}

TEST(JobStoreTest, RefusesADirectoryItCannotCreate) {
  TempDir tmp;
  std::ofstream(tmp / "file") << "x";
  absl::StatusOr<JobStore> s = JobStore::Open(tmp / "file/state");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr(std::string(tmp / "file/state")));
}

// One coordinator per state directory: a second open waits the busy timeout, then fails.
TEST(JobStoreTest, ASecondOpenOfAHeldStoreFails) {
  TempDir tmp;
  const std::string dir = tmp / "state";
  JobStore held = OpenOk(dir);
  ASSERT_TRUE(held.Create(NewJob("j1"), "waiting", kT0).ok());
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<JobStore> s = JobStore::Open(dir);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr("another dgptq-coordinator"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15));
  held.Transition("j1", v1::JOB_STATE_CANCELLED, "done", kT0);
  EXPECT_EQ(held.Get("j1")->state(), v1::JOB_STATE_CANCELLED);
}

}  // namespace
}  // namespace dgptq::coordinator
