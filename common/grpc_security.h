// Transport security of every dgptq server and channel (issue 6), in one place: TLS and mutual
// TLS from PEM files, and the bearer token a channel sends on every call. Part of the
// dgptq_grpc_options library (grpc_options.h starts servers and makes channels with it).
//
// Files are read and checked when loaded, so a daemon refuses to start on an unreadable file, a
// file that holds no PEM certificate or key, or a key that does not belong to its certificate,
// with InvalidArgument naming the file (rather than failing every handshake later).
//
// A token travels as "authorization: Bearer <token>" metadata. Over plaintext it is readable by
// anyone on the path: use tokens with TLS outside a trusted network.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace dgptq {

// A server's TLS files. No cert_file: plaintext.
struct GrpcServerTls {
  std::string cert_file;       // PEM certificate chain of the server
  std::string key_file;        // PEM private key of that certificate
  std::string client_ca_file;  // PEM CA certificates; set: mutual TLS, client certificates
                               // required and verified against these
  bool enabled() const { return !cert_file.empty(); }
  // InvalidArgument naming the flag (--tls-cert, --tls-key, --tls-client-ca) when a key or a
  // client CA comes without a certificate, or a certificate without a key.
  absl::Status Validate() const;
};

// A channel's TLS files. No ca_file: plaintext.
struct GrpcChannelTls {
  std::string ca_file;      // PEM CA certificates the server's certificate must chain to
  std::string cert_file;    // PEM client certificate chain (mutual TLS), with key_file
  std::string key_file;     // PEM private key of cert_file
  std::string server_name;  // the name the server certificate must carry; empty: the host of
                            // the address dialled
  bool enabled() const { return !ca_file.empty(); }
  // InvalidArgument naming the flag (--tls-ca, --tls-cert, --tls-key, --tls-server-name) when
  // a certificate, key or server name comes without a CA, or a certificate without its key.
  absl::Status Validate() const;
};

// Loaded credentials of a channel to a dgptq daemon. Default: plaintext, no token.
struct GrpcChannelCredentials {
  std::shared_ptr<grpc::ChannelCredentials> tls;  // null: plaintext
  std::string server_name;                        // TLS target name override; empty: none
  std::string token;                              // bearer token; empty: none sent
};

// Reads and checks the files of `tls`; `token` (checked with CheckBearerToken) is sent on
// every call of the channels made from the result. InvalidArgument naming the file or the
// token's source otherwise.
absl::StatusOr<GrpcChannelCredentials> LoadChannelCredentials(const GrpcChannelTls& tls,
                                                              std::string token);

// Server credentials for `tls`: insecure when it is not enabled; InvalidArgument naming the
// file otherwise.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> LoadServerCredentials(
    const GrpcServerTls& tls);

// The token in the file at `path`, without surrounding white space. InvalidArgument naming the
// file when it cannot be read or the token is not valid (CheckBearerToken).
absl::StatusOr<std::string> ReadBearerTokenFile(const std::string& path);

// OK for a token of 1 to 4096 visible ASCII characters without spaces (what an HTTP/2 header
// value may carry); InvalidArgument naming `source` (a file, an environment variable) otherwise.
absl::Status CheckBearerToken(absl::string_view token, absl::string_view source);

}  // namespace dgptq
