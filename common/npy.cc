#include "common/npy.h"

#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace dgptq {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr int64_t kMaxDim = int64_t{1} << 48;

// Recursive-descent reader of the header dict. Accepts only what the three keys need:
// quoted strings without escapes, True/False, and a tuple of decimal integers.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, std::string source)
      : text_(text), source_(std::move(source)) {}

  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": .npy header: ", what, " at offset ", pos_));
  }
  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) return (++pos_, true);
    return false;
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ == text_.size();
  }

  absl::StatusOr<std::string> String() {
    SkipSpace();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      return Error("expected a quoted string");
    }
    const char quote = text_[pos_++];
    const size_t end = text_.find(quote, pos_);
    if (end == std::string_view::npos) return Error("unterminated string");
    std::string s(text_.substr(pos_, end - pos_));
    if (s.find('\\') != std::string::npos) return Error("escapes are not supported");
    pos_ = end + 1;
    return s;
  }

  absl::StatusOr<bool> Bool() {
    SkipSpace();
    for (const auto& [word, value] : {std::pair{"True", true}, std::pair{"False", false}}) {
      const size_t n = std::strlen(word);
      if (text_.substr(pos_, n) == word) return (pos_ += n, value);
    }
    return Error("expected True or False");
  }

  absl::StatusOr<int64_t> Int() {
    SkipSpace();
    const size_t start = pos_;
    int64_t v = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      v = v * 10 + (text_[pos_++] - '0');
      if (v > kMaxDim) return Error("dimension too large");
    }
    if (pos_ == start) return Error("expected a non-negative integer");
    if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2 long suffix
    return v;
  }

  absl::StatusOr<std::vector<int64_t>> Tuple() {
    if (!Consume('(')) return Error("expected '(' starting the shape");
    std::vector<int64_t> dims;
    while (!Consume(')')) {
      if (dims.size() >= 8) return Error("too many dimensions");
      DGPTQ_ASSIGN_OR_RETURN(const int64_t d, Int());
      dims.push_back(d);
      if (!Consume(',') && !(SkipSpace(), pos_ < text_.size() && text_[pos_] == ')')) {
        return Error("expected ',' or ')' in the shape");
      }
    }
    return dims;
  }

 private:
  std::string_view text_;
  std::string source_;
  size_t pos_ = 0;
};

struct Header {
  std::string descr;
  bool fortran_order = true;
  std::vector<int64_t> shape;
};

absl::StatusOr<Header> ParseHeader(std::string_view text, const std::string& source) {
  HeaderParser p(text, source);
  Header h;
  bool seen[3] = {false, false, false};
  if (!p.Consume('{')) return p.Error("expected '{'");
  while (!p.Consume('}')) {
    DGPTQ_ASSIGN_OR_RETURN(const std::string key, p.String());
    if (!p.Consume(':')) return p.Error("expected ':' after '" + key + "'");
    int k = 0;
    if (key == "descr") {
      DGPTQ_ASSIGN_OR_RETURN(h.descr, p.String());
    } else if (key == "fortran_order") {
      k = 1;
      DGPTQ_ASSIGN_OR_RETURN(h.fortran_order, p.Bool());
    } else if (key == "shape") {
      k = 2;
      DGPTQ_ASSIGN_OR_RETURN(h.shape, p.Tuple());
    } else {
      return p.Error("unexpected key '" + key + "'");
    }
    if (seen[k]) return p.Error("duplicate key '" + key + "'");
    seen[k] = true;
    if (p.Consume(',')) continue;
    if (p.Consume('}')) break;
    return p.Error("expected ',' or '}'");
  }
  if (!p.AtEnd()) return p.Error("unexpected text after the dict");
  if (!seen[0] || !seen[1] || !seen[2]) {
    return p.Error("missing one of 'descr', 'fortran_order', 'shape'");
  }
  return h;
}

uint32_t LittleEndian(std::string_view bytes, size_t pos, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint32_t{static_cast<uint8_t>(bytes[pos + i])} << (8 * i);
  return v;
}

}  // namespace

absl::StatusOr<IdArray> ParseNpy(std::string_view bytes, std::string_view source_view) {
  const std::string source(source_view);
  auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  };
  if (bytes.size() < 10 || bytes.substr(0, kMagic.size()) != kMagic) {
    return error("not a .npy file (bad magic)");
  }
  const int major = static_cast<uint8_t>(bytes[6]);
  if (major < 1 || major > 3) {
    return error(absl::StrCat("unsupported .npy format version ", major));
  }
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (bytes.size() < 8 + len_bytes) return error("truncated .npy header");
  const size_t header_len = LittleEndian(bytes, 8, len_bytes);
  const size_t data_start = 8 + len_bytes + header_len;
  if (bytes.size() - 8 - len_bytes < header_len) return error("truncated .npy header");
  DGPTQ_ASSIGN_OR_RETURN(const Header h,
                         ParseHeader(bytes.substr(8 + len_bytes, header_len), source));
  size_t item = 0;
  if (h.descr == "<i4") item = 4;
  if (h.descr == "<i8") item = 8;
  if (item == 0) {
    return error("dtype '" + h.descr + "' is not supported (expected '<i4' or '<i8')");
  }
  if (h.fortran_order) return error("Fortran-order arrays are not supported");
  if (h.shape.empty() || h.shape.size() > 2) {
    return error(absl::StrCat("expected a 1-D or 2-D array, got ", h.shape.size(), " dims"));
  }
  // Elements the shape needs, checked against the data section without overflow.
  const size_t data_bytes = bytes.size() - data_start;
  const size_t d0 = static_cast<size_t>(h.shape[0]);
  const size_t d1 = h.shape.size() == 2 ? static_cast<size_t>(h.shape[1]) : 1;
  const bool fits = d0 == 0 || d1 == 0 || (d0 <= data_bytes / d1 && d0 * d1 <= data_bytes / item);
  if (!fits || d0 * d1 * item != data_bytes) {
    return error(absl::StrCat("data section is ", data_bytes, " bytes, but dtype ", h.descr,
                              " and the shape (", absl::StrJoin(h.shape, ", "), ") need ",
                              fits ? std::to_string(d0 * d1 * item) : "more"));
  }
  const size_t numel = d0 * d1;
  IdArray out;
  out.shape = h.shape;
  out.ids.resize(numel);
  const char* data = bytes.data() + data_start;
  for (size_t i = 0; i < numel; ++i) {
    if (item == 4) {
      std::memcpy(&out.ids[i], data + 4 * i, 4);  // little-endian host (x86-64, aarch64)
      continue;
    }
    int64_t v = 0;
    std::memcpy(&v, data + 8 * i, 8);
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
      return error(absl::StrCat("value ", v, " at index ", i, " does not fit in int32"));
    }
    out.ids[i] = static_cast<int32_t>(v);
  }
  return out;
}

}  // namespace dgptq
