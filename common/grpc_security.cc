#include "common/grpc_security.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace dgptq {
namespace {

constexpr size_t kMaxTokenBytes = 4096;
constexpr std::streamsize kMaxFileBytes = 1 << 20;

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;

// OpenSSL's last error as text (and the queue cleared), for messages.
std::string OpenSslError() {
  const unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (e == 0) return "no PEM data";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

// A regular file of at most kMaxFileBytes (a PEM chain of a few certificates is ~10 KB).
absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  std::error_code ec;
  std::ifstream f(path, std::ios::binary);
  if (!std::filesystem::is_regular_file(path, ec) || !f) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", what, " file '", path, "': not a readable regular file"));
  }
  std::string data(kMaxFileBytes + 1, '\0');
  f.read(data.data(), kMaxFileBytes + 1);
  if (f.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", what, " file '", path, "'"));
  }
  if (f.gcount() > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " file '", path, "' is larger than ", kMaxFileBytes, " bytes"));
  }
  data.resize(f.gcount());
  return data;
}

Bio MemBio(const std::string& pem) { return Bio(BIO_new_mem_buf(pem.data(), pem.size())); }

// The first certificate of `pem` (gRPC checks the rest of a chain in the handshake);
// InvalidArgument naming the file when there is none.
absl::StatusOr<X509Ptr> FirstCertificate(const std::string& pem, const std::string& path,
                                         absl::string_view what) {
  Bio bio = MemBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " file '", path, "' holds no PEM certificate (", OpenSslError(), ")"));
  }
  return cert;
}

// A certificate file and its key: both readable, and the key the certificate's.
absl::Status CheckKeyPair(const std::string& cert_pem, const std::string& cert_file,
                          const std::string& key_pem, const std::string& key_file) {
  DGPTQ_ASSIGN_OR_RETURN(X509Ptr cert, FirstCertificate(cert_pem, cert_file, "certificate"));
  Bio bio = MemBio(key_pem);
  // An encrypted key fails here instead of OpenSSL prompting on the terminal for a passphrase
  // (gRPC cannot use one either).
  auto no_passphrase = [](char*, int, int, void*) { return 0; };
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key file '", key_file, "' holds no unencrypted PEM private key (", OpenSslError(), ")"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "key file '", key_file, "' is not the key of the certificate in '", cert_file, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadCaFile(const std::string& path) {
  DGPTQ_ASSIGN_OR_RETURN(std::string pem, ReadFile(path, "CA certificate"));
  DGPTQ_RETURN_IF_ERROR(FirstCertificate(pem, path, "CA certificate").status());
  return pem;
}

struct KeyPair {
  std::string cert, key;
};

absl::StatusOr<KeyPair> ReadKeyPair(const std::string& cert_file, const std::string& key_file) {
  KeyPair p;
  DGPTQ_ASSIGN_OR_RETURN(p.cert, ReadFile(cert_file, "certificate"));
  DGPTQ_ASSIGN_OR_RETURN(p.key, ReadFile(key_file, "key"));
  DGPTQ_RETURN_IF_ERROR(CheckKeyPair(p.cert, cert_file, p.key, key_file));
  return p;
}

// InvalidArgument "--tls-<flag> needs --tls-<needs>" unless `ok`.
absl::Status Requires(bool ok, absl::string_view flag, absl::string_view needs) {
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("--tls-", flag, " needs --tls-", needs));
}

}  // namespace

absl::Status GrpcServerTls::Validate() const {
  DGPTQ_RETURN_IF_ERROR(Requires(key_file.empty() || enabled(), "key", "cert"));
  DGPTQ_RETURN_IF_ERROR(Requires(client_ca_file.empty() || enabled(), "client-ca", "cert"));
  return Requires(!enabled() || !key_file.empty(), "cert", "key");
}

absl::Status GrpcChannelTls::Validate() const {
  DGPTQ_RETURN_IF_ERROR(Requires(cert_file.empty() || enabled(), "cert", "ca"));
  DGPTQ_RETURN_IF_ERROR(Requires(key_file.empty() || enabled(), "key", "ca"));
  DGPTQ_RETURN_IF_ERROR(Requires(server_name.empty() || enabled(), "server-name", "ca"));
  DGPTQ_RETURN_IF_ERROR(Requires(key_file.empty() || !cert_file.empty(), "key", "cert"));
  return Requires(cert_file.empty() || !key_file.empty(), "cert", "key");
}

absl::StatusOr<GrpcChannelCredentials> LoadChannelCredentials(const GrpcChannelTls& tls,
                                                              std::string token) {
  DGPTQ_RETURN_IF_ERROR(tls.Validate());
  GrpcChannelCredentials c;
  if (!token.empty()) DGPTQ_RETURN_IF_ERROR(CheckBearerToken(token, "the token"));
  c.token = std::move(token);
  if (!tls.enabled()) return c;
  grpc::SslCredentialsOptions o;
  DGPTQ_ASSIGN_OR_RETURN(o.pem_root_certs, ReadCaFile(tls.ca_file));
  if (!tls.cert_file.empty()) {
    DGPTQ_ASSIGN_OR_RETURN(KeyPair pair, ReadKeyPair(tls.cert_file, tls.key_file));
    o.pem_cert_chain = std::move(pair.cert);
    o.pem_private_key = std::move(pair.key);
  }
  c.tls = grpc::SslCredentials(o);
  c.server_name = tls.server_name;
  return c;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> LoadServerCredentials(
    const GrpcServerTls& tls) {
  DGPTQ_RETURN_IF_ERROR(tls.Validate());
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  DGPTQ_ASSIGN_OR_RETURN(KeyPair pair, ReadKeyPair(tls.cert_file, tls.key_file));
  grpc::SslServerCredentialsOptions o(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  o.pem_key_cert_pairs.push_back({std::move(pair.key), std::move(pair.cert)});
  if (!tls.client_ca_file.empty()) {
    DGPTQ_ASSIGN_OR_RETURN(o.pem_root_certs, ReadCaFile(tls.client_ca_file));
    o.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(o);
}

absl::StatusOr<std::string> ReadBearerTokenFile(const std::string& path) {
  DGPTQ_ASSIGN_OR_RETURN(const std::string data, ReadFile(path, "token"));
  std::string token(absl::StripAsciiWhitespace(data));
  DGPTQ_RETURN_IF_ERROR(CheckBearerToken(token, absl::StrCat("token file '", path, "'")));
  return token;
}

absl::Status CheckBearerToken(absl::string_view token, absl::string_view source) {
  if (token.empty() || token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": a token must be 1 to ", kMaxTokenBytes, " characters, got ", token.size()));
  }
  for (char ch : token) {
    if (ch <= ' ' || ch > '~') {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": a token may hold visible ASCII characters only (no spaces or controls)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace dgptq
