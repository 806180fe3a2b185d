// The command-line flags of a channel's security (issue 6), shared by `dgptq-worker` and the
// client commands (`dgptq submit | watch | status | list | cancel`) so both spell and explain
// them the same way. Header-only: its users link CLI11 and dgptq_grpc_options already.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "common/grpc_security.h"

namespace dgptq {

// --tls-ca, --tls-cert, --tls-key, --tls-server-name into `tls`; --token-file into `token_file`
// (`token_help` says whose token it is and any fallback).
inline void AddChannelSecurityFlags(CLI::App* app, GrpcChannelTls* tls, std::string* token_file,
                                    const std::string& token_help) {
  app->add_option("--tls-ca", tls->ca_file,
                  "PEM CA certificates: connect to the coordinator with TLS");
  app->add_option("--tls-cert", tls->cert_file, "PEM client certificate chain (mutual TLS)");
  app->add_option("--tls-key", tls->key_file, "PEM private key of --tls-cert");
  app->add_option("--tls-server-name", tls->server_name,
                  "name the coordinator's certificate must carry (default: the address's host)");
  app->add_option("--token-file", *token_file, token_help);
}

}  // namespace dgptq
