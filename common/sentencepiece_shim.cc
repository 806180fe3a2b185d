// No abseil header may be included here: see sentencepiece_shim.h.
#include "common/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

namespace dgptq::internal {
namespace {

SpResult FromSp(const sentencepiece::util::Status& s) {
  if (s.ok()) return {};
  return SpResult{static_cast<int>(s.code()), s.message() == nullptr ? "" : s.message()};
}

}  // namespace

SentencePieceShim::SentencePieceShim()
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}

SentencePieceShim::~SentencePieceShim() = default;

SpResult SentencePieceShim::Load(const std::string& path) { return FromSp(sp_->Load(path)); }

SpResult SentencePieceShim::Encode(std::string_view text, std::vector<int>* ids) const {
  return FromSp(sp_->Encode(text, ids));
}

SpResult SentencePieceShim::Decode(const std::vector<int>& ids, std::string* text) const {
  return FromSp(sp_->Decode(ids, text));
}

int SentencePieceShim::piece_size() const { return sp_->GetPieceSize(); }
int SentencePieceShim::bos_id() const { return sp_->bos_id(); }
int SentencePieceShim::eos_id() const { return sp_->eos_id(); }

}  // namespace dgptq::internal
