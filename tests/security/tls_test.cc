// TLS and mutual TLS between the real `dgptq` client commands, `dgptq-worker` and
// `dgptq-coordinator` (child processes), with certificates the openssl CLI makes for the suite:
// a TLS client works and a plaintext one cannot reach a TLS coordinator (exit 4); with mutual
// TLS a client without a certificate, or with one from an untrusted CA, is refused; a worker
// over mutual TLS with a token runs a job end to end; unusable files stop the daemons with
// exit code 2 and a message naming the file.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/client_test_util.h"
#include "tests/security/security_test_util.h"

namespace dgptq::testing {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = new TempDir;
    const std::string error = MakePki(pki_->path());
    if (!error.empty()) {
      delete pki_;
      pki_ = nullptr;
      FAIL() << error;
    }
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(pki_, nullptr); }
  void TearDown() override {
    if (HasFailure() && coordinator_.proc) {
      std::printf("--- coordinator log:\n%s\n", coordinator_.proc->Log().c_str());
    }
  }

  static std::string Pki(const std::string& name) { return *pki_ / name; }
  std::vector<std::string> ServerTls() const {
    return {"--tls-cert", Pki("server.pem"), "--tls-key", Pki("server.key")};
  }
  std::vector<std::string> MutualTls() const {
    std::vector<std::string> flags = ServerTls();
    flags.insert(flags.end(), {"--tls-client-ca", Pki("ca.pem")});
    return flags;
  }
  void Start(const std::vector<std::string>& flags) {
    coordinator_ = StartCoordinator(dir_, "coordinator", flags);
    ASSERT_GT(coordinator_.port, 0) << coordinator_.proc->Log();
  }
  // `dgptq list` against the coordinator with `flags`; a short connect timeout, since a refused
  // handshake looks like an unreachable coordinator.
  Result List(std::vector<std::string> flags) {
    flags.insert(flags.begin(), {"list", "--coordinator", coordinator_.address(),
                                 "--connect-timeout", "2", "--json"});
    return RunDgptq(flags, outputs_);
  }

  static TempDir* pki_;
  TempDir dir_;
  Outputs outputs_{dir_};
  Coordinator coordinator_;
};

TempDir* TlsTest::pki_ = nullptr;

TEST_F(TlsTest, TlsClientWorksAndPlaintextClientCannotConnect) {
  Start(ServerTls());
  const Result tls = List({"--tls-ca", Pki("ca.pem")});
  EXPECT_EQ(tls.code, kOk) << tls.err;
  EXPECT_THAT(tls.out, HasSubstr("{"));
  // The certificate names localhost too: the override checks that name instead of 127.0.0.1.
  const Result named = List({"--tls-ca", Pki("ca.pem"), "--tls-server-name", "localhost"});
  EXPECT_EQ(named.code, kOk) << named.err;

  const Result plain = List({});
  EXPECT_EQ(plain.code, kUnreachable) << plain.err;
  // A CA that did not sign the server's certificate: the client refuses the server.
  const Result rogue = List({"--tls-ca", Pki("rogue-ca.pem")});
  EXPECT_EQ(rogue.code, kUnreachable) << rogue.err;
  const Result wrong_name = List({"--tls-ca", Pki("ca.pem"), "--tls-server-name", "other"});
  EXPECT_EQ(wrong_name.code, kUnreachable) << wrong_name.err;
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutATrustedCertificate) {
  Start(MutualTls());
  const Result good = List(
      {"--tls-ca", Pki("ca.pem"), "--tls-cert", Pki("client.pem"), "--tls-key", Pki("client.key")});
  EXPECT_EQ(good.code, kOk) << good.err;
  const Result none = List({"--tls-ca", Pki("ca.pem")});
  EXPECT_EQ(none.code, kUnreachable) << none.err;
  const Result rogue = List({"--tls-ca", Pki("ca.pem"), "--tls-cert", Pki("rogue-client.pem"),
                             "--tls-key", Pki("rogue-client.key")});
  EXPECT_EQ(rogue.code, kUnreachable) << rogue.err;
  const Result plain = List({});
  EXPECT_EQ(plain.code, kUnreachable) << plain.err;
}

TEST_F(TlsTest, WorkerOverMutualTlsWithATokenRunsAJob) {
  const std::string model = dir_ / "model", calib = dir_ / "calib.txt";
  const Result made = MakeTinyModel(model, outputs_);
  ASSERT_EQ(made.code, kOk) << made.out << made.err;
  std::ofstream text(calib);
  for (int i = 0; i < 50; ++i) text << "Line " << i * 7 << ": the quick brown fox.\n";
  text.close();
  WriteToken(dir_ / "client.token", "client-secret");
  WriteToken(dir_ / "worker.token", "worker-secret");
  std::vector<std::string> flags = MutualTls();
  flags.insert(flags.end(), {"--client-token-file", dir_ / "client.token", "--worker-token-file",
                             dir_ / "worker.token", "--heartbeat-interval", "0.5"});
  Start(flags);

  Subprocess worker(
      {DGPTQ_WORKER_BIN, "--coordinator", coordinator_.address(), "--name", "w0", "--threads", "1",
       "--listen", "", "--metrics-listen", "", "--tls-ca", Pki("ca.pem"), "--tls-cert",
       Pki("client.pem"), "--tls-key", Pki("client.key"), "--token-file", dir_ / "worker.token"},
      dir_ / "worker.log");
  const Result job = RunDgptq({"submit",
                               "--coordinator",
                               coordinator_.address(),
                               "--tls-ca",
                               Pki("ca.pem"),
                               "--tls-cert",
                               Pki("client.pem"),
                               "--tls-key",
                               Pki("client.key"),
                               "--token-file",
                               dir_ / "client.token",
                               "--model",
                               model,
                               "--out",
                               dir_ / "out",
                               "--calib",
                               calib,
                               "--samples",
                               "4",
                               "--seq-len",
                               "16",
                               "--group-size",
                               "32",
                               "--wait",
                               "--json"},
                              outputs_);
  EXPECT_EQ(job.code, kOk) << job.err << job.out << "\n--- worker log:\n" << worker.Log();
  EXPECT_THAT(job.out, HasSubstr("JOB_STATE_SUCCEEDED"));
  EXPECT_TRUE(std::filesystem::exists(dir_ / "out/config.json"));
  worker.Signal(SIGTERM);
  EXPECT_EQ(worker.Wait(20s), 0) << worker.Log();
}

// Runs `argv` to its exit (bounded) and returns the code; its log in `*log`.
int RunToExit(const TempDir& dir, std::vector<std::string> argv, std::string* log) {
  static int n = 0;
  Subprocess p(std::move(argv), dir / absl::StrCat("run-", ++n, ".log"));
  const int code = p.Wait(20s);
  *log = p.Log();
  return code;
}

TEST_F(TlsTest, UnusableFilesExitTwoNamingTheFile) {
  std::string log;
  const std::string missing = dir_ / "missing.pem";
  auto coordinator = [&](std::vector<std::string> flags) {
    flags.insert(flags.begin(),
                 {DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", ""});
    return RunToExit(dir_, flags, &log);
  };
  EXPECT_EQ(coordinator({"--tls-cert", missing, "--tls-key", Pki("server.key")}), kUsage);
  EXPECT_THAT(log, HasSubstr("cannot read certificate file '" + missing + "'"));
  EXPECT_EQ(coordinator({"--tls-cert", Pki("server.pem"), "--tls-key", Pki("client.key")}), kUsage);
  EXPECT_THAT(log, HasSubstr("key file '" + Pki("client.key") +
                             "' is not the key of the certificate in '" + Pki("server.pem")));
  EXPECT_EQ(coordinator({"--tls-cert", Pki("server.key"), "--tls-key", Pki("server.key")}), kUsage);
  EXPECT_THAT(log, HasSubstr("'" + Pki("server.key") + "' holds no PEM certificate"));
  EXPECT_EQ(coordinator({"--tls-key", Pki("server.key")}), kUsage);
  EXPECT_THAT(log, HasSubstr("--tls-key needs --tls-cert"));
  EXPECT_EQ(coordinator({"--client-token-file", missing}), kUsage);
  EXPECT_THAT(log, HasSubstr("cannot read token file '" + missing + "'"));

  EXPECT_EQ(RunToExit(dir_,
                      {DGPTQ_WORKER_BIN, "--coordinator", "127.0.0.1:1", "--listen", "",
                       "--metrics-listen", "", "--tls-ca", missing},
                      &log),
            kUsage);
  EXPECT_THAT(log, HasSubstr("cannot read CA certificate file '" + missing + "'"));

  const Result cli = RunDgptq({"list", "--coordinator", "127.0.0.1:1", "--tls-ca", Pki("ca.pem"),
                               "--tls-cert", Pki("client.pem"), "--tls-key", missing},
                              outputs_);
  EXPECT_EQ(cli.code, kUsage);
  EXPECT_THAT(cli.err, HasSubstr("cannot read key file '" + missing + "'"));
}

}  // namespace
}  // namespace dgptq::testing
