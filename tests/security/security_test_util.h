// Helpers of the security tests: a small PKI made with the openssl CLI at test time, token files,
// and a real `dgptq-coordinator` as a child process with extra flags.
#pragma once

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/cluster_util.h"
#include "tests/subprocess.h"
#include "tests/test_util.h"

namespace dgptq::testing {

// Under `dir`: ca.pem (trusted CA) signing server.pem/server.key (SAN DNS:localhost and
// IP:127.0.0.1) and client.pem/client.key; rogue-ca.pem signing rogue-client.pem/.key. EC P-256
// keys, valid for a day. Returns "" or openssl's output on failure.
inline std::string MakePki(const std::string& dir) {
  const std::string script = absl::StrCat(R"(set -e
cd ")",
                                          dir, R"("
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {  # ca NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 1 -subj "/CN=$2"
}
leaf() {  # leaf NAME CA CN EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$3"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
      -out "$1.pem" -days 1 -extfile "$1.ext" 2>/dev/null
}
ca ca "dgptq test CA"
ca rogue-ca "dgptq rogue CA"
leaf server ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf client ca "dgptq client" "extendedKeyUsage=clientAuth"
leaf rogue-client rogue-ca "dgptq client" "extendedKeyUsage=clientAuth"
)");
  const std::string log = dir + "/openssl.log";
  const std::string cmd = absl::StrCat("/bin/sh '", dir, "/pki.sh' > '", log, "' 2>&1");
  std::ofstream(dir + "/pki.sh") << script;
  if (std::system(cmd.c_str()) == 0) return "";
  std::ifstream f(log);
  return absl::StrCat("openssl failed: ", std::string(std::istreambuf_iterator<char>(f), {}));
}

// Writes `token` (and a newline, as editors do) to `path`.
inline void WriteToken(const std::string& path, const std::string& token) {
  std::ofstream(path) << token << "\n";
}

// A `dgptq-coordinator` on 127.0.0.1 with `extra` flags; port 0 when it did not start.
using Coordinator = Daemon;

inline Coordinator StartCoordinator(const TempDir& dir, const std::string& name,
                                    const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {DGPTQ_COORDINATOR_BIN};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return StartDaemon(argv, dir.path(), name);
}

}  // namespace dgptq::testing
