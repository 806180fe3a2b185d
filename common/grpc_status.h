// Conversion between absl::Status (used everywhere inside dgptq) and grpc::Status (used only at
// the service edge). This is the only file in common/ that knows gRPC; it lives in its own
// library, dgptq_grpc_status, so dgptq_common does not depend on gRPC.
//
// Codes map one to one: absl::StatusCode and grpc::StatusCode share the canonical numbering
// (google.rpc.Code), so a client sees exactly the code the core returned, with its retry meaning.
// Payloads are not carried.
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace dgptq {

// Longest error message sent to a client, in bytes. Longer messages are cut and end with
// kGrpcMessageTruncationMarker, so the whole message, marker included, is at most this long.
inline constexpr size_t kMaxGrpcStatusMessageBytes = 4096;
inline constexpr char kGrpcMessageTruncationMarker[] = "... [truncated]";

// Converts a status for returning from an RPC handler. The code is kept; the message is capped at
// kMaxGrpcStatusMessageBytes (cut at a UTF-8 character boundary). OK maps to grpc::Status::OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Converts the status of a client call. The code is kept; an unknown numeric code (outside the
// canonical 0..16) becomes UNKNOWN. The message is kept as received.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace dgptq
