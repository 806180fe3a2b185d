// `dgptq submit | watch | status | list | cancel`: the command-line client of a coordinator.
// Flags are read here into plain structs; the calls and the printing live in
// coordinator_client.{h,cc} and job_format.{h,cc}.
//
// Exit codes (worker/cli/commands.h): 0 ok (submit --wait / watch: the job SUCCEEDED), 1 the job
// FAILED or a call returned an error, 2 usage, 3 the job was CANCELLED, 4 the coordinator is
// unreachable (UNAVAILABLE or DEADLINE_EXCEEDED after the retries).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "common/channel_flags.h"
#include "common/grpc_security.h"
#include "coordinator/client/coordinator_client.h"
#include "coordinator/client/job_format.h"
#include "worker/cli/commands.h"

namespace dgptq::cli {
namespace {

// Flags every client command has.
struct ConnectionFlags {
  std::string coordinator = "localhost:50051";
  double connect_timeout_s = 5;
  bool json = false;
  GrpcChannelTls tls;
  std::string token_file;
};

void AddConnectionFlags(CLI::App* c, ConnectionFlags& f) {
  c->add_option("--coordinator", f.coordinator, "coordinator address host:port")
      ->envname("DGPTQ_COORDINATOR")
      ->capture_default_str();
  c->add_option("--connect-timeout", f.connect_timeout_s,
                "seconds to wait for the coordinator before giving up (exit code 4)")
      ->check(CLI::Range(0.001, 3600.0))
      ->capture_default_str();
  c->add_flag("--json", f.json, "print JSON (one object per line)");
  AddChannelSecurityFlags(c, &f.tls, &f.token_file,
                          "file holding the client bearer token (default: $DGPTQ_TOKEN, if set)");
}

// The bearer token: --token-file, else $DGPTQ_TOKEN, else none.
absl::StatusOr<std::string> Token(const ConnectionFlags& f) {
  if (!f.token_file.empty()) return ReadBearerTokenFile(f.token_file);
  const char* env = std::getenv("DGPTQ_TOKEN");
  if (env == nullptr || *env == '\0') return std::string();
  if (absl::Status s = CheckBearerToken(env, "$DGPTQ_TOKEN"); !s.ok()) return s;
  return std::string(env);
}

// Builds the client, or prints why the flags are unusable (exit code 2).
std::unique_ptr<client::CoordinatorClient> MakeClient(const char* command,
                                                      const ConnectionFlags& f) {
  client::ClientOptions options;
  options.address = f.coordinator;
  options.connect_timeout = absl::Seconds(f.connect_timeout_s);
  absl::Status s = options.Validate();
  absl::StatusOr<std::string> token = Token(f);
  if (s.ok()) s = token.status();
  if (s.ok()) {
    absl::StatusOr<GrpcChannelCredentials> credentials = LoadChannelCredentials(f.tls, *token);
    if (credentials.ok()) options.credentials = *std::move(credentials);
    s = credentials.status();
  }
  if (!s.ok()) {
    std::fprintf(stderr, "dgptq %s: %s\n", command, std::string(s.message()).c_str());
    return nullptr;
  }
  return std::make_unique<client::CoordinatorClient>(std::move(options));
}

// Prints a failed call ("dgptq submit: INVALID_ARGUMENT: ...") and returns its exit code.
int Fail(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "dgptq %s: %s\n", command, status.ToString().c_str());
  if (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)) return kExitUnreachable;
  return kExitFailed;
}

int ExitCodeFor(v1::JobState state) {
  if (state == v1::JOB_STATE_SUCCEEDED) return kExitOk;
  if (state == v1::JOB_STATE_CANCELLED) return kExitCancelled;
  return kExitFailed;
}

bool StdoutIsTerminal() { return isatty(STDOUT_FILENO) != 0; }

void PrintJson(const google::protobuf::Message& m) {
  std::printf("%s\n", client::ToJson(m).c_str());
  std::fflush(stdout);
}

// Watches `job_id` to its end: a bar on a terminal, JSON lines otherwise or with --json.
int WatchToEnd(const char* command, client::CoordinatorClient& c, const std::string& job_id,
               int64_t from_index, bool json) {
  client::WatchPrinter printer(stdout, json || !StdoutIsTerminal());
  auto job = c.WatchJob(job_id, from_index, [&](const v1::JobEvent& e) { printer.OnEvent(e); });
  if (!job.ok()) {
    printer.EndLine();
    return Fail(command, job.status());
  }
  printer.Finish(*job);
  return ExitCodeFor(job->state());
}

struct SubmitFlags {
  ConnectionFlags conn;
  std::string model, out, calib, request_id;
  v1::JobSpec spec;  // the scalar settings; paths are added by Spec()
  bool sym = false, wait = false;

  v1::JobSpec Spec() const {
    // The coordinator resolves paths on its own filesystem: send them absolute.
    v1::JobSpec s = spec;
    s.set_model_path(std::filesystem::absolute(model).string());
    s.set_output_path(std::filesystem::absolute(out).string());
    if (!calib.empty()) s.mutable_calibration()->set_path(std::filesystem::absolute(calib));
    return s;
  }
};

// Restricts `opt` to the (case-insensitive) names in `names`, converted to their enum values.
template <typename E>
CLI::Option* OneOf(CLI::Option* opt, std::map<std::string, E> names) {
  std::string type;
  for (const auto& [name, value] : names) type += (type.empty() ? "" : "|") + name;
  auto to_value = [names, type](std::string& arg) -> std::string {
    const auto it = names.find(absl::AsciiStrToLower(arg));
    if (it == names.end()) return "'" + arg + "' is not one of " + type;
    arg = std::to_string(static_cast<int>(it->second));
    return "";
  };
  return opt->transform(CLI::Validator(to_value, ""))->type_name(type);
}

void AddSpecFlags(CLI::App* c, SubmitFlags& f) {
  v1::QuantizationConfig* q = f.spec.mutable_quantization();
  v1::CalibrationSpec* cal = f.spec.mutable_calibration();
  v1::JobSpec* s = &f.spec;
  c->add_option_function<int>(
      "--workers", [s](int v) { s->set_num_workers(v); }, "number of workers (ranks); default 1");
  OneOf(c->add_option_function<v1::DeviceKind>(
            "--device-kind", [s](v1::DeviceKind v) { s->set_worker_device_kind(v); },
            "which workers may run it; default any"),
        std::map<std::string, v1::DeviceKind>{{"any", v1::DEVICE_KIND_UNSPECIFIED},
                                              {"cpu", v1::DEVICE_KIND_CPU},
                                              {"cuda", v1::DEVICE_KIND_CUDA}});
  c->add_option_function<int>(
      "--bits", [q](int v) { q->set_bits(v); }, "2, 3, 4 or 8; default 4");
  c->add_option_function<int>(
      "--group-size", [q](int v) { q->set_group_size(v); },
      "-1 (per channel) or a positive size; default 128");
  CLI::Option* sym = c->add_flag("--sym", f.sym, "symmetric grid (the default)");
  c->add_flag_function(
       "--asym", [q](int64_t n) { q->set_asym(n > 0); },
       "asymmetric grid (compressed-tensors only)")
      ->excludes(sym);
  c->add_option_function<double>(
      "--damp", [q](double v) { q->set_damp_percent(v); },
      "Hessian dampening, a fraction of its mean diagonal; default 0.01");
  c->add_option_function<int>(
      "--block-size", [q](int v) { q->set_block_size(v); }, "lazy-batch block size; default 128");
  // The boolean QuantizationConfig fields, off unless given.
  using Setter = void (v1::QuantizationConfig::*)(bool);
  const std::vector<std::tuple<const char*, Setter, const char*>> switches = {
      {"--act-order", &v1::QuantizationConfig::set_act_order,
       "columns by descending Hessian diagonal"},
      {"--static-groups", &v1::QuantizationConfig::set_static_groups,
       "group grids fixed before act-order"},
      {"--mse", &v1::QuantizationConfig::set_mse, "MSE grid search"},
      {"--true-sequential", &v1::QuantizationConfig::set_true_sequential,
       "re-forward after each module group"},
      {"--rtn", &v1::QuantizationConfig::set_rtn, "round to nearest (no calibration)"},
  };
  for (const auto& [name, set, help] : switches) {
    c->add_flag_function(
        name, [q, set](int64_t n) { (q->*set)(n > 0); }, help);
  }
  c->add_option_function<int>(
      "--samples", [cal](int v) { cal->set_samples(v); }, "calibration samples; default 128");
  c->add_option_function<int>(
      "--seq-len", [cal](int v) { cal->set_seq_len(v); },
      "tokens per calibration sample; default 2048");
  c->add_option_function<uint64_t>(
      "--seed", [cal](uint64_t v) { cal->set_seed(v); }, "calibration sampling seed; default 0");
  OneOf(c->add_option_function<v1::OutputFormat>(
            "--format", [s](v1::OutputFormat v) { s->set_output_format(v); },
            "checkpoint format; default gptq"),
        std::map<std::string, v1::OutputFormat>{
            {"gptq", v1::OUTPUT_FORMAT_GPTQ},
            {"compressed-tensors", v1::OUTPUT_FORMAT_COMPRESSED_TENSORS}});
  c->add_flag_function(
      "--overwrite", [s](int64_t n) { s->set_overwrite(n > 0); },
      "replace an existing model at --out");
}

int RunSubmit(const SubmitFlags& f) {
  auto c = MakeClient("submit", f.conn);
  if (c == nullptr) return kExitUsage;
  const std::string request_id = f.request_id.empty() ? client::NewRequestId() : f.request_id;
  auto r = c->SubmitJob(f.Spec(), request_id);
  if (!r.ok()) return Fail("submit", r.status());
  if (!r->created()) {
    std::fprintf(stderr, "dgptq submit: request id %s was already submitted as job %s\n",
                 request_id.c_str(), r->job().job_id().c_str());
  }
  // With --wait, the watch that follows prints JSON lines unless stdout is a terminal: the job
  // then comes as JSON too, so that every line of the output parses.
  const bool json = f.conn.json || (f.wait && !StdoutIsTerminal());
  if (json) {
    PrintJson(r->job());
  } else {
    std::printf("%s\n", r->job().job_id().c_str());
    std::fflush(stdout);
  }
  if (!f.wait) return kExitOk;
  return WatchToEnd("submit", *c, r->job().job_id(), 0, f.conn.json);
}

struct JobFlags {
  ConnectionFlags conn;
  std::string job_id, reason;
  int64_t from_index = 0;
};

CLI::App* AddJobCommand(CLI::App& app, const std::string& name, const std::string& help,
                        JobFlags& f) {
  CLI::App* c = app.add_subcommand(name, help);
  c->add_option("job", f.job_id, "job id")->required();
  AddConnectionFlags(c, f.conn);
  return c;
}

struct ListFlags {
  ConnectionFlags conn;
  std::vector<v1::JobState> states;
  int page_size = 0;
  std::string page_token;
  bool all = false;
};

int RunList(const ListFlags& f) {
  auto c = MakeClient("list", f.conn);
  if (c == nullptr) return kExitUsage;
  v1::ListJobsRequest request;
  for (v1::JobState s : f.states) request.add_states(s);
  request.set_page_size(f.page_size);
  request.set_page_token(f.page_token);
  auto r = f.all ? c->ListAllJobs(request) : c->ListJobs(request);
  if (!r.ok()) return Fail("list", r.status());
  if (f.conn.json || !StdoutIsTerminal()) {
    PrintJson(*r);
    return kExitOk;
  }
  std::printf("%s", client::JobTable(r->jobs(), absl::Now()).c_str());
  if (!r->next_page_token().empty()) {
    std::printf("more: --page-token %s (or --all)\n", r->next_page_token().c_str());
  }
  return kExitOk;
}

}  // namespace

Command AddSubmitCommand(CLI::App& app) {
  auto f = std::make_shared<SubmitFlags>();
  CLI::App* c = app.add_subcommand("submit", "submit a quantization job to a coordinator");
  AddConnectionFlags(c, f->conn);
  c->add_option("--model", f->model, "Hugging Face model directory (shared storage)")->required();
  c->add_option("--out", f->out, "output directory (shared storage)")->required();
  c->add_option("--calib", f->calib, "calibration data; empty: the coordinator's default");
  AddSpecFlags(c, *f);
  c->add_option("--request-id", f->request_id, "idempotency key; default a random UUID");
  c->add_flag("--wait", f->wait, "watch the job to its end (exit code from its final state)");
  return {c, [f] { return RunSubmit(*f); }};
}

Command AddWatchCommand(CLI::App& app) {
  auto f = std::make_shared<JobFlags>();
  CLI::App* c = AddJobCommand(app, "watch", "follow a job's events until it ends", *f);
  c->add_option("--from", f->from_index, "first event index")
      ->check(CLI::Range(int64_t{0}, std::numeric_limits<int64_t>::max()));
  return {c, [f] {
            auto client = MakeClient("watch", f->conn);
            if (client == nullptr) return kExitUsage;
            return WatchToEnd("watch", *client, f->job_id, f->from_index, f->conn.json);
          }};
}

Command AddStatusCommand(CLI::App& app) {
  auto f = std::make_shared<JobFlags>();
  CLI::App* c = AddJobCommand(app, "status", "show one job", *f);
  return {c, [f] {
            auto client = MakeClient("status", f->conn);
            if (client == nullptr) return kExitUsage;
            auto job = client->GetJob(f->job_id);
            if (!job.ok()) return Fail("status", job.status());
            if (f->conn.json || !StdoutIsTerminal()) {
              PrintJson(*job);
            } else {
              std::printf("%s", client::JobSummary(*job).c_str());
            }
            return kExitOk;
          }};
}

Command AddCancelCommand(CLI::App& app) {
  auto f = std::make_shared<JobFlags>();
  CLI::App* c = AddJobCommand(app, "cancel", "cancel a job", *f);
  c->add_option("--reason", f->reason, "recorded as the job's reason");
  return {c, [f] {
            auto client = MakeClient("cancel", f->conn);
            if (client == nullptr) return kExitUsage;
            auto job = client->CancelJob(f->job_id, f->reason);
            if (!job.ok()) return Fail("cancel", job.status());
            if (f->conn.json) {
              PrintJson(*job);
            } else {
              std::printf("%s %s\n", job->job_id().c_str(),
                          client::StateName(job->state()).c_str());
            }
            return kExitOk;
          }};
}

Command AddListCommand(CLI::App& app) {
  auto f = std::make_shared<ListFlags>();
  CLI::App* c = app.add_subcommand("list", "list jobs, newest first");
  AddConnectionFlags(c, f->conn);
  OneOf(c->add_option("--state", f->states, "only jobs in these states (repeatable)"),
        std::map<std::string, v1::JobState>{{"queued", v1::JOB_STATE_QUEUED},
                                            {"planning", v1::JOB_STATE_PLANNING},
                                            {"running", v1::JOB_STATE_RUNNING},
                                            {"succeeded", v1::JOB_STATE_SUCCEEDED},
                                            {"failed", v1::JOB_STATE_FAILED},
                                            {"cancelled", v1::JOB_STATE_CANCELLED}});
  c->add_option("--page-size", f->page_size, "jobs per page; default 50, at most 1000")
      ->check(CLI::Range(0, 1000));
  c->add_option("--page-token", f->page_token, "continue a listing from its next_page_token");
  c->add_flag("--all", f->all, "follow page tokens to the last page");
  return {c, [f] { return RunList(*f); }};
}

}  // namespace dgptq::cli
