#include "common/grpc_status.h"

#include <string>

#include "gtest/gtest.h"

namespace dgptq {
namespace {

constexpr absl::StatusCode kAllCodes[] = {
    absl::StatusCode::kOk,
    absl::StatusCode::kCancelled,
    absl::StatusCode::kUnknown,
    absl::StatusCode::kInvalidArgument,
    absl::StatusCode::kDeadlineExceeded,
    absl::StatusCode::kNotFound,
    absl::StatusCode::kAlreadyExists,
    absl::StatusCode::kPermissionDenied,
    absl::StatusCode::kResourceExhausted,
    absl::StatusCode::kFailedPrecondition,
    absl::StatusCode::kAborted,
    absl::StatusCode::kOutOfRange,
    absl::StatusCode::kUnimplemented,
    absl::StatusCode::kInternal,
    absl::StatusCode::kUnavailable,
    absl::StatusCode::kDataLoss,
    absl::StatusCode::kUnauthenticated,
};

TEST(GrpcStatusTest, EveryCodeRoundTripsOneToOne) {
  for (absl::StatusCode code : kAllCodes) {
    const std::string message =
        code == absl::StatusCode::kOk ? "" : "why: " + std::to_string(static_cast<int>(code));
    const absl::Status original(code, message);
    const grpc::Status wire = ToGrpcStatus(original);
    EXPECT_EQ(static_cast<int>(wire.error_code()), static_cast<int>(code));
    EXPECT_EQ(wire.error_message(), message);
    EXPECT_EQ(FromGrpcStatus(wire), original) << absl::StatusCodeToString(code);
  }
}

TEST(GrpcStatusTest, NamedCodesMatch) {
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::FailedPreconditionError("x")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(GrpcStatusTest, UnknownWireCodeBecomesUnknown) {
  const absl::Status s = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "odd"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "odd");
}

TEST(GrpcStatusTest, ShortMessageIsKept) {
  const std::string msg(kMaxGrpcStatusMessageBytes, 'a');
  EXPECT_EQ(ToGrpcStatus(absl::InternalError(msg)).error_message(), msg);
}

TEST(GrpcStatusTest, LongMessageIsCappedWithMarker) {
  const std::string msg(100000, 'b');
  const grpc::Status wire = ToGrpcStatus(absl::InvalidArgumentError(msg));
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(wire.error_message().size(), kMaxGrpcStatusMessageBytes);
  EXPECT_EQ(wire.error_message().substr(0, 100), msg.substr(0, 100));
  const std::string marker = kGrpcMessageTruncationMarker;
  EXPECT_EQ(wire.error_message().substr(wire.error_message().size() - marker.size()), marker);
}

TEST(GrpcStatusTest, CapNeverSplitsAUtf8Character) {
  // "é" is two bytes; with an odd prefix the naive cut would land inside one.
  std::string msg = "x";
  while (msg.size() < 3 * kMaxGrpcStatusMessageBytes) msg += "\xC3\xA9";
  const std::string out = ToGrpcStatus(absl::InternalError(msg)).error_message();
  ASSERT_LE(out.size(), kMaxGrpcStatusMessageBytes);
  const std::string marker = kGrpcMessageTruncationMarker;
  const std::string body = out.substr(0, out.size() - marker.size());
  EXPECT_EQ(msg.compare(0, body.size(), body), 0);
  // The body ends on a whole character: the next byte of the original is a lead byte.
  EXPECT_NE(static_cast<unsigned char>(msg[body.size()]) & 0xC0, 0x80);
}

}  // namespace
}  // namespace dgptq
