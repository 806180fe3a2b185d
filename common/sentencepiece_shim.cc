// Loads libdgptq_sentencepiece.so (see sentencepiece_shim.h). No abseil header here.
#include "common/sentencepiece_shim.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

#ifndef DGPTQ_SENTENCEPIECE_MODULE
#define DGPTQ_SENTENCEPIECE_MODULE ""
#endif

namespace dgptq::internal {
namespace {

constexpr char kModuleName[] = "libdgptq_sentencepiece.so";

std::string ExeDir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string p(buf, static_cast<size_t>(n));
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? "" : p.substr(0, slash);
}

NewSentencePieceFn LoadModule(std::string* error) {
  static std::once_flag once;
  static NewSentencePieceFn fn = nullptr;
  static std::string load_error;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("DGPTQ_SENTENCEPIECE_MODULE")) candidates.push_back(env);
    const std::string dir = ExeDir();
    if (!dir.empty()) {
      candidates.push_back(dir + "/" + kModuleName);
      candidates.push_back(dir + "/../lib/" + kModuleName);
    }
    if (DGPTQ_SENTENCEPIECE_MODULE[0] != '\0') candidates.push_back(DGPTQ_SENTENCEPIECE_MODULE);
    for (const std::string& path : candidates) {
      if (::access(path.c_str(), R_OK) != 0) continue;
      void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (h == nullptr) {
        load_error = std::string("cannot load ") + path + ": " + ::dlerror();
        continue;
      }
      fn = reinterpret_cast<NewSentencePieceFn>(::dlsym(h, kNewSentencePieceSymbol));
      if (fn != nullptr) return;
      load_error = path + " lacks " + kNewSentencePieceSymbol;
    }
    if (load_error.empty()) {
      load_error = std::string(kModuleName) +
                   " not found (next to the executable, in ../lib, or at "
                   "$DGPTQ_SENTENCEPIECE_MODULE); it is needed for tokenizer.model files";
    }
  });
  if (fn == nullptr && error != nullptr) *error = load_error;
  return fn;
}

}  // namespace

std::unique_ptr<SentencePieceShim> NewSentencePieceShim(std::string* error) {
  NewSentencePieceFn fn = LoadModule(error);
  if (fn == nullptr) return nullptr;
  return std::unique_ptr<SentencePieceShim>(fn());
}

}  // namespace dgptq::internal
