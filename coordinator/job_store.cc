#include "coordinator/job_store.h"

#include <algorithm>
#include <utility>

#include "common/status_macros.h"
#include "coordinator/job_db.h"
#include "coordinator/worker_registry.h"
#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace dgptq::coordinator {
namespace {

v1::JobEvent StateChange(v1::JobState from, v1::JobState to, const std::string& reason) {
  v1::JobEvent e;
  e.mutable_state_change()->set_from_state(from);
  e.mutable_state_change()->set_to_state(to);
  e.mutable_state_change()->set_reason(reason);
  return e;
}

// Sets what the store owns in an event: its index in the job's log, the job id and the time.
void Stamp(v1::JobEvent* e, const std::string& job_id, size_t index, absl::Time now) {
  e->set_index(static_cast<int64_t>(index));
  e->set_job_id(job_id);
  *e->mutable_time() = ToTimestamp(now);
}

}  // namespace

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

absl::Time FromTimestamp(const google::protobuf::Timestamp& t) {
  return absl::FromUnixNanos(google::protobuf::util::TimeUtil::TimestampToNanoseconds(t));
}

JobStore::JobStore() : tag_(InstanceTag()) {}
JobStore::JobStore(JobStore&&) noexcept = default;
JobStore& JobStore::operator=(JobStore&&) noexcept = default;
JobStore::~JobStore() = default;

absl::StatusOr<JobStore> JobStore::Open(const std::string& state_dir) {
  JobDb::Contents contents;
  JobStore store;
  DGPTQ_ASSIGN_OR_RETURN(store.db_, JobDb::Open(state_dir, &contents));
  store.tag_ = contents.tag;
  for (JobDb::StoredJob& j : contents.jobs) {
    store.Insert(j.seq, std::move(j.job), std::move(j.events));
  }
  return store;
}

std::string JobStore::path() const { return db_ == nullptr ? "" : db_->path(); }

JobStore::Entry& JobStore::Insert(int64_t seq, v1::Job job, std::vector<v1::JobEvent> events) {
  const std::string id = job.job_id();
  Entry& e = jobs_[id];
  e.seq = seq;
  if (!job.request_id().empty()) by_request_id_[job.request_id()] = id;
  e.job = std::move(job);
  e.events = std::move(events);
  e.saved_events = e.events.size();
  by_seq_.push_back(&e);
  return e;
}

absl::StatusOr<const v1::Job*> JobStore::Create(v1::Job job, const std::string& reason,
                                                absl::Time now) {
  job.set_state(v1::JOB_STATE_QUEUED);
  job.set_reason(reason);
  *job.mutable_create_time() = ToTimestamp(now);
  *job.mutable_update_time() = ToTimestamp(now);
  job.set_event_count(1);
  std::vector<v1::JobEvent> events{
      StateChange(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED, reason)};
  Stamp(&events[0], job.job_id(), 0, now);
  const int64_t seq = size() + 1;
  if (db_ != nullptr) DGPTQ_RETURN_IF_ERROR(db_->Put(seq, job, events));
  return &Insert(seq, std::move(job), std::move(events)).job;
}

const v1::Job* JobStore::Get(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second.job;
}

const v1::Job* JobStore::GetByRequestId(const std::string& request_id) const {
  auto it = by_request_id_.find(request_id);
  return it == by_request_id_.end() ? nullptr : Get(it->second);
}

JobStore::Entry& JobStore::At(const std::string& job_id) { return jobs_.at(job_id); }

void JobStore::Transition(const std::string& job_id, v1::JobState to, const std::string& reason,
                          absl::Time now) {
  Entry& e = At(job_id);
  v1::JobEvent event = StateChange(e.job.state(), to, reason);
  e.job.set_state(to);
  e.job.set_reason(reason);
  *e.job.mutable_update_time() = ToTimestamp(now);
  Stamp(&event, job_id, e.events.size(), now);
  e.events.push_back(std::move(event));
  e.job.set_event_count(static_cast<int64_t>(e.events.size()));
  Save(e);
}

void JobStore::Append(const std::string& job_id, v1::JobEvent event, absl::Time now) {
  Entry& e = At(job_id);
  Stamp(&event, job_id, e.events.size(), now);
  e.events.push_back(std::move(event));
  e.job.set_event_count(static_cast<int64_t>(e.events.size()));
  Save(e);
}

void JobStore::Update(const std::string& job_id, const std::function<void(v1::Job*)>& change) {
  Entry& e = At(job_id);
  change(&e.job);
  Save(e);
}

void JobStore::Save(Entry& e) {
  if (db_ == nullptr) return;
  const std::string& id = e.job.job_id();
  const absl::Status s =
      db_->Put(e.seq, e.job, std::span<const v1::JobEvent>(e.events).subspan(e.saved_events));
  if (!s.ok()) {
    // Once per failing spell, not once per event: the disk is the same for every job.
    if (unsaved_.empty()) {
      spdlog::error("job store: {}; job {} and later changes kept in memory, retried",
                    std::string(s.message()), id);
    }
    unsaved_.insert(id);
    return;
  }
  e.saved_events = e.events.size();
  if (unsaved_.erase(id) > 0 && unsaved_.empty()) {
    spdlog::info("job store {}: every job saved again", db_->path());
  }
}

void JobStore::RetryUnsaved() {
  const std::set<std::string> unsaved = unsaved_;
  for (const std::string& id : unsaved) Save(At(id));
}

std::vector<v1::JobEvent> JobStore::Events(const std::string& job_id, int64_t from) const {
  const std::vector<v1::JobEvent>& events = jobs_.at(job_id).events;
  return {events.begin() + from, events.end()};
}

std::vector<v1::Job> JobStore::List(const std::vector<v1::JobState>& states, int64_t before,
                                    int limit, int64_t* last, bool* more) const {
  std::vector<v1::Job> page;
  *more = false;
  *last = 0;
  const int64_t start = before > 0 ? std::min(before - 1, size()) : size();
  for (int64_t seq = start; seq >= 1; --seq) {
    const v1::Job& job = by_seq_[seq - 1]->job;
    if (!states.empty() && std::find(states.begin(), states.end(), job.state()) == states.end()) {
      continue;
    }
    if (static_cast<int>(page.size()) == limit) {
      *more = true;
      break;
    }
    page.push_back(job);
    *last = seq;
  }
  return page;
}

std::vector<std::string> JobStore::Unfinished() const {
  std::vector<std::string> ids;
  for (const Entry* e : by_seq_) {
    const v1::JobState s = e->job.state();
    if (s == v1::JOB_STATE_QUEUED || s == v1::JOB_STATE_PLANNING || s == v1::JOB_STATE_RUNNING) {
      ids.push_back(e->job.job_id());
    }
  }
  return ids;
}

}  // namespace dgptq::coordinator
