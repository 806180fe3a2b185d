#include "common/grpc_status.h"

#include <string>

#include "absl/strings/string_view.h"

namespace dgptq {
namespace {

// Both enums follow google.rpc.Code; 16 (UNAUTHENTICATED) is the last canonical code.
constexpr int kMaxCanonicalCode = 16;

// Cuts `message` to at most kMaxGrpcStatusMessageBytes, marker included. The cut backs off to a
// UTF-8 lead byte so the client never receives a broken character.
std::string CapMessage(absl::string_view message) {
  if (message.size() <= kMaxGrpcStatusMessageBytes) return std::string(message);
  constexpr absl::string_view kMarker = kGrpcMessageTruncationMarker;
  size_t cut = kMaxGrpcStatusMessageBytes - kMarker.size();
  while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut;
  std::string capped(message.substr(0, cut));
  capped.append(kMarker.data(), kMarker.size());
  return capped;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), CapMessage(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const int code = static_cast<int>(status.error_code());
  if (code < 0 || code > kMaxCanonicalCode) {
    return absl::Status(absl::StatusCode::kUnknown, status.error_message());
  }
  return absl::Status(static_cast<absl::StatusCode>(code), status.error_message());
}

}  // namespace dgptq
