#include "common/safetensors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/json_util.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace dgptq {
namespace {

using json = nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "safetensors lengths are little-endian; big-endian hosts need byte swaps");

constexpr absl::string_view kIndexFile = "model.safetensors.index.json";
constexpr absl::string_view kSingleFile = "model.safetensors";
constexpr size_t kMaxRank = 64;  // keeps shapes (and messages quoting them) small

// This abseil's string_view is its own type: bridge std::string_view explicitly.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Names come from untrusted headers: keep error messages bounded.
std::string Clip(absl::string_view s) {
  constexpr size_t kMax = 200;
  if (s.size() <= kMax) return std::string(s);
  return absl::StrCat(s.substr(0, kMax), "...");
}

absl::Status FileError(absl::string_view file, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

absl::Status TensorError(absl::string_view file, absl::string_view tensor, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": tensor '", Clip(tensor), "': ", what));
}

// A JSON integer in [0, INT64_MAX].
bool AsNonNegative(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return *out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  }
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    *out = static_cast<uint64_t>(x);
    return x >= 0;
  }
  return false;
}

// Parses "shape" into `info` and returns the tensor's byte size.
absl::StatusOr<uint64_t> ParseShape(const json& entry, absl::string_view file, TensorInfo* info) {
  const auto it = entry.find("shape");
  if (it == entry.end() || !it->is_array()) {
    return TensorError(file, info->name, "missing or non-array \"shape\"");
  }
  if (it->size() > kMaxRank) {
    return TensorError(file, info->name, absl::StrCat("rank ", it->size(), " exceeds ", kMaxRank));
  }
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : *it) {
    uint64_t dim;
    if (!AsNonNegative(d, &dim)) {
      return TensorError(file, info->name, "\"shape\" must hold non-negative integers");
    }
    info->shape.push_back(static_cast<int64_t>(dim));
    overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
  }
  uint64_t bytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, DTypeSize(info->dtype), &bytes) ||
             bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (overflow) {
    return TensorError(
        file, info->name,
        absl::StrCat("element count of shape ", ShapeString(info->shape), " overflows"));
  }
  return bytes;
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const json& entry,
                                      uint64_t data_bytes, absl::string_view file) {
  TensorInfo info;
  info.name = name;
  if (!entry.is_object()) return TensorError(file, name, "entry is not a JSON object");
  const auto dt = entry.find("dtype");
  if (dt == entry.end() || !dt->is_string()) {
    return TensorError(file, name, "missing or non-string \"dtype\"");
  }
  absl::StatusOr<DType> dtype = ParseDType(dt->get_ref<const std::string&>());
  if (!dtype.ok()) return TensorError(file, name, dtype.status().message());
  info.dtype = *dtype;
  DGPTQ_ASSIGN_OR_RETURN(const uint64_t bytes, ParseShape(entry, file, &info));
  const auto off = entry.find("data_offsets");
  if (off == entry.end() || !off->is_array() || off->size() != 2 ||
      !AsNonNegative((*off)[0], &info.begin) || !AsNonNegative((*off)[1], &info.end)) {
    return TensorError(file, name,
                       "\"data_offsets\" must be [begin, end] of non-negative integers");
  }
  const std::string range = absl::StrCat("data_offsets [", info.begin, ", ", info.end, "]");
  if (info.begin > info.end) return TensorError(file, name, range + " has begin > end");
  if (info.end > data_bytes) {
    return TensorError(
        file, name, absl::StrCat(range, " ends past the data section of ", data_bytes, " bytes"));
  }
  if (bytes != info.end - info.begin) {
    return TensorError(
        file, name,
        absl::StrCat("shape ", ShapeString(info.shape), " x ", AV(DTypeName(info.dtype)), " is ",
                     bytes, " bytes but ", range, " span ", info.end - info.begin));
  }
  return info;
}

absl::Status ParseMetadata(const json& m, absl::string_view file,
                           std::map<std::string, std::string>* out) {
  if (!m.is_object()) return FileError(file, "\"__metadata__\" is not a JSON object");
  for (auto it = m.begin(); it != m.end(); ++it) {
    if (!it.value().is_string()) {
      return FileError(
          file, absl::StrCat("\"__metadata__\" value of '", Clip(it.key()), "' is not a string"));
    }
    (*out)[it.key()] = it.value().get<std::string>();
  }
  return absl::OkStatus();
}

// Sorts by begin offset and rejects overlapping non-empty ranges.
absl::Status SortAndCheckOverlap(std::vector<TensorInfo>* tensors, absl::string_view file) {
  std::sort(tensors->begin(), tensors->end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  const TensorInfo* last = nullptr;  // the non-empty tensor reaching furthest so far
  for (const TensorInfo& t : *tensors) {
    if (t.begin == t.end) continue;
    if (last != nullptr && t.begin < last->end) {
      return TensorError(file, t.name,
                         absl::StrCat("data_offsets [", t.begin, ", ", t.end, "] overlap tensor '",
                                      Clip(last->name), "' [", last->begin, ", ", last->end, "]"));
    }
    if (last == nullptr || t.end > last->end) last = &t;
  }
  return absl::OkStatus();
}

absl::Status CheckHeaderLength(uint64_t n, uint64_t file_bytes, absl::string_view file) {
  if (file_bytes < 8) {
    return FileError(file, absl::StrCat("file is ", file_bytes,
                                        " bytes, shorter than the 8-byte header length"));
  }
  if (n > kMaxHeaderBytes) {
    return FileError(file, absl::StrCat("header length ", n, " exceeds the limit of ",
                                        kMaxHeaderBytes, " bytes"));
  }
  if (n > file_bytes - 8) {
    return FileError(file, absl::StrCat("header length ", n, " exceeds the ", file_bytes - 8,
                                        " bytes after the length field (truncated file?)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ReadHeaderOnly(const std::string& path) {
  uint64_t size = 0;
  DGPTQ_ASSIGN_OR_RETURN(const int fd, OpenRegularFile(path, &size));
  absl::StatusOr<SafetensorsHeader> header = [&]() -> absl::StatusOr<SafetensorsHeader> {
    uint64_t n = 0;
    if (size >= 8) DGPTQ_RETURN_IF_ERROR(ReadExactAt(fd, &n, 8, 0, path));
    DGPTQ_RETURN_IF_ERROR(CheckHeaderLength(n, size, path));
    std::string text(static_cast<size_t>(n), '\0');
    DGPTQ_RETURN_IF_ERROR(ReadExactAt(fd, text.data(), text.size(), 8, path));
    return ParseSafetensorsHeader(text, size - 8 - n, path);
  }();
  ::close(fd);
  return header;
}

namespace {

bool IsSafeShardName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos &&
         name.find("..") == std::string::npos && name.find('\0') == std::string::npos &&
         name != ".";
}

// Parses model.safetensors.index.json's weight_map into `out`.
absl::Status ParseIndex(const std::string& text, absl::string_view file,
                        std::map<std::string, std::string, std::less<>>* out) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    return FileError(file, absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return FileError(file, "not a JSON object");
  const auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object()) {
    return FileError(file, "missing or non-object \"weight_map\"");
  }
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) {
      return TensorError(file, it.key(), "weight_map value is not a string");
    }
    const std::string& shard = it.value().get_ref<const std::string&>();
    if (!IsSafeShardName(shard)) {
      return TensorError(file, it.key(),
                         absl::StrCat("shard name '", Clip(shard),
                                      "' must be a plain file name (no '/' or '..')"));
    }
    (*out)[it.key()] = shard;
  }
  return absl::OkStatus();
}

// Reads the header of every shard named in `weight_map` and records each listed
// tensor's info; InvalidArgument naming the shard and tensor when one is missing.
absl::Status ResolveShards(const std::string& dir, absl::string_view index_path,
                           const std::map<std::string, std::string, std::less<>>& weight_map,
                           std::map<std::string, TensorInfo, std::less<>>* infos) {
  std::map<std::string, std::map<std::string, TensorInfo, std::less<>>, std::less<>> shards;
  for (const auto& [tensor, shard] : weight_map) {
    auto loaded = shards.find(shard);
    if (loaded == shards.end()) {
      absl::StatusOr<SafetensorsHeader> header = ReadHeaderOnly(absl::StrCat(dir, "/", shard));
      if (absl::IsNotFound(header.status())) {
        return TensorError(index_path, tensor, absl::StrCat("shard '", shard, "' does not exist"));
      }
      if (!header.ok()) return header.status();
      std::map<std::string, TensorInfo, std::less<>> by_name;
      for (TensorInfo& t : header->tensors) by_name.emplace(t.name, std::move(t));
      loaded = shards.emplace(shard, std::move(by_name)).first;
    }
    const auto it = loaded->second.find(tensor);
    if (it == loaded->second.end()) {
      return TensorError(index_path, tensor, absl::StrCat("not present in shard '", shard, "'"));
    }
    (*infos)[tensor] = it->second;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view json_text,
                                                         uint64_t data_bytes,
                                                         std::string_view file_name) {
  const absl::string_view file(file_name.data(), file_name.size());
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    return FileError(file, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return FileError(file, "header is not a JSON object");
  SafetensorsHeader header;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      DGPTQ_RETURN_IF_ERROR(ParseMetadata(it.value(), file, &header.metadata));
      continue;
    }
    DGPTQ_ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(it.key(), it.value(), data_bytes, file));
    header.tensors.push_back(std::move(info));
  }
  DGPTQ_RETURN_IF_ERROR(SortAndCheckOverlap(&header.tensors, file));
  return header;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  uint64_t size = 0;
  DGPTQ_ASSIGN_OR_RETURN(const int fd, OpenRegularFile(path, &size));
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  if (size >= 8) {
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    if (map == MAP_FAILED) return ErrnoStatus(err, "mmap", path);
    f->map_ = static_cast<const uint8_t*>(map);  // unmapped by the destructor from here on
    f->map_bytes_ = size;
  } else {
    ::close(fd);
  }
  uint64_t n = 0;
  if (size >= 8) std::memcpy(&n, f->map_, 8);
  DGPTQ_RETURN_IF_ERROR(CheckHeaderLength(n, size, path));
  const std::string_view text(reinterpret_cast<const char*>(f->map_) + 8, n);
  DGPTQ_ASSIGN_OR_RETURN(f->header_, ParseSafetensorsHeader(text, size - 8 - n, path));
  f->data_ = f->map_ + 8 + n;
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) {
    f->index_.emplace(f->header_.tensors[i].name, i);
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), map_bytes_);
}

bool SafetensorsFile::Has(std::string_view name) const { return index_.contains(name); }

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::StatusOr<TensorView> SafetensorsFile::Get(std::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", Clip(AV(name)), "'"));
  }
  return TensorView{info->dtype, info->shape, data_ + info->begin};
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  const std::string index_path = absl::StrCat(dir, "/", kIndexFile);
  absl::StatusOr<std::string> index = ReadFile(index_path);
  if (index.ok()) {
    DGPTQ_RETURN_IF_ERROR(ParseIndex(*index, index_path, &ckpt->weight_map_));
  } else if (!absl::IsNotFound(index.status())) {
    return index.status();
  } else {
    const std::string single = absl::StrCat(dir, "/", kSingleFile);
    absl::StatusOr<SafetensorsHeader> header = ReadHeaderOnly(single);
    if (absl::IsNotFound(header.status())) {
      return absl::NotFoundError(absl::StrCat(dir, ": no ", kIndexFile, " and no ", kSingleFile));
    }
    if (!header.ok()) return header.status();
    for (TensorInfo& t : header->tensors) {
      ckpt->weight_map_[t.name] = std::string(kSingleFile);
      ckpt->infos_[t.name] = std::move(t);
    }
    return ckpt;
  }
  DGPTQ_RETURN_IF_ERROR(ResolveShards(dir, index_path, ckpt->weight_map_, &ckpt->infos_));
  return ckpt;
}

Checkpoint::~Checkpoint() = default;

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(weight_map_.size());
  for (const auto& [name, shard] : weight_map_) names.push_back(name);
  return names;
}

bool Checkpoint::Has(std::string_view name) const { return infos_.contains(name); }

absl::StatusOr<TensorInfo> Checkpoint::Info(std::string_view name) const {
  const auto it = infos_.find(name);
  if (it == infos_.end()) {
    return absl::NotFoundError(
        absl::StrCat(dir_, ": checkpoint has no tensor '", Clip(AV(name)), "'"));
  }
  return it->second;
}

absl::StatusOr<TensorView> Checkpoint::Get(std::string_view name) {
  const auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    return absl::NotFoundError(
        absl::StrCat(dir_, ": checkpoint has no tensor '", Clip(AV(name)), "'"));
  }
  auto file = open_.find(it->second);
  if (file == open_.end()) {
    DGPTQ_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f,
                           SafetensorsFile::Open(absl::StrCat(dir_, "/", it->second)));
    file = open_.emplace(it->second, std::move(f)).first;
  }
  return file->second->Get(name);
}

}  // namespace dgptq
