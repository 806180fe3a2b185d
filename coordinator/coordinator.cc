// The Coordinator's client API and the transitions every part of it shares.
#include "coordinator/coordinator.h"

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "coordinator/job_validation.h"
#include "spdlog/spdlog.h"

namespace dgptq::coordinator {
namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;

bool IsTerminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

// Page tokens: "v1:<store tag>:<sequence number of the previous page's last job>", web-safe
// base64 so clients treat them as opaque. A durable store keeps its tag and sequence numbers,
// so a token stays valid across a restart.
std::string EncodePageToken(const std::string& tag, int64_t last_seq) {
  return absl::WebSafeBase64Escape(absl::StrCat("v1:", tag, ":", last_seq));
}

absl::StatusOr<int64_t> DecodePageToken(const std::string& token, const std::string& tag,
                                        int64_t max_seq) {
  std::string raw;
  int64_t seq = 0;
  if (absl::WebSafeBase64Unescape(token, &raw)) {
    std::vector<std::string> parts = absl::StrSplit(raw, ':');
    if (parts.size() == 3 && parts[0] == "v1" && parts[1] == tag &&
        absl::SimpleAtoi(parts[2], &seq) && seq >= 1 && seq <= max_seq) {
      return seq;
    }
  }
  return absl::InvalidArgumentError(
      "ListJobsRequest.page_token is not a token this coordinator issued; start again with an "
      "empty page_token");
}

// Why a job that was `was` when the coordinator stopped cannot be queued again; "" if it can.
std::string NotResumable(v1::JobState was, const absl::StatusOr<ResolvedJobSpec>& spec) {
  if (!spec.ok()) {  // a spec this release no longer accepts
    return absl::StrCat("cannot resume after a coordinator restart: ", spec.status().message());
  }
  // Its output was empty at submission: a model there now is most likely its own, complete
  // just before the old process learned so. A re-run would be refused; say what happened.
  if (was == v1::JOB_STATE_RUNNING && !spec->overwrite && HoldsModel(spec->out_dir)) {
    return absl::StrCat("coordinator restarted while the job was RUNNING, and its output_path '",
                        spec->out_dir,
                        "' now holds a model: the job most likely finished just before the "
                        "restart; not run again (check the output, or resubmit with overwrite)");
  }
  return "";
}

}  // namespace

std::string RankFailure(int rank, const std::string& worker_name, const std::string& message) {
  return absl::StrFormat("rank %d (worker %s): %s", rank, worker_name, message);
}

Coordinator::Coordinator(CoordinatorOptions options, CoordinatorMetrics* metrics, JobStore store)
    : options_(std::move(options)),
      own_metrics_(metrics == nullptr ? CoordinatorMetrics::Create("") : nullptr),
      metrics_(metrics == nullptr ? own_metrics_.get() : metrics),
      tag_(InstanceTag()),
      store_(std::move(store)),
      workers_(tag_) {
  std::lock_guard<std::mutex> lock(mu_);
  RestoreLocked();
}

Coordinator::~Coordinator() { Stop(); }

void Coordinator::Start() {
  scheduler_ = std::thread([this] { SchedulerLoop(); });
  reaper_ = std::thread([this] { ReaperLoop(); });
}

void Coordinator::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (WorkerEntry* w : workers_.All()) {
      if (w->outbox) w->outbox->Close();
    }
  }
  scheduler_cv_.notify_all();
  events_cv_.notify_all();
  reaper_cv_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  if (reaper_.joinable()) reaper_.join();
}

void Coordinator::RestoreLocked() {
  const absl::Time now = absl::Now();
  int requeued = 0;
  for (const std::string& id : store_.Unfinished()) {
    const v1::JobState was = store_.Get(id)->state();
    absl::StatusOr<ResolvedJobSpec> spec = ResolveJobSpec(store_.Get(id)->spec());
    if (const std::string why = NotResumable(was, spec); !why.empty()) {
      store_.Transition(id, v1::JOB_STATE_FAILED, why, now);
      continue;
    }
    if (was != v1::JOB_STATE_QUEUED) {
      // Its workers went with the old process. The next run resumes from the layers its
      // partial output holds (as RequeueLocked's), so layers_done stays.
      store_.Update(id, [](v1::Job* j) { j->clear_worker_ids(); });
      store_.Transition(
          id, v1::JOB_STATE_QUEUED,
          absl::StrCat("coordinator restarted while the job was ",
                       absl::StripPrefix(v1::JobState_Name(was), "JOB_STATE_"), "; re-queued"),
          now);
      ++requeued;
    }
    metrics_->JobTransition(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED, absl::ZeroDuration());
    active_[id].spec = *std::move(spec);
    active_[id].attempt = store_.Get(id)->retries();  // the retry budget is not reset
    queue_.push_back(id);
  }
  if (store_.size() > 0) {
    spdlog::info("job store {}: {} jobs, {} queued ({} of them re-queued)", store_.path(),
                 store_.size(), queue_.size(), requeued);
  }
}

absl::StatusOr<Coordinator::Submitted> Coordinator::Submit(const v1::JobSpec& spec,
                                                           const std::string& request_id) {
  auto existing = [&]() -> const v1::Job* {
    return request_id.empty() ? nullptr : store_.GetByRequestId(request_id);
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (const v1::Job* job = existing()) return Submitted{*job, false};
  }
  // Reads config.json and the safetensors headers: outside the lock.
  absl::StatusOr<ValidatedJob> valid = ValidateJob(spec, options_.allowed_roots);
  if (!valid.ok()) return valid.status();

  std::lock_guard<std::mutex> lock(mu_);
  if (const v1::Job* job = existing()) return Submitted{*job, false};
  if (stopping_) return absl::UnavailableError(kShuttingDown);
  if (static_cast<int>(queue_.size()) >= options_.max_queued_jobs) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the job queue is full (%d queued jobs, --max-queued-jobs %d); retry later",
                        queue_.size(), options_.max_queued_jobs));
  }
  v1::Job job;
  job.set_job_id(absl::StrFormat("j-%s-%d", store_.tag(), store_.size() + 1));
  *job.mutable_spec() = spec;
  job.set_request_id(request_id);
  ActiveJob active;
  active.spec = std::move(valid->spec);
  const std::string id = job.job_id();
  absl::StatusOr<const v1::Job*> stored =
      store_.Create(std::move(job), QueueReasonLocked(active), absl::Now());
  if (!stored.ok()) {
    spdlog::error("job {}: not submitted: {}", id, std::string(stored.status().message()));
    return stored.status();
  }
  spdlog::info("job {}: submitted ({} workers, model {})", id, active.spec.num_workers,
               active.spec.model_dir);
  metrics_->JobTransition(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED, absl::ZeroDuration());
  active_.emplace(id, std::move(active));
  queue_.push_back(id);
  events_cv_.notify_all();
  WakeScheduler();
  return Submitted{**stored, true};
}

absl::StatusOr<v1::Job> Coordinator::GetJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  const v1::Job* job = store_.Get(job_id);
  if (job == nullptr) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
  return *job;
}

absl::StatusOr<v1::ListJobsResponse> Coordinator::ListJobs(const v1::ListJobsRequest& req) {
  if (req.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ListJobsRequest.page_size must not be negative, got ", req.page_size()));
  }
  const int limit =
      req.page_size() == 0 ? kDefaultPageSize : std::min(req.page_size(), kMaxPageSize);
  std::vector<v1::JobState> states;
  for (int s : req.states()) {
    if (s != v1::JOB_STATE_UNSPECIFIED) states.push_back(static_cast<v1::JobState>(s));
  }
  std::lock_guard<std::mutex> lock(mu_);
  int64_t before = 0;
  if (!req.page_token().empty()) {
    absl::StatusOr<int64_t> seq = DecodePageToken(req.page_token(), store_.tag(), store_.size());
    if (!seq.ok()) return seq.status();
    before = *seq;
  }
  v1::ListJobsResponse resp;
  int64_t last = 0;
  bool more = false;
  for (v1::Job& job : store_.List(states, before, limit, &last, &more)) {
    *resp.add_jobs() = std::move(job);
  }
  if (more) resp.set_next_page_token(EncodePageToken(store_.tag(), last));
  return resp;
}

absl::StatusOr<Coordinator::EventBatch> Coordinator::WaitEvents(const std::string& job_id,
                                                                int64_t from,
                                                                absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const v1::Job* job = store_.Get(job_id);
  if (job == nullptr) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
  if (from < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("WatchJobRequest.from_index must not be negative, got ", from));
  }
  if (from > job->event_count()) {
    return absl::OutOfRangeError(absl::StrCat("WatchJobRequest.from_index ", from,
                                              " is beyond the end of job ", job_id, "'s log (",
                                              job->event_count(), " events)"));
  }
  events_cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout), [&] {
    return stopping_ || job->event_count() > from || IsTerminal(job->state());
  });
  if (stopping_) return absl::UnavailableError(kShuttingDown);
  EventBatch batch;
  batch.events = store_.Events(job_id, from);
  batch.done = IsTerminal(job->state());
  return batch;
}

absl::StatusOr<v1::Job> Coordinator::Cancel(const std::string& job_id, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  const v1::Job* job = store_.Get(job_id);
  if (job == nullptr) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
  if (!IsTerminal(job->state())) {
    FinishLocked(job_id, v1::JOB_STATE_CANCELLED, reason.empty() ? "cancelled by user" : reason);
  }
  return *job;
}

void Coordinator::FinishLocked(const std::string& job_id, v1::JobState state,
                               const std::string& reason) {
  auto it = active_.find(job_id);
  if (it == active_.end()) return;
  ActiveJob& job = it->second;
  TransitionLocked(job_id, state, reason);
  queue_.erase(std::remove(queue_.begin(), queue_.end(), job_id), queue_.end());
  // A cancelled job will not run again: its partial output goes.
  StopRanksLocked(job_id, job, reason, state == v1::JOB_STATE_CANCELLED);
  active_.erase(it);
  WakeScheduler();
}

void Coordinator::StopRanksLocked(const std::string& job_id, const ActiveJob& job,
                                  const std::string& reason, bool discard_output) {
  for (size_t r = 0; r < job.ranks.size(); ++r) {
    WorkerEntry* w = workers_.Find(job.ranks[r]);
    if (w == nullptr || w->job_id != job_id || job.finished[r]) continue;
    v1::ControlResponse stop;
    stop.mutable_stop_job()->set_job_id(job_id);
    stop.mutable_stop_job()->set_reason(reason);
    stop.mutable_stop_job()->set_discard_output(discard_output);
    Send(*w, std::move(stop));
    // Without an Assignment the worker runs nothing and sends no result: free it now.
    if (!job.assigned) w->job_id.clear();
  }
}

void Coordinator::RequeueLocked(const std::string& job_id, const std::string& reason) {
  auto it = active_.find(job_id);
  if (it == active_.end()) return;
  ActiveJob& job = it->second;
  if (job.ranks.empty()) return;  // already queued
  StopRanksLocked(job_id, job, reason, /*discard_output=*/false);
  ++job.attempt;
  const int done = store_.Get(job_id)->layers_done();
  job.requeued_because =
      absl::StrFormat("%s; re-queued to resume after layer %d (retry %d of %d)", reason,
                      done - 1, job.attempt, options_.max_job_retries);
  TransitionLocked(job_id, v1::JOB_STATE_QUEUED, job.requeued_because);
  store_.Update(job_id, [&job](v1::Job* j) {
    j->clear_worker_ids();
    j->set_retries(job.attempt);
  });
  job.ranks.clear();
  job.finished.clear();
  job.layers_done.clear();
  job.plan.reset();
  job.assigned = false;
  job.rendezvous_deadline = absl::InfiniteFuture();
  job.held_failure.clear();
  job.failure_deadline = absl::InfiniteFuture();
  queue_.push_front(job_id);
  WakeScheduler();
}

void Coordinator::TransitionLocked(const std::string& job_id, v1::JobState to,
                                   const std::string& reason) {
  const v1::Job& job = *store_.Get(job_id);
  const v1::JobState from = job.state();
  const absl::Time now = absl::Now();
  store_.Transition(job_id, to, reason, now);
  metrics_->JobTransition(from, to, now - FromTimestamp(job.create_time()));
  events_cv_.notify_all();
  auto log = to == v1::JOB_STATE_FAILED ? spdlog::level::warn : spdlog::level::info;
  spdlog::log(log, "job {}: {} -> {}: {}", job_id, v1::JobState_Name(from), v1::JobState_Name(to),
              reason);
}

void Coordinator::AppendLocked(const std::string& job_id, v1::JobEvent event) {
  store_.Append(job_id, std::move(event), absl::Now());
  events_cv_.notify_all();
}

void Coordinator::Send(WorkerEntry& w, v1::ControlResponse msg) {
  if (w.outbox == nullptr || !w.outbox->Push(std::move(msg))) {
    spdlog::warn("worker {} ({}): control stream closed; message dropped", w.id, w.name);
  }
}

void Coordinator::WakeScheduler() {
  dirty_ = true;
  scheduler_cv_.notify_all();
}

}  // namespace dgptq::coordinator
