// Helpers of the observability tests: a real coordinator with real workers as child processes
// (gRPC and /metrics ports from port files), a plain HTTP GET, a parser of the Prometheus text
// format and `promtool check metrics`.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "dgptq/v1/coordinator.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/cluster_util.h"
#include "tests/subprocess.h"
#include "tests/test_util.h"
#include "tests/worker/output_test_util.h"

namespace dgptq::observability {

using dgptq::testing::Subprocess;
using namespace std::chrono_literals;

inline constexpr char kPromtool[] = "/usr/bin/promtool";
inline constexpr char kPrometheus[] = "/usr/bin/prometheus";

struct HttpResponse {
  int status = 0;  // 0: no connection or no answer
  std::string body;
};

// GET http://127.0.0.1:port/target (HTTP/1.0: the server closes after its answer).
inline HttpResponse HttpGet(int port, const std::string& target) {
  HttpResponse r;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return r;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req = "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[8192];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) raw.append(buf, n);
    }
  }
  ::close(fd);
  const size_t head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos) return r;
  r.status = std::atoi(raw.c_str() + raw.find(' ') + 1);
  r.body = raw.substr(head_end + 4);
  return r;
}

// Percent-encoding of a URL query value.
inline std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof(hex), "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// A free TCP port on loopback (for servers that cannot take port 0, like Prometheus).
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// One sample of the Prometheus text format.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// The samples of a text exposition (comments skipped; label values without escapes).
inline std::vector<Sample> ParseMetrics(const std::string& text) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t i = line.find_first_of("{ ");
    s.name = line.substr(0, i);
    if (i != std::string::npos && line[i] == '{') {
      const size_t close = line.find('}', i);
      std::string body = line.substr(i + 1, close - i - 1);
      size_t p = 0;
      while (p < body.size()) {
        const size_t eq = body.find('=', p);
        const size_t q1 = body.find('"', eq), q2 = body.find('"', q1 + 1);
        s.labels[body.substr(p, eq - p)] = body.substr(q1 + 1, q2 - q1 - 1);
        p = body.find(',', q2);
        p = p == std::string::npos ? body.size() : p + 1;
      }
      i = close + 1;
    }
    s.value = std::strtod(line.c_str() + i, nullptr);
    out.push_back(std::move(s));
  }
  return out;
}

// The value of the one series `name` whose labels include `labels`; nullopt when none.
inline std::optional<double> Value(const std::vector<Sample>& samples, const std::string& name,
                                   const std::map<std::string, std::string>& labels = {}) {
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      match = match && it != s.labels.end() && it->second == v;
    }
    if (match) return s.value;
  }
  return std::nullopt;
}

struct ProcOutput {
  int code = -1;
  std::string output;
};

// `promtool check metrics` on `text` (fed on stdin, as a scrape would be).
inline ProcOutput PromtoolCheckMetrics(const std::string& text, const std::string& dir) {
  const std::string in = dir + "/promtool-in.txt", log = dir + "/promtool.log";
  worker::Spit(in, text);
  std::remove(log.c_str());
  Subprocess p({"/bin/sh", "-c", std::string(kPromtool) + " check metrics < '" + in + "'"}, log);
  ProcOutput r;
  r.code = p.Wait(30s);
  r.output = p.Log();
  return r;
}

// A real `dgptq-coordinator` and real `dgptq-worker`s on loopback, every port from a port
// file, and a small model to quantize. Logs are printed when the test failed.
class Cluster : public ::testing::Test {
 protected:
  using Daemon = dgptq::testing::Daemon;

  void SetUp() override {
    model_ = tmp_ / "model";
    calib_ = tmp_ / "calib.txt";
    auto r = worker::MakeSmallModel(model_, 2, calib_, 200);
    ASSERT_EQ(r.code, 0) << r.output;
    coordinator_ = Spawn(
        "coordinator", {DGPTQ_COORDINATOR_BIN, "--lease-ttl", "5", "--heartbeat-interval", "0.5"});
    ASSERT_GT(coordinator_.port, 0) << coordinator_.proc->Log();
    ASSERT_GT(coordinator_.metrics_port, 0) << coordinator_.proc->Log();
    address_ = "127.0.0.1:" + std::to_string(coordinator_.port);
    stub_ =
        v1::Coordinator::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { dgptq::testing::StopDaemons(&coordinator_, &workers_, HasFailure()); }

  // Starts `argv` with gRPC and /metrics on loopback port 0 and waits for both ports.
  Daemon Spawn(const std::string& name, std::vector<std::string> argv) {
    argv.insert(argv.end(), {"--metrics-listen", "127.0.0.1:0"});
    return dgptq::testing::StartDaemon(std::move(argv), tmp_.path(), name, 10s);
  }
  Daemon& StartWorker() {
    const std::string name = "w" + std::to_string(workers_.size());
    workers_.push_back(Spawn(name, dgptq::testing::WorkerArgv(DGPTQ_WORKER_BIN, address_, name)));
    return workers_.back();
  }

  v1::JobSpec Spec(const std::string& out, int workers) const {
    v1::JobSpec s;
    s.set_model_path(model_);
    s.set_output_path(tmp_ / out);
    s.mutable_quantization()->set_group_size(32);
    s.mutable_calibration()->set_path(calib_);
    s.mutable_calibration()->set_samples(4);
    s.mutable_calibration()->set_seq_len(32);
    s.set_num_workers(workers);
    return s;
  }
  std::string Submit(const v1::JobSpec& spec) {
    v1::SubmitJobRequest req;
    *req.mutable_spec() = spec;
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    const grpc::Status st = stub_->SubmitJob(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.job().job_id();
  }
  // Waits (bounded) for the job's terminal state and returns the job.
  v1::Job WaitDone(const std::string& id, std::chrono::seconds limit) {
    v1::WatchJobRequest req;
    req.set_job_id(id);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + limit);
    auto reader = stub_->WatchJob(&ctx, req);
    v1::JobEvent e;
    while (reader->Read(&e)) {
    }
    const grpc::Status st = reader->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
    v1::GetJobRequest get;
    get.set_job_id(id);
    v1::Job job;
    grpc::ClientContext get_ctx;
    EXPECT_TRUE(stub_->GetJob(&get_ctx, get, &job).ok());
    return job;
  }
  std::vector<Sample> Scrape(const Daemon& d) {
    const HttpResponse r = HttpGet(d.metrics_port, "/metrics");
    EXPECT_EQ(r.status, 200);
    return ParseMetrics(r.body);
  }
  // Scrapes until `ready` holds (gauges the coordinator refreshes asynchronously, within a
  // second) or `limit` passed; the last scrape either way.
  std::vector<Sample> ScrapeUntil(const Daemon& d,
                                  const std::function<bool(const std::vector<Sample>&)>& ready,
                                  std::chrono::seconds limit) {
    std::vector<Sample> s = Scrape(d);
    for (auto end = std::chrono::steady_clock::now() + limit;
         !ready(s) && std::chrono::steady_clock::now() < end; s = Scrape(d)) {
      std::this_thread::sleep_for(100ms);
    }
    return s;
  }

  dgptq::testing::TempDir tmp_;
  std::string model_, calib_, address_;
  Daemon coordinator_;
  std::vector<Daemon> workers_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

}  // namespace dgptq::observability
