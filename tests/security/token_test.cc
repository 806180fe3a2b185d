// Bearer tokens against a real `dgptq-coordinator` with --client-token-file and
// --worker-token-file: every client and worker RPC without a token, or with a wrong one, is
// UNAUTHENTICATED; the other role's token is PERMISSION_DENIED; the right one is let through;
// health stays open. The `dgptq` CLI sends --token-file or $DGPTQ_TOKEN. Also TokenAuth and the
// token checks on their own.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>

#include "common/grpc_options.h"
#include "coordinator/auth.h"
#include "dgptq/v1/coordinator.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/client/client_test_util.h"
#include "tests/security/security_test_util.h"

namespace dgptq::testing {
namespace {

using coordinator::Role;
using coordinator::TokenAuth;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr char kClientToken[] = "client-token-0123456789";
constexpr char kWorkerToken[] = "worker-token-9876543210";

TEST(TokenAuthTest, ChecksTheRoleAndTheToken) {
  const TokenAuth auth(kClientToken, kWorkerToken);
  const std::string client = absl::StrCat("Bearer ", kClientToken);
  const std::string worker = absl::StrCat("Bearer ", kWorkerToken);
  EXPECT_TRUE(auth.Check(Role::kClient, client).ok());
  EXPECT_TRUE(auth.Check(Role::kWorker, worker).ok());
  EXPECT_TRUE(auth.Check(Role::kClient, absl::StrCat("bearer ", kClientToken)).ok());
  EXPECT_TRUE(absl::IsPermissionDenied(auth.Check(Role::kClient, worker)));
  EXPECT_TRUE(absl::IsPermissionDenied(auth.Check(Role::kWorker, client)));
  for (const std::string& bad :
       std::vector<std::string>{"", "Bearer", "Bearer ", "Basic abc", kClientToken, client + "x",
                                client.substr(0, client.size() - 1)}) {
    EXPECT_TRUE(absl::IsUnauthenticated(auth.Check(Role::kClient, bad))) << bad;
  }
  EXPECT_TRUE(absl::IsUnauthenticated(auth.Check(Role::kClient, std::nullopt)));
  // A role without a token needs none.
  const TokenAuth clients_only(kClientToken, "");
  EXPECT_TRUE(clients_only.Check(Role::kWorker, std::nullopt).ok());
  EXPECT_TRUE(absl::IsUnauthenticated(clients_only.Check(Role::kClient, std::nullopt)));
}

TEST(TokenAuthTest, TokenFilesAndValuesAreChecked) {
  TempDir dir;
  WriteToken(dir / "t", "  abc.DEF-123_~+/=  ");
  const absl::StatusOr<std::string> token = ReadBearerTokenFile(dir / "t");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "abc.DEF-123_~+/=");
  WriteToken(dir / "space", "two words");
  EXPECT_THAT(ReadBearerTokenFile(dir / "space").status().message(),
              HasSubstr("token file '" + (dir / "space") + "'"));
  WriteToken(dir / "empty", "");
  EXPECT_TRUE(absl::IsInvalidArgument(ReadBearerTokenFile(dir / "empty").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ReadBearerTokenFile(dir / "missing").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ReadBearerTokenFile(dir.path()).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(CheckBearerToken("a\nb", "$DGPTQ_TOKEN")));
}

using Call = std::function<grpc::Status(grpc::ClientContext*)>;

// A unary RPC of `stub` on an empty request.
template <typename Req, typename Resp>
Call Unary(v1::Coordinator::Stub* stub,
           grpc::Status (v1::Coordinator::Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*)) {
  return [stub, rpc](grpc::ClientContext* ctx) {
    Resp resp;
    return (stub->*rpc)(ctx, Req(), &resp);
  };
}

class TokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteToken(dir_ / "client.token", kClientToken);
    WriteToken(dir_ / "worker.token", kWorkerToken);
    coordinator_ = StartCoordinator(dir_, "coordinator",
                                    {"--client-token-file", dir_ / "client.token",
                                     "--worker-token-file", dir_ / "worker.token"});
    ASSERT_GT(coordinator_.port, 0) << coordinator_.proc->Log();
  }
  void TearDown() override { unsetenv("DGPTQ_TOKEN"); }

  // A stub whose channel sends `token` on every call (none when empty).
  std::unique_ptr<v1::Coordinator::Stub> Connect(const std::string& token) {
    GrpcChannelCredentials credentials;
    credentials.token = token;
    return v1::Coordinator::NewStub(MakeGrpcChannel(coordinator_.address(), credentials));
  }

  // The code of every client RPC (SubmitJob, GetJob, ListJobs, WatchJob, CancelJob) or every
  // worker RPC (RegisterWorker, Heartbeat, Control) with `token`, on empty requests.
  std::vector<grpc::StatusCode> Codes(Role role, const std::string& token) {
    using Stub = v1::Coordinator::Stub;
    auto stub = Connect(token);
    std::vector<Call> calls;
    if (role == Role::kClient) {
      calls = {Unary(stub.get(), &Stub::SubmitJob), Unary(stub.get(), &Stub::GetJob),
               Unary(stub.get(), &Stub::ListJobs),
               [&](grpc::ClientContext* c) { return stub->WatchJob(c, {})->Finish(); },
               Unary(stub.get(), &Stub::CancelJob)};
    } else {
      calls = {Unary(stub.get(), &Stub::RegisterWorker), Unary(stub.get(), &Stub::Heartbeat),
               [&](grpc::ClientContext* c) {
                 auto stream = stub->Control(c);
                 stream->WritesDone();
                 return stream->Finish();
               }};
    }
    std::vector<grpc::StatusCode> codes;
    for (const Call& call : calls) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 10s);
      codes.push_back(call(&ctx).error_code());
    }
    return codes;
  }

  TempDir dir_;
  Outputs outputs_{dir_};
  Coordinator coordinator_;
};

MATCHER_P(AllAre, code, "") {
  for (grpc::StatusCode c : arg) {
    if (c != code) return false;
  }
  return !arg.empty();
}

TEST_F(TokenTest, MissingOrWrongTokensAreUnauthenticated) {
  using grpc::StatusCode;
  for (Role role : {Role::kClient, Role::kWorker}) {
    EXPECT_THAT(Codes(role, ""), AllAre(StatusCode::UNAUTHENTICATED));
    EXPECT_THAT(Codes(role, "not-the-token"), AllAre(StatusCode::UNAUTHENTICATED));
  }
}

TEST_F(TokenTest, TheOtherRolesTokenIsPermissionDenied) {
  using grpc::StatusCode;
  EXPECT_THAT(Codes(Role::kClient, kWorkerToken), AllAre(StatusCode::PERMISSION_DENIED));
  EXPECT_THAT(Codes(Role::kWorker, kClientToken), AllAre(StatusCode::PERMISSION_DENIED));
}

TEST_F(TokenTest, TheRightTokenReachesTheHandlers) {
  using grpc::StatusCode;
  // Empty requests: the handlers' own answers, past authentication.
  EXPECT_EQ(
      Codes(Role::kClient, kClientToken),
      (std::vector<StatusCode>{StatusCode::INVALID_ARGUMENT, StatusCode::NOT_FOUND, StatusCode::OK,
                               StatusCode::NOT_FOUND, StatusCode::NOT_FOUND}));
  EXPECT_EQ(
      Codes(Role::kWorker, kWorkerToken),
      (std::vector<StatusCode>{StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::CANCELLED}));
}

TEST_F(TokenTest, HealthNeedsNoToken) {
  auto health = grpc::health::v1::Health::NewStub(MakeGrpcChannel(coordinator_.address()));
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  const grpc::Status st = health->Check(&ctx, {}, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(TokenTest, CliSendsTheTokenFromItsFileOrTheEnvironment) {
  auto list = [&](std::vector<std::string> flags) {
    flags.insert(flags.begin(), {"list", "--coordinator", coordinator_.address(), "--json"});
    return RunDgptq(flags, outputs_);
  };
  const Result none = list({});
  EXPECT_EQ(none.code, kFailed);
  EXPECT_THAT(none.err, HasSubstr("UNAUTHENTICATED"));
  const Result file = list({"--token-file", dir_ / "client.token"});
  EXPECT_EQ(file.code, kOk) << file.err;
  const Result worker = list({"--token-file", dir_ / "worker.token"});
  EXPECT_EQ(worker.code, kFailed);
  EXPECT_THAT(worker.err, HasSubstr("PERMISSION_DENIED"));

  setenv("DGPTQ_TOKEN", kClientToken, 1);
  const Result env = list({});
  EXPECT_EQ(env.code, kOk) << env.err;
  // --token-file wins over the environment.
  const Result both = list({"--token-file", dir_ / "worker.token"});
  EXPECT_EQ(both.code, kFailed);
  setenv("DGPTQ_TOKEN", "has space", 1);
  EXPECT_EQ(list({}).code, kUsage);
}

TEST_F(TokenTest, TheSameTokenForBothRolesIsRefused) {
  WriteToken(dir_ / "same.token", kClientToken);
  Subprocess p(
      {DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "",
       "--client-token-file", dir_ / "client.token", "--worker-token-file", dir_ / "same.token"},
      dir_ / "same.log");
  EXPECT_EQ(p.Wait(20s), kUsage) << p.Log();
  EXPECT_THAT(p.Log(), HasSubstr("hold the same token"));
}

}  // namespace
}  // namespace dgptq::testing
