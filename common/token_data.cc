#include "common/token_data.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/json_util.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace dgptq {
namespace {

using json = nlohmann::json;

// Most ids one TokenWindows may hold (8 GiB of int32): guards against absurd requests.
constexpr int64_t kMaxWindowIds = int64_t{1} << 31;

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::StatusOr<IdArray> ParseJsonl(const std::string& path, std::string_view text) {
  std::vector<std::vector<int32_t>> rows;
  size_t line_no = 0;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = absl::StrCat(path, ":", line_no);
    const json list = json::parse(line.begin(), line.end(), nullptr, false);
    if (list.is_discarded() || !list.is_array()) {
      return Invalid(where, "expected a JSON list of token ids");
    }
    std::vector<int32_t>& row = rows.emplace_back();
    row.reserve(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const json& v = list[i];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
          v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Invalid(where, absl::StrCat("element ", i, " is not a token id in [0, 2^31)"));
      }
      row.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
  }
  IdArray out;
  const bool rectangular =
      rows.size() >= 2 && std::all_of(rows.begin(), rows.end(),
                                      [&](const auto& r) { return r.size() == rows[0].size(); });
  for (const auto& r : rows) out.ids.insert(out.ids.end(), r.begin(), r.end());
  out.shape = rectangular ? std::vector<int64_t>{static_cast<int64_t>(rows.size()),
                                                 static_cast<int64_t>(rows[0].size())}
                          : std::vector<int64_t>{static_cast<int64_t>(out.ids.size())};
  return out;
}

absl::StatusOr<IdArray> ReadSafetensors(const std::string& path) {
  DGPTQ_ASSIGN_OR_RETURN(const auto file, SafetensorsFile::Open(path));
  const TensorInfo* pick = file->Find("input_ids");
  if (pick == nullptr) {
    for (const TensorInfo& t : file->header().tensors) {
      if (t.dtype != DType::kI32 && t.dtype != DType::kI64) continue;
      if (pick != nullptr) {
        return Invalid(path, absl::StrCat("several integer tensors ('", pick->name, "', '", t.name,
                                          "') and none named 'input_ids'"));
      }
      pick = &t;
    }
  }
  if (pick == nullptr) return Invalid(path, "no I32/I64 tensor (and none named 'input_ids')");
  if ((pick->dtype != DType::kI32 && pick->dtype != DType::kI64) || pick->shape.empty() ||
      pick->shape.size() > 2) {
    return Invalid(path, absl::StrCat("tensor '", pick->name, "' must be I32 or I64, 1-D or 2-D"));
  }
  DGPTQ_ASSIGN_OR_RETURN(const TensorView view, file->Get(pick->name));
  IdArray out;
  out.shape = view.shape;
  out.ids.resize(view.numel());
  for (int64_t i = 0; i < view.numel(); ++i) {
    const int64_t v = view.dtype == DType::kI32 ? view.as<int32_t>()[i] : view.as<int64_t>()[i];
    if (v < 0 || v > std::numeric_limits<int32_t>::max()) {
      return Invalid(path, absl::StrCat("'", pick->name, "' element ", i, " = ", v,
                                        " is not a token id in [0, 2^31)"));
    }
    out.ids[i] = static_cast<int32_t>(v);
  }
  return out;
}

// Ids of `path` with their shape, range-checked.
absl::StatusOr<IdArray> LoadIds(const std::string& path, const Tokenizer* tok) {
  IdArray arr;
  if (absl::EndsWith(path, ".safetensors")) {
    DGPTQ_ASSIGN_OR_RETURN(arr, ReadSafetensors(path));
  } else if (absl::EndsWith(path, ".npy")) {
    DGPTQ_ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
    DGPTQ_ASSIGN_OR_RETURN(arr, ParseNpy(bytes, path));
  } else if (absl::EndsWith(path, ".jsonl")) {
    DGPTQ_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
    DGPTQ_ASSIGN_OR_RETURN(arr, ParseJsonl(path, text));
  } else if (absl::EndsWith(path, ".txt")) {
    if (tok == nullptr) return Invalid(path, "a tokenizer is needed to read text");
    DGPTQ_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
    absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(text);
    if (!ids.ok()) return Annotate(ids.status(), path);
    arr.ids = std::move(*ids);
    arr.shape = {static_cast<int64_t>(arr.ids.size())};
  } else {
    return Invalid(path, "unknown token file type (expected .txt, .jsonl, .npy, .safetensors)");
  }
  const int64_t vocab = tok != nullptr ? tok->vocab_size() : std::numeric_limits<int32_t>::max();
  for (size_t i = 0; i < arr.ids.size(); ++i) {
    if (arr.ids[i] < 0 || arr.ids[i] >= vocab) {
      return Invalid(path, absl::StrCat("id ", arr.ids[i], " at index ", i,
                                        " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return arr;
}

absl::Status CheckSeqLen(int64_t seq_len) {
  if (seq_len <= 0) return absl::InvalidArgumentError(absl::StrCat("seq_len ", seq_len, " <= 0"));
  return absl::OkStatus();
}

// splitmix64 (Steele, Lea and Flood, 2014): the generator DrawCalibration documents.
uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> LoadTokenStream(const std::string& path,
                                                     const Tokenizer* tok) {
  DGPTQ_ASSIGN_OR_RETURN(IdArray arr, LoadIds(path, tok));
  return std::move(arr.ids);
}

absl::StatusOr<TokenWindows> LoadTokenWindows(const std::string& path, const Tokenizer* tok,
                                              int64_t seq_len) {
  DGPTQ_RETURN_IF_ERROR(CheckSeqLen(seq_len));
  DGPTQ_ASSIGN_OR_RETURN(const IdArray arr, LoadIds(path, tok));
  if (arr.shape.size() == 1) {
    absl::StatusOr<TokenWindows> w = EvalWindows(arr.ids, seq_len, 0);
    if (!w.ok()) return Annotate(w.status(), path);
    return w;
  }
  const int64_t rows = arr.shape[0], cols = arr.shape[1];
  if (rows == 0) return Invalid(path, "no rows");
  if (cols < seq_len) {
    return Invalid(path, absl::StrCat("rows hold ", cols, " tokens, fewer than seq_len ", seq_len));
  }
  TokenWindows w{rows, seq_len, {}};
  w.ids.reserve(rows * seq_len);
  for (int64_t r = 0; r < rows; ++r) {
    const auto row = arr.ids.begin() + r * cols;
    w.ids.insert(w.ids.end(), row, row + seq_len);
  }
  return w;
}

absl::StatusOr<TokenWindows> DrawCalibration(const std::vector<int32_t>& stream, int64_t samples,
                                             int64_t seq_len, uint64_t seed) {
  DGPTQ_RETURN_IF_ERROR(CheckSeqLen(seq_len));
  if (samples <= 0 || samples > kMaxCalibrationSamples) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration samples ", samples, " not in [1, ", kMaxCalibrationSamples, "]"));
  }
  const int64_t len = static_cast<int64_t>(stream.size());
  if (len < seq_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("token stream of ", len, " ids is shorter than one window of ", seq_len));
  }
  if (seq_len > kMaxWindowIds / samples) {
    return absl::InvalidArgumentError(
        absl::StrCat(samples, " windows of ", seq_len, " ids are more than 2^31 ids"));
  }
  const uint64_t n = static_cast<uint64_t>(len - seq_len + 1);  // possible starts
  const uint64_t reject_below = (0 - n) % n;                    // 2^64 mod n
  uint64_t state = seed;
  TokenWindows w{samples, seq_len, {}};
  w.ids.reserve(samples * seq_len);
  for (int64_t s = 0; s < samples; ++s) {
    uint64_t x = SplitMix64(&state);
    while (x < reject_below) x = SplitMix64(&state);
    const auto start = stream.begin() + static_cast<int64_t>(x % n);
    w.ids.insert(w.ids.end(), start, start + seq_len);
  }
  return w;
}

absl::StatusOr<TokenWindows> EvalWindows(const std::vector<int32_t>& stream, int64_t seq_len,
                                         int64_t max_windows) {
  DGPTQ_RETURN_IF_ERROR(CheckSeqLen(seq_len));
  const int64_t len = static_cast<int64_t>(stream.size());
  int64_t count = len / seq_len;
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("token stream of ", len, " ids is shorter than one window of ", seq_len));
  }
  if (max_windows > 0) count = std::min(count, max_windows);
  return TokenWindows{count, seq_len,
                      std::vector<int32_t>(stream.begin(), stream.begin() + count * seq_len)};
}

}  // namespace dgptq
