#include "worker/daemon/worker_daemon.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/file_stamp.h"
#include "common/daemon_util.h"
#include "common/grpc_options.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "dgptq/v1/coordinator.grpc.pb.h"
#include "dgptq/v1/worker.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "proto/job_spec.h"
#include "spdlog/spdlog.h"
#include "worker/comm/host_comm.h"
#include "worker/daemon/worker_metrics.h"
#ifdef DGPTQ_HAVE_NCCL
#include "worker/comm/nccl_comm.h"
#endif
#include "worker/output/hf_quant_config.h"
#include "worker/quant/pipeline.h"

#ifndef DGPTQ_VERSION
#define DGPTQ_VERSION "0.0.0"
#endif

namespace dgptq::worker {
namespace {

namespace v1 = dgptq::v1;
using Stream = grpc::ClientReaderWriter<v1::ControlRequest, v1::ControlResponse>;

google::protobuf::Duration ToProto(absl::Duration d) {
  google::protobuf::Duration p;
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  p.set_seconds(ns / 1000000000);
  p.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return p;
}

absl::Duration FromProto(const google::protobuf::Duration& p) {
  return absl::Seconds(p.seconds()) + absl::Nanoseconds(p.nanos());
}

v1::Phase PhaseOf(const std::string& phase) {
  if (phase == "load") return v1::PHASE_LOAD;
  if (phase == "forward" || phase == "propagate") return v1::PHASE_FORWARD;
  if (phase == "reduce") return v1::PHASE_REDUCE;
  if (phase == "quantize") return v1::PHASE_QUANTIZE;
  if (phase == "broadcast") return v1::PHASE_BROADCAST;
  if (phase == "write") return v1::PHASE_WRITE;
  if (phase == "hessian") return v1::PHASE_HESSIAN;
  return v1::PHASE_UNSPECIFIED;
}

// "model.layers.3.self_attn.q_proj" -> "self_attn.q_proj" (the name within layer 3).
std::string ModuleInLayer(const std::string& full, int layer) {
  const std::string key = absl::StrFormat("layers.%d.", layer);
  const size_t at = full.find(key);
  return at == std::string::npos ? full : full.substr(at + key.size());
}

// A WorkerResult for `job_id` at `rank` carrying `status`, ready to send.
v1::ControlRequest ResultMessage(const std::string& job_id, int rank, const absl::Status& status) {
  v1::ControlRequest req;
  v1::WorkerResult* r = req.mutable_result();
  r->set_job_id(job_id);
  r->set_rank(rank);
  r->set_code(static_cast<int>(status.code()));
  r->set_message(std::string(status.message()));
  return req;
}

std::string DefaultName() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "worker");
  return absl::StrFormat("%s:%d", host, ::getpid());
}

}  // namespace

struct WorkerDaemon::Impl {
  explicit Impl(WorkerDaemonOptions o) : opts(std::move(o)) {
    if (opts.name.empty()) opts.name = DefaultName();
  }

  absl::Status Run();
  absl::Status Serve();
  absl::Status Session();
  void Heartbeats(v1::Coordinator::Stub* stub, grpc::ClientContext* stream_ctx,
                  absl::Duration interval);
  void Handle(const v1::ControlResponse& msg);
  void Offer(const v1::CreateRendezvous& req);
  void StartJob(const v1::Assignment& a);
  void RunJob(v1::Assignment a);
  absl::Status RunRank(const v1::Assignment& a, Communicator** comm_out,
                       std::unique_ptr<Communicator>* comm);
  void SendProgress(const v1::Assignment& a, const ProgressEvent& e);
  void Send(const v1::ControlRequest& req);
  void StopJob(const std::string& reason);
  void JoinJob();
  bool Sleep(absl::Duration d);  // false when shutting down

  WorkerDaemonOptions opts;
  GrpcChannelCredentials credentials;  // to the coordinator, loaded once by Run()
  std::string worker_id;
  std::atomic<bool> stopping{false};
  std::mutex stop_mu;
  std::condition_variable stop_cv;

  // The current control stream; writes are serialized by stream_mu.
  std::mutex stream_mu;
  Stream* stream = nullptr;
  grpc::ClientContext* stream_ctx = nullptr;

  // Host-transport listeners bound for a CreateRendezvous, by job id; NCCL ids likewise.
  std::mutex rdv_mu;
  std::map<std::string, std::unique_ptr<HostListener>> listeners;

  // The job this worker runs, if any.
  std::mutex job_mu;
  std::thread job_thread;
  std::string job_id;  // empty when idle
  int job_rank = 0, job_world = 0, last_layer_done = -1;
  std::atomic<bool> job_cancel{false};
  std::atomic<bool> job_discard{false};  // the stopped job's partial output goes too

  std::unique_ptr<WorkerMetrics> metrics;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::Worker::Service> service;
  int metrics_port = 0;
};

namespace {

class WorkerService final : public v1::Worker::Service {
 public:
  explicit WorkerService(WorkerDaemon::Impl* d) : d_(d) {}
  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetWorkerStatusRequest*,
                         v1::WorkerStatus* out) override {
    out->set_name(d_->opts.name);
    out->set_coordinator(d_->opts.coordinator);
    out->set_draining(d_->stopping);
    {
      std::lock_guard<std::mutex> lock(d_->stream_mu);
      out->set_connected(d_->stream != nullptr);
    }
    std::lock_guard<std::mutex> lock(d_->job_mu);
    out->set_worker_id(d_->worker_id);
    out->set_job_id(d_->job_id);
    out->set_rank(d_->job_rank);
    out->set_world_size(d_->job_world);
    out->set_last_layer_done(d_->last_layer_done);
    return grpc::Status::OK;
  }

 private:
  WorkerDaemon::Impl* d_;
};

}  // namespace

// The gRPC server (Worker, health, reflection) and the metrics exposer.
absl::Status WorkerDaemon::Impl::Serve() {
  if (!opts.metrics_listen.empty()) {
    DGPTQ_ASSIGN_OR_RETURN(metrics, WorkerMetrics::Start(opts.metrics_listen, DGPTQ_VERSION));
    metrics_port = metrics->port();
    DGPTQ_RETURN_IF_ERROR(WritePortFile(opts.metrics_port_file, metrics_port));
  }
  if (opts.listen.empty()) return absl::OkStatus();
  service = std::make_unique<WorkerService>(this);
  int port = 0;
  DGPTQ_ASSIGN_OR_RETURN(
      server,
      StartGrpcServer(opts.listen, {{v1::Worker::service_full_name(), service.get()}}, &port));
  spdlog::info("worker {}: gRPC (Worker, health, reflection) on port {}, metrics on port {}",
               opts.name, port, metrics_port);
  return WritePortFile(opts.port_file, port);
}

WorkerDaemon::WorkerDaemon(WorkerDaemonOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
WorkerDaemon::~WorkerDaemon() {
  Shutdown();
  impl_->JoinJob();
}

absl::Status WorkerDaemon::Run() { return impl_->Run(); }

void WorkerDaemon::Shutdown() {
  impl_->stopping = true;
  if (impl_->server) SetGrpcServing(*impl_->server, false);
  impl_->StopJob("worker shutting down");
  {
    std::lock_guard<std::mutex> lock(impl_->stream_mu);
    if (impl_->stream_ctx) impl_->stream_ctx->TryCancel();
  }
  impl_->stop_cv.notify_all();
}

bool WorkerDaemon::Impl::Sleep(absl::Duration d) {
  std::unique_lock<std::mutex> lock(stop_mu);
  stop_cv.wait_for(lock, absl::ToChronoMilliseconds(d), [&] { return stopping.load(); });
  return !stopping;
}

absl::Status WorkerDaemon::Impl::Run() {
  if (opts.coordinator.empty()) return absl::InvalidArgumentError("--coordinator is required");
  if (opts.cpu_threads < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  if (opts.device == kernels::DeviceKind::kCuda && !kernels::CudaAvailable()) {
    return absl::FailedPreconditionError("--device cuda but no usable CUDA device");
  }
  std::string token;
  if (!opts.token_file.empty()) {
    DGPTQ_ASSIGN_OR_RETURN(token, ReadBearerTokenFile(opts.token_file));
  }
  DGPTQ_ASSIGN_OR_RETURN(credentials, LoadChannelCredentials(opts.coordinator_tls, token));
  DGPTQ_RETURN_IF_ERROR(Serve());
  absl::Duration backoff = absl::Milliseconds(200);
  while (!stopping) {
    const absl::Status s = Session();
    if (stopping) break;
    spdlog::warn("worker {}: session with {} ended: {}; reconnecting in {}", opts.name,
                 opts.coordinator, s.ToString(), absl::FormatDuration(backoff));
    StopJob("lost the coordinator");
    JoinJob();
    if (!Sleep(backoff)) break;
    backoff = std::min(backoff * 2, opts.max_backoff);
    if (s.ok()) backoff = absl::Milliseconds(200);
  }
  JoinJob();
  if (server) server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return absl::OkStatus();
}

absl::Status WorkerDaemon::Impl::Session() {
  auto stub = v1::Coordinator::NewStub(MakeGrpcChannel(opts.coordinator, credentials));

  v1::RegisterWorkerRequest reg;
  reg.set_name(opts.name);
  v1::WorkerCapabilities* cap = reg.mutable_capabilities();
  cap->set_device_kind(opts.device == kernels::DeviceKind::kCuda ? v1::DEVICE_KIND_CUDA
                                                                 : v1::DEVICE_KIND_CPU);
  cap->set_host(opts.host);
  cap->set_cpu_cores(opts.cpu_threads > 0 ? opts.cpu_threads
                                          : static_cast<int>(std::thread::hardware_concurrency()));
  cap->set_version(DGPTQ_VERSION);
  cap->set_metrics_port(metrics_port);
  if (opts.device == kernels::DeviceKind::kCuda) {
    if (auto b = kernels::MakeCudaBackend(opts.gpu); b.ok()) cap->set_gpu_name((*b)->name());
  }
  v1::RegisterWorkerResponse reg_resp;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ctx.set_wait_for_ready(true);
    DGPTQ_RETURN_IF_ERROR(FromGrpcStatus(stub->RegisterWorker(&ctx, reg, &reg_resp)));
  }
  worker_id = reg_resp.worker_id();
  absl::Duration interval = FromProto(reg_resp.heartbeat_interval());
  if (interval <= absl::ZeroDuration()) interval = absl::Seconds(3);
  spdlog::info("worker {} registered with {} as {}", opts.name, opts.coordinator, worker_id);

  grpc::ClientContext ctx;
  std::unique_ptr<Stream> s = stub->Control(&ctx);
  {
    std::lock_guard<std::mutex> lock(stream_mu);
    stream = s.get();
    stream_ctx = &ctx;
  }
  if (stopping) ctx.TryCancel();
  v1::ControlRequest hello;
  hello.mutable_hello()->set_worker_id(worker_id);
  Send(hello);
  std::thread hb([&] { Heartbeats(stub.get(), &ctx, interval); });
  v1::ControlResponse msg;
  while (s->Read(&msg)) Handle(msg);
  {
    std::lock_guard<std::mutex> lock(stream_mu);
    stream = nullptr;
    stream_ctx = nullptr;
  }
  ctx.TryCancel();
  hb.join();
  StopJob("control stream closed");
  JoinJob();
  return FromGrpcStatus(s->Finish());
}

// Renews the lease until the stream ends; a coordinator that no longer knows this worker
// (NOT_FOUND) ends the session so the worker registers again.
void WorkerDaemon::Impl::Heartbeats(v1::Coordinator::Stub* stub, grpc::ClientContext* stream_ctx,
                                    absl::Duration interval) {
  // The stream context is cancelled when the session ends; poll for that between beats.
  while (Sleep(interval)) {
    {
      std::lock_guard<std::mutex> lock(stream_mu);
      if (stream == nullptr) return;
    }
    v1::HeartbeatRequest req;
    req.set_worker_id(worker_id);
    {
      std::lock_guard<std::mutex> lock(job_mu);
      req.set_job_id(job_id);
    }
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(interval));
    const grpc::Status st = stub->Heartbeat(&ctx, req, &resp);
    if (st.error_code() == grpc::StatusCode::NOT_FOUND) {
      spdlog::warn("worker {}: coordinator forgot {}; registering again", opts.name, worker_id);
      stream_ctx->TryCancel();
      return;
    }
    if (!st.ok()) spdlog::warn("worker {}: heartbeat failed: {}", opts.name, st.error_message());
  }
}

void WorkerDaemon::Impl::Send(const v1::ControlRequest& req) {
  std::lock_guard<std::mutex> lock(stream_mu);
  if (stream != nullptr && !stream->Write(req)) {
    spdlog::warn("worker {}: control stream write failed", opts.name);
  }
}

void WorkerDaemon::Impl::Handle(const v1::ControlResponse& msg) {
  switch (msg.kind_case()) {
    case v1::ControlResponse::kCreateRendezvous: Offer(msg.create_rendezvous()); break;
    case v1::ControlResponse::kAssignment: StartJob(msg.assignment()); break;
    case v1::ControlResponse::kStopJob: {
      {
        std::lock_guard<std::mutex> lock(rdv_mu);  // a job stopped before its assignment
        listeners.erase(msg.stop_job().job_id());
      }
      std::lock_guard<std::mutex> lock(job_mu);
      if (job_id == msg.stop_job().job_id()) {
        spdlog::info("worker {}: stopping job {}: {}", opts.name, job_id, msg.stop_job().reason());
        job_cancel = true;
        if (msg.stop_job().discard_output()) job_discard = true;
      }
      break;
    }
    default: spdlog::warn("worker {}: ignoring an unknown control message", opts.name);
  }
}

void WorkerDaemon::Impl::Offer(const v1::CreateRendezvous& req) {
  v1::ControlRequest out;
  v1::RendezvousOffer* offer = out.mutable_rendezvous_offer();
  offer->set_job_id(req.job_id());
  offer->mutable_rendezvous()->set_backend(req.backend());
  absl::Status st;
  if (req.backend() == "host") {
    auto l = HostListener::Bind(opts.host + ":0");
    if (l.ok()) {
      offer->mutable_rendezvous()->set_host_address((*l)->address());
      std::lock_guard<std::mutex> lock(rdv_mu);
      listeners[req.job_id()] = *std::move(l);
    } else {
      st = l.status();
    }
  } else if (req.backend() == "nccl") {
#ifdef DGPTQ_HAVE_NCCL
    auto id = NewNcclUniqueId();
    if (id.ok()) {
      offer->mutable_rendezvous()->set_nccl_unique_id(*id);
    } else {
      st = id.status();
    }
#else
    st = absl::FailedPreconditionError("this worker was built without NCCL");
#endif
  } else {
    st = absl::InvalidArgumentError(absl::StrFormat("unknown communicator backend '%s'", req.backend()));
  }
  if (!st.ok()) {
    // The coordinator fails the job on a result with an error for it.
    Send(ResultMessage(req.job_id(), 0, Annotate(st, "rendezvous")));
    return;
  }
  Send(out);
}

void WorkerDaemon::Impl::StartJob(const v1::Assignment& a) {
  std::lock_guard<std::mutex> lock(job_mu);
  if (!job_id.empty()) {
    Send(ResultMessage(a.job_id(), a.rank(),
                       absl::FailedPreconditionError(absl::StrFormat(
                           "worker %s is busy with job %s", opts.name, job_id))));
    return;
  }
  if (job_thread.joinable()) job_thread.join();  // the previous job has finished
  job_id = a.job_id();
  job_rank = a.rank();
  job_world = a.world_size();
  last_layer_done = -1;
  job_cancel = false;
  job_discard = false;
  if (metrics) metrics->JobStarted();
  job_thread = std::thread([this, a] { RunJob(a); });
}

void WorkerDaemon::Impl::StopJob(const std::string& reason) {
  std::lock_guard<std::mutex> lock(job_mu);
  if (!job_id.empty() && !job_cancel.exchange(true)) {
    spdlog::info("worker {}: stopping job {}: {}", opts.name, job_id, reason);
  }
}

void WorkerDaemon::Impl::JoinJob() {
  std::thread t;
  {
    std::lock_guard<std::mutex> lock(job_mu);
    t = std::move(job_thread);
  }
  if (t.joinable()) t.join();
}

void WorkerDaemon::Impl::RunJob(v1::Assignment a) {
  const absl::Time t0 = absl::Now();
  spdlog::info("worker {}: job {} rank {}/{} starts", opts.name, a.job_id(), a.rank(), a.world_size());
  std::unique_ptr<Communicator> comm;
  Communicator* raw = nullptr;
  absl::Status st = RunRank(a, &raw, &comm);
  const uint64_t bytes = comm ? comm->bytes_sent() + comm->bytes_received() : 0;
  comm.reset();  // closes the connections: peers still waiting see it at once
  {
    std::lock_guard<std::mutex> lock(rdv_mu);
    listeners.erase(a.job_id());
  }
  if (!st.ok() && job_cancel) st = absl::CancelledError(std::string(st.message()));
  if (!st.ok() && job_discard && a.rank() == 0) {
    if (absl::Status rm = RemovePartialOutput(a.spec().output_path()); !rm.ok()) {
      spdlog::warn("worker {}: job {}: {}", opts.name, a.job_id(), rm.ToString());
    }
  }
  v1::ControlRequest res = ResultMessage(a.job_id(), a.rank(), st);
  v1::WorkerResult* r = res.mutable_result();
  r->set_bytes_communicated(static_cast<int64_t>(bytes));
  *r->mutable_elapsed() = ToProto(absl::Now() - t0);
  if (st.ok() && a.rank() == 0) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(a.spec().output_path(), ec)) {
      r->add_files_written(e.path().filename().string());
    }
  }
  spdlog::info("worker {}: job {} rank {} ends: {}", opts.name, a.job_id(), a.rank(), st.ToString());
  if (metrics) {
    metrics->JobEnded(st.ok() ? "ok" : st.code() == absl::StatusCode::kCancelled ? "cancelled" : "failed");
  }
  {
    // Idle before the result goes out: the coordinator may assign the next job as soon
    // as it reads the result.
    std::lock_guard<std::mutex> lock(job_mu);
    job_id.clear();
  }
  Send(res);
}

absl::Status WorkerDaemon::Impl::RunRank(const v1::Assignment& a, Communicator** raw,
                                         std::unique_ptr<Communicator>* comm) {
  DGPTQ_ASSIGN_OR_RETURN(ResolvedJobSpec spec, ResolveJobSpec(a.spec()));
  QuantizeOptions o;
  o.model_dir = spec.model_dir;
  o.out_dir = spec.out_dir;
  o.calib_path = spec.calib_path;
  DGPTQ_ASSIGN_OR_RETURN(o.format, ParseOutputFormat(spec.format));
  o.quant = spec.quant;
  o.rtn = spec.rtn;
  o.true_sequential = spec.true_sequential;
  o.overwrite = spec.overwrite;
  o.samples = spec.samples;
  o.seq_len = spec.seq_len;
  o.seed = spec.seed;
  o.device = opts.device;
  o.gpu = opts.gpu;
  o.cpu_threads = opts.cpu_threads;
  // A job that ran before (a lost worker, a restarted coordinator) goes on from the layers
  // its partial output holds; the output is the same whatever the ranks before and after.
  o.resume = ResumeMode::kIfMatching;

  RankContext ctx;
  ctx.rank = a.rank();
  ctx.world = a.world_size();
  if (ctx.world < 1 || ctx.rank < 0 || ctx.rank >= ctx.world) {
    return absl::InvalidArgumentError(
        absl::StrFormat("assignment gives rank %d of %d", ctx.rank, ctx.world));
  }
  if (ctx.world > 1) {
    const v1::Rendezvous& rdv = a.rendezvous();
    if (rdv.backend() == "host") {
      std::unique_ptr<HostListener> listener;
      if (ctx.rank == 0) {
        std::lock_guard<std::mutex> lock(rdv_mu);
        auto it = listeners.find(a.job_id());
        if (it == listeners.end()) {
          return absl::FailedPreconditionError("rank 0 holds no rendezvous listener for this job");
        }
        listener = std::move(it->second);
        listeners.erase(it);
      }
      DGPTQ_ASSIGN_OR_RETURN(*comm, CreateHostCommunicator({ctx.rank, ctx.world, rdv.host_address(),
                                                            opts.comm_timeout},
                                                           std::move(listener)));
    } else if (rdv.backend() == "nccl") {
#ifdef DGPTQ_HAVE_NCCL
      DGPTQ_ASSIGN_OR_RETURN(*comm, CreateNcclCommunicator({ctx.rank, ctx.world, rdv.nccl_unique_id(),
                                                            opts.gpu, opts.comm_timeout}));
#else
      return absl::FailedPreconditionError("this worker was built without NCCL");
#endif
    } else {
      return absl::InvalidArgumentError(
          absl::StrFormat("unknown communicator backend '%s'", rdv.backend()));
    }
    *raw = comm->get();
    ctx.comm = *raw;
  }
  // The plan's owners, by (layer, module): a group is found by any of its modules.
  auto owners = std::make_shared<std::map<std::pair<int, std::string>, int>>();
  for (const v1::LayerPlan& lp : a.plan().layers()) {
    for (const v1::ModuleGroup& g : lp.groups()) {
      for (const std::string& m : g.modules()) (*owners)[{lp.layer(), m}] = g.owner_rank();
    }
  }
  ctx.owner = [owners](int layer, const std::string& module) {
    auto it = owners->find({layer, module});
    return it == owners->end() ? -1 : it->second;
  };
  if (!spec.rtn) {
    ctx.window_begin = a.shard().begin();
    ctx.window_end = a.shard().end();
  }
  ctx.cancelled = [this] { return job_cancel.load(); };
  // The model files must still be those the plan was made from (sizes, times).
  auto planned = std::make_shared<std::vector<FileStamp>>();
  for (const v1::ModelFile& f : a.plan().model_files()) {
    planned->push_back({f.name(), f.size_bytes(), f.mtime_ns()});
  }
  if (!planned->empty()) {
    DGPTQ_RETURN_IF_ERROR(CheckModelFiles(o.model_dir, *planned));
    ctx.inputs_unchanged = [planned, dir = o.model_dir] { return CheckModelFiles(dir, *planned); };
  }
  DGPTQ_ASSIGN_OR_RETURN(QuantizeReport report,
                         QuantizeRank(o, ctx, [&](const ProgressEvent& e) {
                           if (metrics) metrics->Progress(e, *raw ? (*raw)->backend() : "none");
                           SendProgress(a, e);
                         }));
  spdlog::info("worker {}: job {} rank {}: {} modules, resumed after {} finished layers, peak RSS {} MB",
               opts.name, a.job_id(), a.rank(), report.modules.size(), report.resumed_layers,
               report.peak_rss_bytes >> 20);
  return absl::OkStatus();
}

void WorkerDaemon::Impl::SendProgress(const v1::Assignment& a, const ProgressEvent& e) {
  if (e.layer < 0) return;  // calibration loading and the final write are not layer phases
  if (e.phase == "write") {
    std::lock_guard<std::mutex> lock(job_mu);
    last_layer_done = e.layer;
  }
  v1::ControlRequest req;
  v1::JobEvent* ev = req.mutable_event();
  ev->set_job_id(a.job_id());
  if (e.phase == "quantize" && !e.module.empty()) {
    v1::ModuleLoss* ml = ev->mutable_module_loss();
    ml->set_rank(a.rank());
    ml->set_layer(e.layer);
    ml->set_module(ModuleInLayer(e.module, e.layer));
    ml->set_loss(e.loss);
    *ml->mutable_duration() = ToProto(absl::Seconds(e.seconds));
  } else {
    v1::Progress* p = ev->mutable_progress();
    p->set_rank(a.rank());
    p->set_layer(e.layer);
    p->set_num_layers(e.layers);
    p->set_phase(PhaseOf(e.phase));
    p->set_done(1);
    p->set_total(1);
    *p->mutable_elapsed() = ToProto(absl::Seconds(e.seconds));
    p->set_bytes_communicated(e.bytes);
  }
  Send(req);
}

}  // namespace dgptq::worker
