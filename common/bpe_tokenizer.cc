#include "common/bpe_tokenizer.h"

#include <algorithm>
#include <functional>
#include <queue>

#include "absl/strings/str_cat.h"
#include "common/bpe_pretokenizer.h"
#include "common/json_util.h"
#include "common/status_macros.h"

namespace dgptq {
namespace {

// Ids above this are rejected: a tokenizer file must not make us allocate gigabytes.
constexpr int64_t kMaxVocab = int64_t{1} << 24;

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string Utf8(char32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {  // the byte alphabet only reaches U+0143
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's byte-to-unicode table: printable bytes stand for themselves, the others get
// U+0100 + n in increasing byte order.
char32_t ByteChar(int b, int* next_extra) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  return printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + (*next_extra)++);
}

bool IsAsciiSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// One adjacent pair that a merge applies to; ordered by rank, then position.
struct Candidate {
  int32_t rank;
  int32_t left;  // symbol index of the pair's left half
  int32_t left_id;
  int32_t right_id;
  int32_t merged_id;
  bool operator>(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : left > o.left;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromSpec(Spec spec,
                                                                     std::string_view source) {
  auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": ", what));
  };
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  int64_t size = 0;
  for (const auto& [token, id] : spec.vocab) size = std::max<int64_t>(size, int64_t{id} + 1);
  for (const AddedToken& a : spec.added) size = std::max<int64_t>(size, int64_t{a.id} + 1);
  if (size > kMaxVocab) return error(absl::StrCat("token id ", size - 1, " is too large"));
  t->vocab_size_ = size;
  for (const auto& [token, id] : spec.vocab) {
    if (id < 0) return error(absl::StrCat("model.vocab: negative id for '", token, "'"));
    if (!t->id_to_token_.emplace(id, token).second) {
      return error(absl::StrCat("model.vocab: id ", id, " used twice"));
    }
  }
  for (const AddedToken& a : spec.added) {
    if (a.id < 0 || a.content.empty()) return error("added_tokens: bad id or empty content");
    t->id_to_token_[a.id] = a.content;
  }
  for (size_t r = 0; r < spec.merges.size(); ++r) {
    const auto& [a, b] = spec.merges[r];
    const auto ia = spec.vocab.find(a), ib = spec.vocab.find(b), im = spec.vocab.find(a + b);
    if (ia == spec.vocab.end() || ib == spec.vocab.end() || im == spec.vocab.end()) {
      return error(absl::StrCat("model.merges[", r, "]: '", a, " ", b,
                                "' names a token that is not in model.vocab"));
    }
    t->merges_.try_emplace(PairKey(ia->second, ib->second), static_cast<int32_t>(r), im->second);
  }
  t->BuildByteTables(spec.vocab);
  auto find_id = [&](const std::string& name, const char* field, int32_t* out) -> absl::Status {
    if (name.empty()) return absl::OkStatus();
    for (const AddedToken& a : spec.added) {
      if (a.content == name) return (*out = a.id, absl::OkStatus());
    }
    const auto it = spec.vocab.find(name);
    if (it == spec.vocab.end()) return error(absl::StrCat(field, ": unknown token '", name, "'"));
    return (*out = it->second, absl::OkStatus());
  };
  DGPTQ_RETURN_IF_ERROR(find_id(spec.unk_token, "model.unk_token", &t->unk_id_));
  DGPTQ_RETURN_IF_ERROR(find_id(spec.bos_token, "bos_token", &t->bos_id_));
  DGPTQ_RETURN_IF_ERROR(find_id(spec.eos_token, "eos_token", &t->eos_id_));
  // Longest added token first, so that matching at a position takes the longest.
  std::stable_sort(spec.added.begin(), spec.added.end(), [](const auto& x, const auto& y) {
    return x.content.size() > y.content.size();
  });
  for (const AddedToken& a : spec.added) {
    t->added_first_byte_[static_cast<uint8_t>(a.content[0])] = true;
  }
  t->spec_ = std::move(spec);
  return t;
}

void BpeTokenizer::BuildByteTables(const std::unordered_map<std::string, int32_t>& vocab) {
  int next_extra = 0;
  byte_id_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    const char32_t c = ByteChar(b, &next_extra);
    char_to_byte_[c] = static_cast<uint8_t>(b);
    byte_char_.push_back(Utf8(c));
    const auto it = vocab.find(byte_char_.back());
    if (it != vocab.end()) byte_id_[b] = it->second;
  }
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromJson(std::string_view json,
                                                                     std::string_view config_json,
                                                                     std::string_view source) {
  DGPTQ_ASSIGN_OR_RETURN(Spec spec, ParseBpeJson(json, config_json, source));
  return FromSpec(std::move(spec), source);
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Load(const std::string& path) {
  DGPTQ_ASSIGN_OR_RETURN(const std::string json, ReadFile(path));
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  const std::string config_path = dir + "/tokenizer_config.json";
  absl::StatusOr<std::string> config = ReadFile(config_path);
  if (!config.ok() && !absl::IsNotFound(config.status())) return config.status();
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> t =
      FromJson(json, config.ok() ? *config : std::string(), path);
  if (!t.ok() && config.ok()) return Annotate(t.status(), "with " + config_path);
  return t;
}

std::string_view BpeTokenizer::IdToToken(int32_t id) const {
  const auto it = id_to_token_.find(id);
  return it == id_to_token_.end() ? std::string_view() : std::string_view(it->second);
}

absl::Status BpeTokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const {
  if (spec_.ignore_merges) {
    std::string mapped;
    for (const char ch : piece) mapped += byte_char_[static_cast<uint8_t>(ch)];
    const auto it = spec_.vocab.find(mapped);
    if (it != spec_.vocab.end()) return (ids->push_back(it->second), absl::OkStatus());
  }
  struct Symbol {
    int32_t id, prev, next;
  };
  std::vector<Symbol> sym;
  for (const char ch : piece) {
    int32_t id = byte_id_[static_cast<uint8_t>(ch)];
    if (id < 0) id = unk_id_;
    if (id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("byte 0x", absl::Hex(static_cast<uint8_t>(ch)),
                                                     " has no token and there is no unk_token"));
    }
    const int32_t i = static_cast<int32_t>(sym.size());
    sym.push_back({id, i - 1, i + 1});
  }
  if (!sym.empty()) sym.back().next = -1;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int32_t left) {
    if (left < 0 || sym[left].next < 0) return;
    const auto it = merges_.find(PairKey(sym[left].id, sym[sym[left].next].id));
    if (it == merges_.end()) return;
    heap.push({it->second.first, left, sym[left].id, sym[sym[left].next].id, it->second.second});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) push(i);
  std::vector<bool> dead(sym.size(), false);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t right = sym[c.left].next;
    // Stale entries: a half has merged since the pair was queued.
    if (dead[c.left] || sym[c.left].id != c.left_id || right < 0 || sym[right].id != c.right_id) {
      continue;
    }
    sym[c.left].id = c.merged_id;
    dead[right] = true;
    sym[c.left].next = sym[right].next;
    if (sym[right].next >= 0) sym[sym[right].next].prev = c.left;
    push(sym[c.left].prev);
    push(c.left);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) ids->push_back(sym[i].id);
  return absl::OkStatus();
}

absl::Status BpeTokenizer::EncodeSegment(std::string_view text, std::vector<int32_t>* ids) const {
  if (text.empty()) return absl::OkStatus();
  std::string prefixed;
  if (spec_.add_prefix_space && text.front() != ' ') {
    prefixed = absl::StrCat(" ", std::string(text));
    text = prefixed;
  }
  std::vector<std::string_view> pieces;
  switch (spec_.split) {
    case Split::kNone:
      pieces = {text};
      break;
    case Split::kGpt2:
      pieces = SplitGpt2(text);
      break;
    case Split::kLlama3:
      pieces = SplitLlama3(text, spec_.max_digits);
      break;
  }
  for (std::string_view p : pieces) DGPTQ_RETURN_IF_ERROR(EncodePiece(p, ids));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view text) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<int32_t> ids;
  size_t segment = 0;  // start of the text not yet encoded
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    if (!added_first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    for (const AddedToken& a : spec_.added) {  // longest first
      if (text.compare(pos, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t seg_end = pos;
    if (hit->lstrip) {
      while (seg_end > segment && IsAsciiSpace(text[seg_end - 1])) --seg_end;
    }
    DGPTQ_RETURN_IF_ERROR(EncodeSegment(text.substr(segment, seg_end - segment), &ids));
    ids.push_back(hit->id);
    pos += hit->content.size();
    if (hit->rstrip) {
      while (pos < text.size() && IsAsciiSpace(text[pos])) ++pos;
    }
    segment = pos;
  }
  DGPTQ_RETURN_IF_ERROR(EncodeSegment(text.substr(segment), &ids));
  return ids;
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (const int32_t id : ids) {
    const std::string_view token = IdToToken(id);
    std::string bytes;
    size_t pos = 0;
    while (pos < token.size()) {
      char32_t cp = 0;
      const size_t len = DecodeUtf8(token, pos, &cp);
      const auto it = len == 0 ? char_to_byte_.end() : char_to_byte_.find(cp);
      if (it == char_to_byte_.end()) break;
      bytes += static_cast<char>(it->second);
      pos += len;
    }
    // A token with a character outside the byte alphabet is kept as its own text.
    out += pos == token.size() ? bytes : std::string(token);
  }
  return out;
}

}  // namespace dgptq
