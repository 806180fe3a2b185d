// tokenizer.json -> BpeTokenizer::Spec. Every field is type-checked; nothing throws.
#include <string>

#include "absl/strings/str_cat.h"
#include "common/bpe_tokenizer.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace dgptq {
namespace {

using json = nlohmann::json;
using Spec = BpeTokenizer::Spec;

// The Split regexes we implement (as they read after JSON unescaping).
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  absl::Status Error(const std::string& field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", field, ": ", what));
  }
  // The member `key` of `obj`, or nullptr when absent or null.
  static const json* Get(const json& obj, const char* key) {
    if (!obj.is_object()) return nullptr;
    const auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  absl::Status String(const json& obj, const char* key, const std::string& field,
                      std::string* out) const {
    const json* v = Get(obj, key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Error(field + "." + key, "expected a string");
    *out = v->get<std::string>();
    return absl::OkStatus();
  }
  absl::Status Bool(const json& obj, const char* key, const std::string& field, bool* out) const {
    const json* v = Get(obj, key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return Error(field + "." + key, "expected true or false");
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  absl::Status Id(const json& v, const std::string& field, int32_t* out) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= (1 << 24)) {
      return Error(field, "expected a token id in [0, 2^24)");
    }
    *out = static_cast<int32_t>(v.get<int64_t>());
    return absl::OkStatus();
  }

  absl::Status Model(const json& model, Spec* spec) const;
  absl::Status Merges(const json& merges, Spec* spec) const;
  absl::Status Added(const json& added, Spec* spec) const;
  absl::Status PreTokenizer(const json& node, const std::string& field, Spec* spec) const;
  absl::Status SpecialName(const json& config, const char* key, std::string* out) const;

 private:
  std::string source_;
};

absl::Status Parser::Model(const json& model, Spec* spec) const {
  if (!model.is_object()) return Error("model", "missing or not an object");
  std::string type, prefix, suffix;
  DGPTQ_RETURN_IF_ERROR(String(model, "type", "model", &type));
  if (type != "BPE") return Error("model.type", "'" + type + "' is not supported (only BPE)");
  DGPTQ_RETURN_IF_ERROR(String(model, "continuing_subword_prefix", "model", &prefix));
  DGPTQ_RETURN_IF_ERROR(String(model, "end_of_word_suffix", "model", &suffix));
  if (!prefix.empty() || !suffix.empty()) {
    return Error("model", "continuing_subword_prefix / end_of_word_suffix are not supported");
  }
  bool byte_fallback = false;
  DGPTQ_RETURN_IF_ERROR(Bool(model, "byte_fallback", "model", &byte_fallback));
  if (byte_fallback) return Error("model.byte_fallback", "not supported (not byte-level BPE)");
  DGPTQ_RETURN_IF_ERROR(Bool(model, "ignore_merges", "model", &spec->ignore_merges));
  DGPTQ_RETURN_IF_ERROR(String(model, "unk_token", "model", &spec->unk_token));
  const json* vocab = Get(model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) return Error("model.vocab", "expected an object");
  for (const auto& [token, id] : vocab->items()) {
    int32_t v = 0;
    DGPTQ_RETURN_IF_ERROR(Id(id, "model.vocab['" + token + "']", &v));
    spec->vocab.emplace(token, v);
  }
  const json* merges = Get(model, "merges");
  if (merges == nullptr || !merges->is_array()) return Error("model.merges", "expected a list");
  return Merges(*merges, spec);
}

absl::Status Parser::Merges(const json& merges, Spec* spec) const {
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    const std::string field = absl::StrCat("model.merges[", i, "]");
    if (m.is_string()) {  // "a b"
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
          s.find(' ', space + 1) != std::string::npos) {
        return Error(field, "expected \"a b\" (two tokens, one space)");
      }
      spec->merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec->merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return Error(field, "expected \"a b\" or [\"a\", \"b\"]");
    }
  }
  return absl::OkStatus();
}

absl::Status Parser::Added(const json& added, Spec* spec) const {
  if (!added.is_array()) return Error("added_tokens", "expected a list");
  for (size_t i = 0; i < added.size(); ++i) {
    const json& a = added[i];
    const std::string field = absl::StrCat("added_tokens[", i, "]");
    BpeTokenizer::AddedToken t;
    const json* id = Get(a, "id");
    if (id == nullptr) return Error(field + ".id", "missing");
    DGPTQ_RETURN_IF_ERROR(Id(*id, field + ".id", &t.id));
    DGPTQ_RETURN_IF_ERROR(String(a, "content", field, &t.content));
    if (t.content.empty()) return Error(field + ".content", "missing or empty");
    bool single_word = false;
    DGPTQ_RETURN_IF_ERROR(Bool(a, "single_word", field, &single_word));
    if (single_word) return Error(field + ".single_word", "not supported");
    DGPTQ_RETURN_IF_ERROR(Bool(a, "lstrip", field, &t.lstrip));
    DGPTQ_RETURN_IF_ERROR(Bool(a, "rstrip", field, &t.rstrip));
    spec->added.push_back(std::move(t));
  }
  return absl::OkStatus();
}

absl::Status Parser::PreTokenizer(const json& node, const std::string& field, Spec* spec) const {
  std::string type;
  DGPTQ_RETURN_IF_ERROR(String(node, "type", field, &type));
  auto set_split = [&](BpeTokenizer::Split split, int digits) {
    if (spec->split != BpeTokenizer::Split::kNone) return Error(field, "more than one split");
    spec->split = split;
    spec->max_digits = digits;
    return absl::OkStatus();
  };
  if (type == "Sequence" && field == "pre_tokenizer") {
    const json* list = Get(node, "pretokenizers");
    if (list == nullptr || !list->is_array()) return Error(field, "pretokenizers: expected a list");
    for (size_t i = 0; i < list->size(); ++i) {
      DGPTQ_RETURN_IF_ERROR(
          PreTokenizer((*list)[i], absl::StrCat(field, ".pretokenizers[", i, "]"), spec));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {  // the library's defaults: add_prefix_space and use_regex on
    bool use_regex = true;
    spec->add_prefix_space = true;
    DGPTQ_RETURN_IF_ERROR(Bool(node, "use_regex", field, &use_regex));
    DGPTQ_RETURN_IF_ERROR(Bool(node, "add_prefix_space", field, &spec->add_prefix_space));
    return use_regex ? set_split(BpeTokenizer::Split::kGpt2, 0) : absl::OkStatus();
  }
  if (type != "Split") return Error(field + ".type", "'" + type + "' is not supported");
  std::string regex, behavior;
  bool invert = false;
  const json* pattern = Get(node, "pattern");
  DGPTQ_RETURN_IF_ERROR(String(pattern ? *pattern : json(), "Regex", field + ".pattern", &regex));
  DGPTQ_RETURN_IF_ERROR(String(node, "behavior", field, &behavior));
  DGPTQ_RETURN_IF_ERROR(Bool(node, "invert", field, &invert));
  if (behavior != "Isolated" || invert) {
    return Error(field, "only behavior Isolated without invert is supported");
  }
  if (regex == kLlama3Regex) return set_split(BpeTokenizer::Split::kLlama3, 3);
  if (regex == kQwen2Regex) return set_split(BpeTokenizer::Split::kLlama3, 1);
  if (regex == kGpt2Regex) return set_split(BpeTokenizer::Split::kGpt2, 0);
  return Error(field + ".pattern", "unsupported regex (supported: GPT-2, Llama 3, Qwen 2)");
}

absl::Status Parser::SpecialName(const json& config, const char* key, std::string* out) const {
  const json* v = Get(config, key);
  if (v == nullptr) return absl::OkStatus();
  if (v->is_string()) return (*out = v->get<std::string>(), absl::OkStatus());
  return String(*v, "content", std::string("tokenizer_config.json ") + key, out);
}

}  // namespace

absl::StatusOr<BpeTokenizer::Spec> ParseBpeJson(std::string_view json_text,
                                                std::string_view config_json,
                                                std::string_view source) {
  const Parser p(source);
  const json root = json::parse(json_text.begin(), json_text.end(), nullptr, false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": malformed JSON"));
  }
  Spec spec;
  const json* model = Parser::Get(root, "model");
  DGPTQ_RETURN_IF_ERROR(p.Model(model == nullptr ? json() : *model, &spec));
  if (const json* added = Parser::Get(root, "added_tokens")) {
    DGPTQ_RETURN_IF_ERROR(p.Added(*added, &spec));
  }
  if (const json* norm = Parser::Get(root, "normalizer")) {
    std::string type;
    DGPTQ_RETURN_IF_ERROR(p.String(*norm, "type", "normalizer", &type));
    if (type != "NFC") return p.Error("normalizer", "'" + type + "' is not supported");
  }
  if (const json* pre = Parser::Get(root, "pre_tokenizer")) {
    DGPTQ_RETURN_IF_ERROR(p.PreTokenizer(*pre, "pre_tokenizer", &spec));
  }
  if (const json* decoder = Parser::Get(root, "decoder")) {
    std::string type;
    DGPTQ_RETURN_IF_ERROR(p.String(*decoder, "type", "decoder", &type));
    if (type != "ByteLevel") return p.Error("decoder", "'" + type + "' is not supported");
  }
  if (!config_json.empty()) {
    const json config = json::parse(config_json.begin(), config_json.end(), nullptr, false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(source), ": its tokenizer_config.json is malformed JSON"));
    }
    DGPTQ_RETURN_IF_ERROR(p.SpecialName(config, "bos_token", &spec.bos_token));
    DGPTQ_RETURN_IF_ERROR(p.SpecialName(config, "eos_token", &spec.eos_token));
  }
  return spec;
}

}  // namespace dgptq
