// The `dgptq submit | watch | status | list | cancel` commands as child processes against a real
// `dgptq-coordinator` child on a loopback port. No worker registers, so jobs stay QUEUED until
// cancelled: enough to check ids, idempotent submission, paging, cancellation and exit codes.
#include <chrono>
#include <csignal>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/client_test_util.h"
#include "tests/subprocess.h"
#include "tests/test_util.h"

namespace dgptq::testing {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
using namespace std::chrono_literals;

std::vector<Json> JsonLines(const std::string& text) {
  std::vector<Json> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    lines.push_back(Json::parse(line));
  }
  return lines;
}

class CliTest : public ::testing::Test {
 protected:
  // One tiny model and calibration file for every test.
  static void SetUpTestSuite() {
    shared_ = new TempDir;
    Outputs outputs(*shared_);
    const Result r = MakeTinyModel(*shared_ / "model", outputs);
    ASSERT_EQ(r.code, kOk) << r.out << r.err;
    std::ofstream(*shared_ / "calib.txt") << "Once upon a time there was a tiny model.\n";
  }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(shared_, nullptr);
    const std::string port_file = dir_ / "port";
    coordinator_ = std::make_unique<Subprocess>(
        std::vector<std::string>{DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--port-file",
                                 port_file},
        dir_ / "coordinator.log");
    const int port = WaitForPortFile(port_file, 20s);
    ASSERT_GT(port, 0) << coordinator_->Log();
    address_ = absl::StrCat("127.0.0.1:", port);
  }

  void TearDown() override {
    coordinator_->Signal(SIGTERM);
    EXPECT_EQ(coordinator_->Wait(20s), 0) << coordinator_->Log();
  }

  // `dgptq <command> --coordinator <ours> args...`.
  Result Dgptq(const std::string& command, std::vector<std::string> args = {}) {
    args.insert(args.begin(), {command, "--coordinator", address_});
    return RunDgptq(args, outputs_);
  }

  std::vector<std::string> SpecArgs() const {
    return {"--model",   model(), "--out",     dir_ / "out", "--calib", *shared_ / "calib.txt",
            "--samples", "4",     "--seq-len", "16"};
  }

  // Submits a valid job and returns its id.
  std::string Submit(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = SpecArgs();
    args.insert(args.end(), extra.begin(), extra.end());
    const Result r = Dgptq("submit", args);
    EXPECT_EQ(r.code, kOk) << r.err;
    return std::string(absl::StripAsciiWhitespace(r.out));
  }

  Json Status(const std::string& id) {
    const Result r = Dgptq("status", {id});
    EXPECT_EQ(r.code, kOk) << r.err;
    return Json::parse(r.out);
  }

  static std::string model() { return *shared_ / "model"; }

  static TempDir* shared_;
  TempDir dir_;
  Outputs outputs_{dir_};
  std::unique_ptr<Subprocess> coordinator_;
  std::string address_;
};

TempDir* CliTest::shared_ = nullptr;

TEST_F(CliTest, SubmitPrintsAnIdAndTheJobIsQueued) {
  const std::string id = Submit();
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(id.find_first_of(" \n"), std::string::npos) << id;
  const Json job = Status(id);
  EXPECT_EQ(job["jobId"], id);
  EXPECT_EQ(job["state"], "JOB_STATE_QUEUED");
  EXPECT_EQ(job["spec"]["modelPath"], model());
  EXPECT_EQ(job["spec"]["calibration"]["samples"], 4);
  // Unset settings travel as the proto's zero values ("0 means the default").
  EXPECT_EQ(job["spec"]["quantization"]["bits"], 0);
  EXPECT_EQ(job["spec"]["numWorkers"], 0);
}

TEST_F(CliTest, SubmitJsonPrintsTheJobWithItsSettings) {
  std::vector<std::string> args = SpecArgs();
  args.insert(args.end(), {"--json", "--bits", "3", "--group-size", "-1", "--act-order",
                           "--workers", "2", "--device-kind", "cpu", "--format",
                           "compressed-tensors", "--asym", "--damp", "0.05"});
  const Result r = Dgptq("submit", args);
  ASSERT_EQ(r.code, kOk) << r.err;
  const Json job = Json::parse(r.out);
  EXPECT_EQ(job["state"], "JOB_STATE_QUEUED");
  const Json& spec = job["spec"];
  EXPECT_EQ(spec["quantization"]["bits"], 3);
  EXPECT_EQ(spec["quantization"]["groupSize"], -1);
  EXPECT_EQ(spec["quantization"]["actOrder"], true);
  EXPECT_EQ(spec["quantization"]["asym"], true);
  EXPECT_DOUBLE_EQ(spec["quantization"]["dampPercent"].get<double>(), 0.05);
  EXPECT_EQ(spec["numWorkers"], 2);
  EXPECT_EQ(spec["workerDeviceKind"], "DEVICE_KIND_CPU");
  EXPECT_EQ(spec["outputFormat"], "OUTPUT_FORMAT_COMPRESSED_TENSORS");
  EXPECT_FALSE(job["requestId"].get<std::string>().empty());  // a UUID the client chose
}

TEST_F(CliTest, TheSameRequestIdGivesTheSameJob) {
  const std::string a = Submit({"--request-id", "req-1"});
  const std::string b = Submit({"--request-id", "req-1"});
  const std::string c = Submit();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(Status(a)["requestId"], "req-1");
  const Result all = Dgptq("list", {"--all"});
  ASSERT_EQ(all.code, kOk) << all.err;
  EXPECT_EQ(Json::parse(all.out)["jobs"].size(), 2u);
}

TEST_F(CliTest, ListPagesReturnEveryJobExactlyOnce) {
  std::set<std::string> submitted;
  for (int i = 0; i < 4; ++i) submitted.insert(Submit());
  ASSERT_EQ(submitted.size(), 4u);

  const Result all = Dgptq("list", {"--page-size", "1", "--all"});
  ASSERT_EQ(all.code, kOk) << all.err;
  const Json listed = Json::parse(all.out);
  std::multiset<std::string> ids;
  for (const Json& job : listed["jobs"]) ids.insert(job["jobId"].get<std::string>());
  EXPECT_EQ(ids, std::multiset<std::string>(submitted.begin(), submitted.end()));
  EXPECT_EQ(listed["nextPageToken"], "");

  const Result page = Dgptq("list", {"--page-size", "1"});
  ASSERT_EQ(page.code, kOk) << page.err;
  const Json first = Json::parse(page.out);
  EXPECT_EQ(first["jobs"].size(), 1u);
  EXPECT_NE(first["nextPageToken"], "");
  const Result second = Dgptq("list", {"--page-size", "1", "--page-token", first["nextPageToken"]});
  ASSERT_EQ(second.code, kOk) << second.err;
  EXPECT_NE(Json::parse(second.out)["jobs"][0]["jobId"], first["jobs"][0]["jobId"]);
}

TEST_F(CliTest, ListFiltersByState) {
  const std::string kept = Submit(), cancelled = Submit();
  ASSERT_EQ(Dgptq("cancel", {cancelled}).code, kOk);
  const Result r = Dgptq("list", {"--state", "cancelled", "--all"});
  ASSERT_EQ(r.code, kOk) << r.err;
  const Json jobs = Json::parse(r.out)["jobs"];
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["jobId"], cancelled);
  const Result both = Dgptq("list", {"--state", "queued", "--state", "CANCELLED"});
  ASSERT_EQ(both.code, kOk) << both.err;
  EXPECT_EQ(Json::parse(both.out)["jobs"].size(), 2u);
}

TEST_F(CliTest, CancelThenWatchExitsThree) {
  const std::string id = Submit();
  const Result cancel = Dgptq("cancel", {id, "--reason", "not today"});
  ASSERT_EQ(cancel.code, kOk) << cancel.err;
  EXPECT_EQ(cancel.out, id + " CANCELLED\n");
  const Json job = Status(id);
  EXPECT_EQ(job["state"], "JOB_STATE_CANCELLED");
  EXPECT_THAT(job["reason"].get<std::string>(), HasSubstr("not today"));

  // Output is not a terminal: one JSON event per line, then the final job.
  const Result watch = Dgptq("watch", {id});
  EXPECT_EQ(watch.code, kCancelled) << watch.err;
  const std::vector<Json> lines = JsonLines(watch.out);
  ASSERT_GE(lines.size(), 2u) << watch.out;
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["index"], std::to_string(i)) << watch.out;  // int64 is a JSON string
  }
  EXPECT_EQ(lines[lines.size() - 2]["stateChange"]["toState"], "JOB_STATE_CANCELLED");
  EXPECT_EQ(lines.back()["jobId"], id);
  EXPECT_EQ(lines.back()["state"], "JOB_STATE_CANCELLED");

  // --from skips the events before it.
  const Result from = Dgptq("watch", {id, "--from", "1"});
  EXPECT_EQ(from.code, kCancelled) << from.err;
  const std::vector<Json> later = JsonLines(from.out);
  ASSERT_EQ(later.size(), lines.size() - 1);
  EXPECT_EQ(later[0]["index"], "1");

  // Cancelling a terminal job returns it unchanged and succeeds.
  EXPECT_EQ(Dgptq("cancel", {id}).code, kOk);
}

TEST_F(CliTest, SubmitWaitExitsThreeWhenCancelledFromAnotherProcess) {
  std::vector<std::string> args = {"submit", "--coordinator", address_};
  for (const std::string& a : SpecArgs()) args.push_back(a);
  args.push_back("--wait");
  std::string out, err;
  auto waiting = StartDgptq(args, outputs_, &out, &err);
  // Not a terminal: the job as JSON first, then its events.
  std::string id;
  for (auto end = std::chrono::steady_clock::now() + 20s;
       id.empty() && std::chrono::steady_clock::now() < end;) {
    const std::string text = ReadAll(out);
    if (text.find('\n') != std::string::npos) {
      id = Json::parse(text.substr(0, text.find('\n')))["jobId"];
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_FALSE(id.empty()) << ReadAll(err);
  ASSERT_EQ(Dgptq("cancel", {id}).code, kOk);
  EXPECT_EQ(waiting->Wait(30s), kCancelled) << ReadAll(err);
  const std::vector<Json> lines = JsonLines(ReadAll(out));  // every line parses
  ASSERT_GE(lines.size(), 3u);
  EXPECT_EQ(lines.front()["state"], "JOB_STATE_QUEUED");
  EXPECT_EQ(lines[1]["index"], "0");
  EXPECT_EQ(lines.back()["state"], "JOB_STATE_CANCELLED");
}

TEST_F(CliTest, WatchExitsFourWhenTheCoordinatorGoesAway) {
  const std::string id = Submit();
  std::string out, err;
  auto watch = StartDgptq({"watch", id, "--coordinator", address_, "--connect-timeout", "1"},
                          outputs_, &out, &err);
  for (auto end = std::chrono::steady_clock::now() + 20s;
       ReadAll(out).find('\n') == std::string::npos && std::chrono::steady_clock::now() < end;) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_NE(ReadAll(out).find('\n'), std::string::npos) << ReadAll(err);
  coordinator_->Signal(SIGTERM);
  EXPECT_EQ(watch->Wait(20s), kUnreachable) << ReadAll(err);
  EXPECT_THAT(ReadAll(err), HasSubstr("UNAVAILABLE"));
}

TEST_F(CliTest, InvalidSubmissionsExitOneWithTheServersMessage) {
  std::vector<std::string> args = SpecArgs();
  args.insert(args.end(), {"--bits", "5"});
  const Result bits = Dgptq("submit", args);
  EXPECT_EQ(bits.code, kFailed);
  EXPECT_THAT(bits.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(bits.err, HasSubstr("bits"));
  EXPECT_EQ(bits.out, "");

  const std::string missing = dir_ / "no-such-model";
  const Result no_model = Dgptq(
      "submit", {"--model", missing, "--out", dir_ / "out", "--calib", *shared_ / "calib.txt"});
  EXPECT_EQ(no_model.code, kFailed);
  EXPECT_THAT(no_model.err, HasSubstr("NOT_FOUND"));  // coordinator.proto: missing model
  EXPECT_THAT(no_model.err, HasSubstr(missing));

  const Result calib =
      Dgptq("submit", {"--model", model(), "--out", dir_ / "out", "--calib", dir_ / "no.txt"});
  EXPECT_EQ(calib.code, kFailed);
  EXPECT_THAT(calib.err, HasSubstr("no.txt"));
}

TEST_F(CliTest, UnknownJobsExitOne) {
  for (const char* command : {"status", "watch", "cancel"}) {
    const Result r = Dgptq(command, {"no-such-job"});
    EXPECT_EQ(r.code, kFailed) << command;
    EXPECT_THAT(r.err, HasSubstr("NOT_FOUND")) << command;
  }
}

TEST_F(CliTest, TheAddressComesFromTheEnvironment) {
  const std::string id = Submit();
  Subprocess p(
      {"/usr/bin/env", absl::StrCat("DGPTQ_COORDINATOR=", address_), DGPTQ_CLI_BIN, "status", id},
      dir_ / "env.log");
  ASSERT_EQ(p.Wait(30s), kOk) << p.Log();
  EXPECT_EQ(Json::parse(p.Log())["jobId"], id);
}

TEST(CliUsageTest, BadFlagsExitTwo) {
  TempDir dir;
  Outputs outputs(dir);
  const std::vector<std::vector<std::string>> cases = {
      {"submit", "--out", "o"},
      {"submit", "--model", "m", "--out", "o", "--sym", "--asym"},
      {"submit", "--model", "m", "--out", "o", "--format", "onnx"},
      {"submit", "--model", "m", "--out", "o", "--device-kind", "tpu"},
      {"submit", "--model", "m", "--out", "o", "--bits", "four"},
      {"watch"},
      {"watch", "j-1", "--from", "-1"},
      {"status", "j-1", "--connect-timeout", "0"},
      {"list", "--state", "paused"},
      {"list", "--page-size", "-1"},
      {"cancel"},
      {"cancel", "j-1", "--no-such-flag"},
  };
  for (const auto& args : cases) {
    const Result r = RunDgptq(args, outputs);
    EXPECT_EQ(r.code, kUsage) << args[0] << " " << args.back() << ": " << r.err;
  }
}

TEST(CliUnreachableTest, ANobodyListeningAddressExitsFourQuickly) {
  TempDir dir;
  Outputs outputs(dir);
  const std::string address = absl::StrCat("127.0.0.1:", UnusedPort());
  // The default connect deadline (5 s), then a shorter one for every other command.
  const std::vector<std::vector<std::string>> cases = {
      {"status", "j-1"},
      {"watch", "j-1", "--connect-timeout", "1"},
      {"list", "--connect-timeout", "1"},
      {"cancel", "j-1", "--connect-timeout", "1"},
      {"submit", "--model", "m", "--out", "o", "--wait", "--connect-timeout", "1"},
  };
  for (std::vector<std::string> args : cases) {
    const bool short_timeout = args.back() == "1";
    args.insert(args.begin() + 1, {"--coordinator", address});
    const auto start = std::chrono::steady_clock::now();
    const Result r = RunDgptq(args, outputs);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.code, kUnreachable) << args[0] << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE")) << args[0];
    EXPECT_THAT(r.err, HasSubstr(address)) << args[0];
    EXPECT_LT(took, short_timeout ? 4s : 10s) << args[0];
  }
}

}  // namespace
}  // namespace dgptq::testing
