// The Coordinator's worker side: registration, leases and what ranks report on their
// control streams.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/coordinator.h"
#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace dgptq::coordinator {
namespace {

google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  return google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

absl::Duration FromProtoDuration(const google::protobuf::Duration& d) {
  return absl::Nanoseconds(google::protobuf::util::TimeUtil::DurationToNanoseconds(d));
}

}  // namespace

v1::RegisterWorkerResponse Coordinator::Register(const v1::RegisterWorkerRequest& req) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerEntry& w = workers_.Add(req.name(), req.capabilities(), absl::Now() + options_.lease_ttl);
  if (w.name.empty()) w.name = w.id;
  spdlog::info("worker {} ({}) registered: {} on {}", w.id, w.name,
               v1::DeviceKind_Name(w.caps.device_kind()), w.caps.host());
  v1::RegisterWorkerResponse resp;
  resp.set_worker_id(w.id);
  *resp.mutable_lease_ttl() = ToProtoDuration(options_.lease_ttl);
  *resp.mutable_heartbeat_interval() = ToProtoDuration(options_.heartbeat_interval);
  return resp;
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const v1::HeartbeatRequest& req) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerEntry* w = workers_.Find(req.worker_id());
  if (w == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("worker '", req.worker_id(), "' is not registered; register again"));
  }
  w->lease_expiry = absl::Now() + options_.lease_ttl;
  v1::HeartbeatResponse resp;
  *resp.mutable_lease_ttl() = ToProtoDuration(options_.lease_ttl);
  resp.set_draining(stopping_);
  return resp;
}

absl::StatusOr<std::shared_ptr<ControlOutbox>> Coordinator::Connect(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerEntry* w = workers_.Find(worker_id);
  if (w == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("worker '", worker_id, "' is not registered; register again"));
  }
  if (w->connected()) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker '", worker_id, "' already has an open control stream"));
  }
  if (stopping_) return absl::UnavailableError(kShuttingDown);
  w->outbox = std::make_shared<ControlOutbox>();
  w->lease_expiry = absl::Now() + options_.lease_ttl;
  WakeScheduler();
  spdlog::info("worker {} ({}) connected", w->id, w->name);
  return w->outbox;
}

void Coordinator::Disconnect(const std::string& worker_id, const ControlOutbox* outbox) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerEntry* w = workers_.Find(worker_id);
  if (w != nullptr && w->outbox.get() == outbox) LoseWorkerLocked(worker_id, "disconnected");
}

void Coordinator::OnControl(const std::string& worker_id, const v1::ControlRequest& msg) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerEntry* w = workers_.Find(worker_id);
  if (w == nullptr) return;  // lost meanwhile; its stream is closing
  switch (msg.kind_case()) {
    case v1::ControlRequest::kRendezvousOffer:
      OnOfferLocked(*w, msg.rendezvous_offer());
      break;
    case v1::ControlRequest::kEvent:
      OnEventLocked(*w, msg.event());
      break;
    case v1::ControlRequest::kResult:
      OnResultLocked(*w, msg.result());
      break;
    default:
      spdlog::warn("worker {} ({}): ignoring an unexpected control message (kind {})", w->id,
                   w->name, static_cast<int>(msg.kind_case()));
  }
}

int Coordinator::RankLocked(const WorkerEntry& w, const std::string& job_id, ActiveJob** job) {
  auto it = active_.find(job_id);
  if (it == active_.end() || w.job_id != job_id) return -1;
  const std::vector<std::string>& ranks = it->second.ranks;
  auto r = std::find(ranks.begin(), ranks.end(), w.id);
  if (r == ranks.end()) return -1;
  *job = &it->second;
  return static_cast<int>(r - ranks.begin());
}

void Coordinator::OnEventLocked(WorkerEntry& w, v1::JobEvent event) {
  const std::string job_id = event.job_id().empty() ? w.job_id : event.job_id();
  ActiveJob* job = nullptr;
  const int rank = RankLocked(w, job_id, &job);
  if (rank < 0) return;  // a late event of a job that ended: its log is closed
  const bool fatal = event.has_error() && event.error().fatal();
  const std::string fatal_message = fatal ? event.error().message() : "";
  if (event.has_progress()) {
    const v1::Progress& p = event.progress();
    metrics_->RankPhase(p.phase(), FromProtoDuration(p.elapsed()));
    if (p.phase() == v1::PHASE_WRITE && p.done() == p.total()) {
      job->layers_done[rank] = std::max(job->layers_done[rank], p.layer() + 1);
      const int done = *std::min_element(job->layers_done.begin(), job->layers_done.end());
      store_.Update(job_id, [&](v1::Job* j) { j->set_layers_done(done); });
    }
  }
  AppendLocked(job_id, std::move(event));
  if (fatal) FinishLocked(job_id, v1::JOB_STATE_FAILED, RankFailure(rank, w.name, fatal_message));
}

void Coordinator::OnResultLocked(WorkerEntry& w, const v1::WorkerResult& result) {
  const std::string job_id = result.job_id().empty() ? w.job_id : result.job_id();
  ActiveJob* job = nullptr;
  const int rank = RankLocked(w, job_id, &job);
  if (w.job_id == job_id) {
    w.job_id.clear();  // its rank is over: the worker is free for the next job
    WakeScheduler();
  }
  if (rank < 0) return;  // the job already ended (a stopped rank reporting back)
  if (result.code() != 0) {
    const std::string reason = RankFailure(rank, w.name, result.message());
    const auto code = static_cast<absl::StatusCode>(result.code());
    // A communicator error is most often the symptom of a peer that died: hold it briefly,
    // so that the lost worker, reported meanwhile, names the job's reason and decides.
    if (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
        code == absl::StatusCode::kAborted) {
      if (job->held_failure.empty()) {
        job->held_failure = reason;
        job->failure_deadline = absl::Now() + kHoldRankFailure;
        WakeScheduler();
      }
      return;
    }
    FinishLocked(job_id, v1::JOB_STATE_FAILED, reason);
    return;
  }
  job->finished[rank] = true;
  if (std::all_of(job->finished.begin(), job->finished.end(), [](bool b) { return b; })) {
    FinishLocked(job_id, v1::JOB_STATE_SUCCEEDED,
                 absl::StrCat("all ", job->finished.size(), " ranks finished"));
  }
}

void Coordinator::LoseWorkerLocked(const std::string& worker_id, const std::string& what) {
  WorkerEntry* w = workers_.Find(worker_id);
  if (w == nullptr) return;
  const std::string name = w->name;
  const std::string job_id = w->job_id;
  // Only a rank of the job's current run decides its fate: a worker still winding down a
  // run the job was re-queued from is just forgotten.
  ActiveJob* job = nullptr;
  const bool rank_of_job = !job_id.empty() && RankLocked(*w, job_id, &job) >= 0;
  spdlog::warn("worker {} ({}) {}", worker_id, name, what);
  workers_.Remove(worker_id);
  WakeScheduler();
  if (rank_of_job) FailOrRetryLocked(job_id, absl::StrCat("worker ", name, " ", what));
}

void Coordinator::FailOrRetryLocked(const std::string& job_id, const std::string& reason) {
  auto it = active_.find(job_id);
  if (it == active_.end()) return;
  const int attempt = it->second.attempt;
  if (attempt < options_.max_job_retries) {
    RequeueLocked(job_id, reason);
  } else {
    FinishLocked(job_id, v1::JOB_STATE_FAILED,
                 attempt == 0 ? reason : absl::StrCat(reason, " (after ", attempt, " retries)"));
  }
}

void Coordinator::ExpireHeldFailuresLocked(absl::Time now) {
  std::vector<std::pair<std::string, std::string>> due;
  for (const auto& [id, job] : active_) {
    if (!job.held_failure.empty() && job.failure_deadline <= now) due.emplace_back(id, job.held_failure);
  }
  for (const auto& [id, reason] : due) FailOrRetryLocked(id, reason);
}

void Coordinator::SampleWorkersLocked(absl::Time now) {
  std::vector<WorkerSample> samples;
  for (const WorkerEntry* w : workers_.All()) {
    // A lease is renewed for lease_ttl by registration, the stream's hello and heartbeats.
    samples.push_back({w->name, !w->idle(), now - (w->lease_expiry - options_.lease_ttl)});
  }
  metrics_->Workers(samples);
}

void Coordinator::ReaperLoop() {
  const absl::Duration period =
      std::clamp(options_.lease_ttl / 10, absl::Milliseconds(10), absl::Seconds(1));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    for (const std::string& id : workers_.Expired(absl::Now())) {
      LoseWorkerLocked(id, "lost its lease");
    }
    reaper_cv_.wait_for(lock, absl::ToChronoMicroseconds(period), [&] { return stopping_; });
  }
}

}  // namespace dgptq::coordinator
