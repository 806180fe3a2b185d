#include "common/tokenizer.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "common/bpe_tokenizer.h"
#include "common/sentencepiece_shim.h"

namespace dgptq {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<internal::SentencePieceShim> sp)
      : sp_(std::move(sp)) {}

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override {
    std::vector<int> ids;
    const internal::SpResult r = sp_->Encode(text, &ids);
    if (!r.ok()) return absl::InvalidArgumentError("sentencepiece encode: " + r.message);
    return std::vector<int32_t>(ids.begin(), ids.end());
  }

  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> valid;
    valid.reserve(ids.size());
    for (const int32_t id : ids) {
      if (id >= 0 && id < vocab_size()) valid.push_back(id);
    }
    std::string text;
    // With every id in range sentencepiece's decoder has no failure left to report.
    if (!sp_->Decode(valid, &text).ok()) return {};
    return text;
  }

  int64_t vocab_size() const override { return sp_->piece_size(); }
  int32_t bos_id() const override { return sp_->bos_id(); }
  int32_t eos_id() const override { return sp_->eos_id(); }

 private:
  std::unique_ptr<internal::SentencePieceShim> sp_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path) {
  if (!FileExists(path)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  std::string module_error;
  std::unique_ptr<internal::SentencePieceShim> sp = internal::NewSentencePieceShim(&module_error);
  if (sp == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ", module_error));
  }
  const internal::SpResult r = sp->Load(path);
  if (!r.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a sentencepiece model: ", r.message));
  }
  if (sp->piece_size() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": sentencepiece model has no pieces"));
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(sp)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  const std::string sp_path = model_dir + "/tokenizer.model";
  if (FileExists(sp_path)) return LoadSentencePieceTokenizer(sp_path);
  const std::string json_path = model_dir + "/tokenizer.json";
  if (FileExists(json_path)) {
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> bpe = BpeTokenizer::Load(json_path);
    if (!bpe.ok()) return bpe.status();
    return std::unique_ptr<Tokenizer>(std::move(*bpe));
  }
  return absl::NotFoundError(
      absl::StrCat(model_dir, ": no tokenizer.model or tokenizer.json in this directory"));
}

}  // namespace dgptq
