// The Coordinator's scheduler thread: queued jobs onto idle workers, planning, rendezvous.
#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "coordinator/coordinator.h"
#include "coordinator/job_validation.h"
#include "coordinator/plan_proto.h"
#include "spdlog/spdlog.h"

namespace dgptq::coordinator {

void Coordinator::SchedulerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    dirty_ = false;
    for (const std::string& id : ReserveWorkersLocked()) {
      const ResolvedJobSpec spec = active_.at(id).spec;
      const int world = static_cast<int>(active_.at(id).ranks.size());
      const int attempt = active_.at(id).attempt;
      // Reads config.json and the safetensors headers: outside the lock. The job may be
      // cancelled meanwhile; StartRendezvousLocked checks.
      lock.unlock();
      const absl::Time t0 = absl::Now();
      absl::StatusOr<Plan> plan =
          PlanCheckpoint(spec.model_dir, world, PlanSamples(spec));
      metrics_->Planned(absl::Now() - t0);
      lock.lock();
      StartRendezvousLocked(id, attempt, std::move(plan));
    }
    const absl::Time now = absl::Now();
    ExpireRendezvousLocked(now);
    ExpireHeldFailuresLocked(now);
    store_.RetryUnsaved();  // after a failed write (a full disk): at least once a second
    // Every change of a worker's state wakes this loop, and it runs at least once a second:
    // the worker gauges and heartbeat ages follow within that.
    SampleWorkersLocked(now);
    absl::Time wake = now + absl::Seconds(1);
    for (const auto& [id, job] : active_) {
      wake = std::min({wake, job.rendezvous_deadline, job.failure_deadline});
    }
    const absl::Duration wait = std::max(wake - now, absl::Milliseconds(1));
    scheduler_cv_.wait_for(lock, absl::ToChronoMicroseconds(wait),
                           [&] { return stopping_ || dirty_; });
  }
}

std::string Coordinator::QueueReasonLocked(const ActiveJob& job) {
  const std::string waiting = absl::StrFormat("waiting for %d workers (%d idle)", WorldLocked(job),
                                              workers_.Idle(job.spec.device_kind).size());
  return job.requeued_because.empty() ? waiting
                                      : absl::StrCat(job.requeued_because, "; ", waiting);
}

// A first run waits for the workers the job asks for; a retry after a lost worker goes on
// over those there are (at least one), as it resumes where the last run stopped.
int Coordinator::WorldLocked(const ActiveJob& job) {
  if (job.attempt == 0) return job.spec.num_workers;
  int registered = 0;
  for (const WorkerEntry* w : workers_.All()) {
    const bool kind_ok = job.spec.device_kind == v1::DEVICE_KIND_UNSPECIFIED ||
                         w->caps.device_kind() == job.spec.device_kind;
    registered += w->connected() && kind_ok ? 1 : 0;
  }
  return std::clamp(registered, 1, job.spec.num_workers);
}

std::vector<std::string> Coordinator::ReserveWorkersLocked() {
  std::vector<std::string> started;
  for (auto it = queue_.begin(); it != queue_.end();) {
    const std::string id = *it;
    ActiveJob& job = active_.at(id);
    std::vector<WorkerEntry*> idle = workers_.Idle(job.spec.device_kind);
    if (static_cast<int>(idle.size()) < WorldLocked(job)) {
      const std::string reason = QueueReasonLocked(job);
      if (store_.Get(id)->reason() != reason) {
        store_.Update(id, [&](v1::Job* j) { j->set_reason(reason); });
      }
      ++it;
      continue;
    }
    idle.resize(WorldLocked(job));
    job.backend = ChooseBackendLocked(idle);
    std::vector<std::string> names;
    for (WorkerEntry* w : idle) {
      w->job_id = id;
      job.ranks.push_back(w->id);
      names.push_back(w->name);
    }
    job.finished.assign(job.ranks.size(), false);
    job.layers_done.assign(job.ranks.size(), 0);
    store_.Update(id, [&](v1::Job* j) {
      for (const std::string& w : job.ranks) j->add_worker_ids(w);
    });
    TransitionLocked(id, v1::JOB_STATE_PLANNING,
                     absl::StrCat("planning on workers ", absl::StrJoin(names, ", "), " (",
                                  job.backend, " communicator)"));
    started.push_back(id);
    it = queue_.erase(it);
  }
  return started;
}

std::string Coordinator::ChooseBackendLocked(const std::vector<WorkerEntry*>& ranks) const {
  if (options_.comm_backend != "auto") return options_.comm_backend;
  std::set<std::string> hosts;
  for (const WorkerEntry* w : ranks) {
    if (w->caps.device_kind() != v1::DEVICE_KIND_CUDA) return "host";
    hosts.insert(w->caps.host());
  }
  // NCCL refuses two ranks on one GPU; workers sharing a host may share one.
  return hosts.size() == ranks.size() ? "nccl" : "host";
}

void Coordinator::StartRendezvousLocked(const std::string& job_id, int attempt,
                                        absl::StatusOr<Plan> plan) {
  auto it = active_.find(job_id);
  if (it == active_.end()) return;  // cancelled or failed while planning
  ActiveJob& job = it->second;
  // Re-queued while planning (a worker was lost): that plan is for ranks it no longer has.
  if (job.attempt != attempt || job.ranks.empty()) return;
  if (!plan.ok()) {
    FinishLocked(job_id, v1::JOB_STATE_FAILED,
                 absl::StrCat("planning failed: ", plan.status().message()));
    return;
  }
  job.plan = *std::move(plan);
  const int num_layers = static_cast<int>(job.plan->layers.size());
  store_.Update(job_id, [&](v1::Job* j) { j->set_num_layers(num_layers); });
  WorkerEntry* rank0 = workers_.Find(job.ranks[0]);
  v1::ControlResponse msg;
  v1::CreateRendezvous* cr = msg.mutable_create_rendezvous();
  cr->set_job_id(job_id);
  cr->set_backend(job.backend);
  cr->set_world_size(static_cast<int>(job.ranks.size()));
  Send(*rank0, std::move(msg));
  job.rendezvous_deadline = absl::Now() + options_.rendezvous_timeout;
}

void Coordinator::ExpireRendezvousLocked(absl::Time now) {
  std::vector<std::string> expired;
  for (const auto& [id, job] : active_) {
    if (!job.assigned && job.rendezvous_deadline < now) expired.push_back(id);
  }
  for (const std::string& id : expired) {
    const ActiveJob& job = active_.at(id);
    const WorkerEntry* rank0 = workers_.Find(job.ranks[0]);
    FinishLocked(id, v1::JOB_STATE_FAILED,
                 absl::StrFormat("rendezvous timed out: rank 0 (worker %s) sent no %s "
                                 "rendezvous offer within %s",
                                 rank0 ? rank0->name : job.ranks[0], job.backend,
                                 absl::FormatDuration(options_.rendezvous_timeout)));
  }
}

void Coordinator::OnOfferLocked(WorkerEntry& w, const v1::RendezvousOffer& offer) {
  auto it = active_.find(offer.job_id());
  if (it == active_.end() || it->second.ranks.empty() || it->second.ranks[0] != w.id ||
      it->second.assigned || !it->second.plan) {
    spdlog::warn("worker {} ({}): ignoring a rendezvous offer for job {} it was not asked for",
                 w.id, w.name, offer.job_id());
    return;
  }
  ActiveJob& job = it->second;
  const v1::Plan plan = ToProto(*job.plan);
  const int world = static_cast<int>(job.ranks.size());
  const v1::Job& stored = *store_.Get(offer.job_id());
  for (int r = 0; r < world; ++r) {
    v1::ControlResponse msg;
    v1::Assignment* a = msg.mutable_assignment();
    a->set_job_id(offer.job_id());
    a->set_rank(r);
    a->set_world_size(world);
    *a->mutable_spec() = stored.spec();
    *a->mutable_rendezvous() = offer.rendezvous();
    *a->mutable_plan() = plan;
    *a->mutable_shard() = ToProto(job.plan->shards[r]);
    // Every rank is registered: losing one fails the job at once.
    Send(*workers_.Find(job.ranks[r]), std::move(msg));
  }
  job.assigned = true;
  job.rendezvous_deadline = absl::InfiniteFuture();
  const v1::Rendezvous& rv = offer.rendezvous();
  TransitionLocked(offer.job_id(), v1::JOB_STATE_RUNNING,
                   absl::StrCat("assigned ", world, " ranks; ", rv.backend(), " rendezvous",
                                rv.host_address().empty() ? "" : " at ", rv.host_address()));
}

}  // namespace dgptq::coordinator
