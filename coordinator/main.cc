// `dgptq-coordinator`: the coordinator daemon. Flags are read here only (STYLE.md); see
// README.md for what they mean. Exit codes: 0 after SIGINT/SIGTERM, 1 when the server cannot
// start or the port file cannot be written, 2 for bad flags (an unreadable or mismatched TLS or
// token file included).

#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/daemon_util.h"
#include "coordinator/server.h"
#include "spdlog/spdlog.h"

namespace {

// TLS, tokens and limits (issue 6; README.md "Security").
void AddSecurityFlags(CLI::App& app, dgptq::coordinator::CoordinatorOptions& o) {
  app.add_option("--tls-cert", o.tls.cert_file, "PEM certificate chain: serve TLS");
  app.add_option("--tls-key", o.tls.key_file, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", o.tls.client_ca_file,
                 "PEM CA certificates: mutual TLS, client certificates required and verified");
  app.add_option("--client-token-file", o.client_token_file,
                 "file holding the bearer token client calls must carry");
  app.add_option("--worker-token-file", o.worker_token_file,
                 "file holding the bearer token worker calls must carry");
  app.add_option("--max-watchers", o.max_watchers, "open WatchJob streams beyond this are refused")
      ->capture_default_str();
  app.add_option("--max-request-bytes", o.max_request_bytes, "larger request messages are refused")
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  dgptq::coordinator::CoordinatorOptions o;
  o.metrics_listen = "0.0.0.0:9090";
  double lease_ttl_s = 15, heartbeat_s = 3, rendezvous_s = 60;
  std::string log_level = "info";
  CLI::App app{"dgptq-coordinator: accepts quantization jobs and runs them on worker daemons"};
  app.add_option("--listen", o.listen, "gRPC address HOST:PORT (port 0 picks one)")
      ->capture_default_str();
  app.add_option("--port-file", o.port_file, "write the bound port here once serving");
  app.add_option("--metrics-listen", o.metrics_listen,
                 "Prometheus /metrics address HOST:PORT (port 0 picks one; '' for none)")
      ->capture_default_str();
  app.add_option("--metrics-port-file", o.metrics_port_file,
                 "write the bound metrics port here once serving");
  app.add_option("--lease-ttl", lease_ttl_s, "seconds a worker lease lasts without a heartbeat")
      ->capture_default_str();
  app.add_option("--heartbeat-interval", heartbeat_s, "seconds between worker heartbeats")
      ->capture_default_str();
  app.add_option("--rendezvous-timeout", rendezvous_s,
                 "seconds rank 0 may take to offer a rendezvous")
      ->capture_default_str();
  app.add_option("--max-queued-jobs", o.max_queued_jobs, "queued jobs beyond this are refused")
      ->capture_default_str();
  app.add_option("--max-job-retries", o.max_job_retries,
                 "times a job that lost a worker is re-queued to resume (0: it fails)")
      ->capture_default_str();
  app.add_option("--comm-backend", o.comm_backend, "auto, host or nccl")->capture_default_str();
  app.add_option("--allowed-root", o.allowed_roots,
                 "directory job paths must lie in (repeatable; none: any path)");
  app.add_option("--state-dir", o.state_dir,
                 "job database directory (jobs.db): jobs survive a restart; none: in memory");
  AddSecurityFlags(app, o);
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.lease_ttl = absl::Seconds(lease_ttl_s);
  o.heartbeat_interval = absl::Seconds(heartbeat_s);
  o.rendezvous_timeout = absl::Seconds(rendezvous_s);
  if (absl::Status s = o.Validate(); !s.ok()) {
    std::fprintf(stderr, "dgptq-coordinator: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));

  dgptq::InstallStopSignalHandlers();

  const std::string port_file = o.port_file, metrics_port_file = o.metrics_port_file;
  auto server = dgptq::coordinator::CoordinatorServer::Start(std::move(o));
  absl::Status s = server.status();
  if (s.ok()) s = dgptq::WritePortFile(metrics_port_file, (*server)->metrics_port());
  if (s.ok()) s = dgptq::WritePortFile(port_file, (*server)->port());
  if (!s.ok()) {
    std::fprintf(stderr, "dgptq-coordinator: %s\n", s.ToString().c_str());
    return absl::IsInvalidArgument(s) ? 2 : 1;  // an unusable TLS or token file is a bad flag
  }
  const int sig = dgptq::WaitForStopSignal();
  spdlog::info("dgptq-coordinator: signal {}, shutting down", sig);
  (*server)->Shutdown(absl::Seconds(3));
  spdlog::info("dgptq-coordinator: stopped");
  return 0;
}
