// A thin wrapper over sentencepiece::SentencePieceProcessor that exposes only standard
// C++ types. Why it exists: sentencepiece_processor.h declares
// `namespace absl { using std::string_view; }`, which collides with Debian abseil's own
// absl::string_view class, so no translation unit may include both. Only
// sentencepiece_shim.cc includes the sentencepiece header; common/tokenizer.cc uses
// this class and converts its results to absl::Status.
//
// Second reason: Debian's libsentencepiece exports its own copy of protobuf-lite's
// symbols, which interpose on libprotobuf's in any process that links both (the daemons,
// which speak gRPC) and crash protobuf's static initialisation. So the implementation is
// a separate module, libdgptq_sentencepiece.so, loaded on first use with dlopen
// (RTLD_LOCAL | RTLD_DEEPBIND: its symbols stay out of the global scope and it binds to
// its own copies first). No binary links libsentencepiece directly.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dgptq::internal {

// Result of a sentencepiece call: `code` is sentencepiece's util::StatusCode as an
// int (its values mirror absl::StatusCode; 0 is OK), `message` the library's text.
struct SpResult {
  int code = 0;
  std::string message;
  bool ok() const { return code == 0; }
};

// Thread-safe for concurrent const calls after Load (sentencepiece's encoder and
// decoder are const and keep no mutable state). Methods are virtual so that calls go
// through the module's vtable rather than through symbol lookup.
class SentencePieceShim {
 public:
  virtual ~SentencePieceShim() = default;

  // Loads a serialized ModelProto (a tokenizer.model file).
  virtual SpResult Load(const std::string& path) = 0;
  // Encodes `text` as one sentence; no BOS/EOS are added.
  virtual SpResult Encode(std::string_view text, std::vector<int>* ids) const = 0;
  // Decodes ids, each in [0, piece_size()) (the caller filters).
  virtual SpResult Decode(const std::vector<int>& ids, std::string* text) const = 0;

  virtual int piece_size() const = 0;
  virtual int bos_id() const = 0;  // -1 when the model has none
  virtual int eos_id() const = 0;  // -1 when the model has none
};

// A new processor from the module: found at $DGPTQ_SENTENCEPIECE_MODULE, next to the
// executable, in ../lib from it, or where the build put it. Null with `error` set when
// the module cannot be loaded.
std::unique_ptr<SentencePieceShim> NewSentencePieceShim(std::string* error);

// The module's one exported symbol.
extern "C" typedef SentencePieceShim* (*NewSentencePieceFn)();
inline constexpr char kNewSentencePieceSymbol[] = "dgptq_new_sentencepiece";

}  // namespace dgptq::internal
