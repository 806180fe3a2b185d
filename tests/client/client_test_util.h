// Helpers shared by the client tests (and tests/security): the `dgptq` client commands as child
// processes (the including target defines DGPTQ_CLI_BIN, the path of `dgptq`), and a free port.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/subprocess.h"
#include "tests/test_util.h"

namespace dgptq::testing {

// Exit codes of the client commands (worker/cli/commands.h).
inline constexpr int kOk = 0, kFailed = 1, kUsage = 2, kCancelled = 3, kUnreachable = 4;

struct Result {
  int code = -1;
  std::string out, err;
};

inline std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Output files of child processes, unique per call.
class Outputs {
 public:
  explicit Outputs(const TempDir& dir) : dir_(dir) {}
  std::pair<std::string, std::string> Next() {
    ++n_;
    return {dir_ / absl::StrCat("out-", n_), dir_ / absl::StrCat("err-", n_)};
  }

 private:
  const TempDir& dir_;
  int n_ = 0;
};

// `dgptq args...` with stdout and stderr kept apart (the shell wrapper moves stderr to a file).
inline std::unique_ptr<Subprocess> StartDgptq(const std::vector<std::string>& args,
                                              Outputs& outputs, std::string* out_path,
                                              std::string* err_path) {
  std::tie(*out_path, *err_path) = outputs.Next();
  std::vector<std::string> argv = {"/bin/sh", "-c",      "e=$1; shift; exec \"$@\" 2>\"$e\"",
                                   "sh",      *err_path, DGPTQ_CLI_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<Subprocess>(argv, *out_path);
}

inline Result RunDgptq(const std::vector<std::string>& args, Outputs& outputs) {
  std::string out, err;
  auto p = StartDgptq(args, outputs, &out, &err);
  Result r;
  r.code = p->Wait(std::chrono::seconds(60));
  r.out = ReadAll(out);
  r.err = ReadAll(err);
  return r;
}

// `dgptq make-model`: a two-layer Llama (hidden 64, 4 heads / 2 KV heads, vocab 300) at `dir`.
inline Result MakeTinyModel(const std::string& dir, Outputs& outputs) {
  return RunDgptq({"make-model", "--arch", "llama", "--out", dir, "--hidden", "64", "--layers", "2",
                   "--heads", "4", "--kv-heads", "2", "--intermediate", "128", "--vocab", "300"},
                  outputs);
}

// A loopback TCP port that was free a moment ago (bound to port 0, then closed): an address
// nobody listens on.
inline int UnusedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) close(fd);
    return 1;  // tcpmux: nothing listens there either
  }
  close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace dgptq::testing
