#include "coordinator/job_store.h"

#include <algorithm>
#include <utility>

#include "google/protobuf/util/time_util.h"

namespace dgptq::coordinator {

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

absl::Time FromTimestamp(const google::protobuf::Timestamp& t) {
  return absl::FromUnixNanos(google::protobuf::util::TimeUtil::TimestampToNanoseconds(t));
}

const v1::Job& JobStore::Create(v1::Job job, const std::string& reason, absl::Time now) {
  const std::string id = job.job_id();
  Entry& e = jobs_[id];
  e.seq = size() + 1;
  job.set_state(v1::JOB_STATE_QUEUED);
  job.set_reason(reason);
  *job.mutable_create_time() = ToTimestamp(now);
  *job.mutable_update_time() = ToTimestamp(now);
  job.set_event_count(0);
  if (!job.request_id().empty()) by_request_id_[job.request_id()] = id;
  e.job = std::move(job);
  by_seq_.push_back(&e);
  v1::JobEvent first;
  first.mutable_state_change()->set_from_state(v1::JOB_STATE_UNSPECIFIED);
  first.mutable_state_change()->set_to_state(v1::JOB_STATE_QUEUED);
  first.mutable_state_change()->set_reason(reason);
  Append(id, std::move(first), now);
  return e.job;
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
  v1::Job& job = At(job_id).job;
  v1::JobEvent e;
  e.mutable_state_change()->set_from_state(job.state());
  e.mutable_state_change()->set_to_state(to);
  e.mutable_state_change()->set_reason(reason);
  job.set_state(to);
  job.set_reason(reason);
  *job.mutable_update_time() = ToTimestamp(now);
  Append(job_id, std::move(e), now);
}

void JobStore::Append(const std::string& job_id, v1::JobEvent event, absl::Time now) {
  Entry& e = At(job_id);
  event.set_index(static_cast<int64_t>(e.events.size()));
  event.set_job_id(job_id);
  *event.mutable_time() = ToTimestamp(now);
  e.events.push_back(std::move(event));
  e.job.set_event_count(static_cast<int64_t>(e.events.size()));
}

void JobStore::Update(const std::string& job_id, const std::function<void(v1::Job*)>& change) {
  change(&At(job_id).job);
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

}  // namespace dgptq::coordinator
