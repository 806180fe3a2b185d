// libdgptq_sentencepiece.so: the SentencePieceShim over libsentencepiece, loaded with
// dlopen (see sentencepiece_shim.h). No abseil header may be included here.
#include <sentencepiece_processor.h>

#include "common/sentencepiece_shim.h"

namespace dgptq::internal {
namespace {

SpResult FromSp(const sentencepiece::util::Status& s) {
  if (s.ok()) return {};
  return SpResult{static_cast<int>(s.code()), s.message() == nullptr ? "" : s.message()};
}

class Processor final : public SentencePieceShim {
 public:
  SpResult Load(const std::string& path) override { return FromSp(sp_.Load(path)); }
  SpResult Encode(std::string_view text, std::vector<int>* ids) const override {
    return FromSp(sp_.Encode(text, ids));
  }
  SpResult Decode(const std::vector<int>& ids, std::string* text) const override {
    return FromSp(sp_.Decode(ids, text));
  }
  int piece_size() const override { return sp_.GetPieceSize(); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace
}  // namespace dgptq::internal

extern "C" __attribute__((visibility("default"))) dgptq::internal::SentencePieceShim*
dgptq_new_sentencepiece() {
  return new dgptq::internal::Processor();
}
