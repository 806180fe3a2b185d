#include "common/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <functional>
#include <cerrno>
#include <limits>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/json_util.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace dgptq {
namespace {

using json = nlohmann::json;

constexpr size_t kCopyChunk = 8u << 20;  // bounded memory while assembling the final file

// Byte size of a view, or InvalidArgument for a shape no file can hold.
absl::StatusOr<uint64_t> ViewBytes(const std::string& name, const TensorView& t) {
  uint64_t n = DTypeSize(t.dtype);
  for (int64_t d : t.shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': invalid shape ", ShapeString(t.shape)));
    }
  }
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is too large"));
  }
  if (n > 0 && t.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has no data"));
  }
  return n;
}

absl::Status CheckName(const std::string& name) {
  if (name.empty() || name == "__metadata__") {
    return absl::InvalidArgumentError(absl::StrCat("invalid tensor name '", name, "'"));
  }
  try {
    (void)json(name).dump();  // rejects names that are not valid UTF-8
  } catch (const json::exception&) {
    return absl::InvalidArgumentError("tensor name is not valid UTF-8");
  }
  return absl::OkStatus();
}

// Copies `n` bytes of `in` (from offset 0) to the current position of `out`. Tries the
// in-kernel copy first and falls back to a bounded buffer where it is unsupported.
absl::Status CopyData(int in, int out, uint64_t n, const std::string& in_path,
                      const std::string& out_path) {
  loff_t in_off = 0;
  while (in_off < static_cast<loff_t>(n)) {
    const ssize_t c =
        ::copy_file_range(in, &in_off, out, nullptr, std::min<uint64_t>(n - in_off, 1u << 30), 0);
    if (c > 0) continue;
    if (c < 0 && errno == EINTR) continue;
    if (c == 0) return absl::InternalError(absl::StrCat(in_path, ": shorter than expected"));
    if (in_off == 0 &&
        (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
      break;
    }
    return ErrnoStatus(errno, "copy_file_range to " + out_path, in_path);
  }
  std::vector<char> buf;
  while (in_off < static_cast<loff_t>(n)) {
    if (buf.empty()) buf.resize(kCopyChunk);
    const size_t want = std::min<uint64_t>(n - in_off, buf.size());
    const ssize_t r = ::pread(in, buf.data(), want, in_off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, "read", in_path);
    if (r == 0) return absl::InternalError(absl::StrCat(in_path, ": shorter than expected"));
    DGPTQ_RETURN_IF_ERROR(WriteAll(out, buf.data(), static_cast<size_t>(r), out_path));
    in_off += r;
  }
  return absl::OkStatus();
}

}  // namespace

struct SafetensorsFileWriter::Impl {
  std::string path;
  std::string data_tmp;   // tensor bytes, appended as added
  std::string final_tmp;  // length + header + data, renamed to `path` by Finish
  int fd = -1;
  std::map<std::string, std::string> metadata;
  std::vector<TensorInfo> tensors;
  std::set<std::string, std::less<>> names;
  uint64_t offset = 0;
  bool finished = false;
  absl::Status failed;  // sticky I/O error

  ~Impl() {
    if (fd >= 0) ::close(fd);
    if (!finished) {
      ::unlink(data_tmp.c_str());
      ::unlink(final_tmp.c_str());
    }
  }
  absl::Status Usable() const {
    if (finished) return absl::FailedPreconditionError(path + ": writer already finished");
    if (!failed.ok()) return Annotate(failed, path + ": writer failed earlier");
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> HeaderText() const;
  absl::Status WriteFinal(const std::string& header);
};

absl::StatusOr<std::string> SafetensorsFileWriter::Impl::HeaderText() const {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  for (const TensorInfo& t : tensors) {
    h[t.name] = {
        {"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  }
  std::string text;
  try {
    text = h.dump();
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot encode header: ", e.what()));
  }
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

absl::Status SafetensorsFileWriter::Impl::WriteFinal(const std::string& header) {
  const int out = ::open(final_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) return ErrnoStatus(errno, "create", final_tmp);
  const uint64_t n = header.size();
  absl::Status st = WriteAll(out, &n, sizeof(n), final_tmp);  // little-endian host
  if (st.ok()) st = WriteAll(out, header.data(), header.size(), final_tmp);
  if (st.ok()) st = CopyData(fd, out, offset, data_tmp, final_tmp);
  if (st.ok() && ::fsync(out) != 0) st = ErrnoStatus(errno, "fsync", final_tmp);
  if (::close(out) != 0 && st.ok()) st = ErrnoStatus(errno, "close", final_tmp);
  if (st.ok() && ::rename(final_tmp.c_str(), path.c_str()) != 0) {
    st = ErrnoStatus(errno, "rename to " + path, final_tmp);
  }
  return st;
}

SafetensorsFileWriter::SafetensorsFileWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafetensorsFileWriter::~SafetensorsFileWriter() = default;

absl::StatusOr<std::unique_ptr<SafetensorsFileWriter>> SafetensorsFileWriter::Create(
    const std::string& path, std::map<std::string, std::string> metadata) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->data_tmp = TempPathFor(path);
  impl->final_tmp = impl->data_tmp + ".final";
  impl->metadata = std::move(metadata);
  impl->fd = ::open(impl->data_tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (impl->fd < 0) {
    impl->finished = true;  // nothing of ours to remove
    return ErrnoStatus(errno, "create", impl->data_tmp);
  }
  return std::unique_ptr<SafetensorsFileWriter>(new SafetensorsFileWriter(std::move(impl)));
}

absl::Status SafetensorsFileWriter::Add(const std::string& name, const TensorView& t) {
  Impl& w = *impl_;
  DGPTQ_RETURN_IF_ERROR(w.Usable());
  DGPTQ_RETURN_IF_ERROR(Annotate(CheckName(name), w.path));
  if (w.names.contains(name)) {
    return absl::InvalidArgumentError(absl::StrCat(w.path, ": duplicate tensor '", name, "'"));
  }
  const absl::StatusOr<uint64_t> bytes = ViewBytes(name, t);
  if (!bytes.ok()) return Annotate(bytes.status(), w.path);
  absl::Status st = WriteAll(w.fd, t.data, *bytes, w.data_tmp);
  if (!st.ok()) {
    w.failed = st;
    return st;
  }
  w.names.insert(name);
  w.tensors.push_back(TensorInfo{name, t.dtype, t.shape, w.offset, w.offset + *bytes});
  w.offset += *bytes;
  return absl::OkStatus();
}

absl::Status SafetensorsFileWriter::Finish() {
  Impl& w = *impl_;
  DGPTQ_RETURN_IF_ERROR(w.Usable());
  DGPTQ_ASSIGN_OR_RETURN(const std::string header, w.HeaderText());
  absl::Status st = w.WriteFinal(header);
  if (!st.ok()) {
    ::unlink(w.final_tmp.c_str());
    w.failed = st;
    return st;
  }
  w.finished = true;
  ::close(w.fd);
  w.fd = -1;
  ::unlink(w.data_tmp.c_str());
  return SyncParentDir(w.path);
}

uint64_t SafetensorsFileWriter::data_bytes() const { return impl_->offset; }

namespace {

constexpr char kIndexFile[] = "model.safetensors.index.json";

bool IsPartName(const std::string& part) {
  if (part.empty() || part.size() > 200 || part.front() == '.') return false;
  for (char c : part) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
      return false;
    }
  }
  return true;
}

std::string PartPath(const std::string& dir, const std::string& part) {
  return absl::StrCat(dir, "/", part, kPartFileSuffix);
}

// Part name -> its tensors, read from the headers; `files` gets part name -> file name.
absl::StatusOr<std::map<std::string, std::vector<TensorInfo>>> ReadParts(
    const std::string& dir, uint64_t* total_bytes) {
  std::map<std::string, std::vector<TensorInfo>> parts;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) return absl::Status(absl::ErrnoToStatusCode(ec.value()), dir + ": " + ec.message());
  const std::string suffix = kPartFileSuffix;
  for (const auto& e : it) {
    const std::string file = e.path().filename().string();
    if (file.size() <= suffix.size() || !absl::EndsWith(file, suffix)) continue;
    const std::string part = file.substr(0, file.size() - suffix.size());
    if (!IsPartName(part)) continue;
    DGPTQ_ASSIGN_OR_RETURN(SafetensorsHeader h, ReadHeaderOnly(e.path().string()));
    for (const TensorInfo& t : h.tensors) *total_bytes += t.end - t.begin;
    parts[part] = std::move(h.tensors);
  }
  return parts;
}

// Tensor -> the file holding it, over `parts` named by `file_of`; InvalidArgument for a
// tensor in two parts.
absl::StatusOr<json> WeightMap(const std::map<std::string, std::vector<TensorInfo>>& parts,
                               const std::function<std::string(const std::string&)>& file_of) {
  json map = json::object();
  std::map<std::string, std::string> owner;
  for (const auto& [part, tensors] : parts) {
    for (const TensorInfo& t : tensors) {
      auto [it, fresh] = owner.emplace(t.name, part);
      if (!fresh) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' is in parts ",
                                                       it->second, " and ", part));
      }
      map[t.name] = file_of(part);
    }
  }
  return map;
}

absl::Status WriteIndex(const std::string& dir, const json& weight_map, uint64_t total_bytes) {
  const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  return WriteFileAtomic(absl::StrCat(dir, "/", kIndexFile), index.dump(2) + "\n");
}

}  // namespace

struct ShardedWriter::Impl {
  std::string dir;
  uint64_t max_shard_bytes = 0;
  std::unique_ptr<SafetensorsFileWriter> current;
  std::string part;  // of `current`
  int64_t current_tensors = 0;
  bool named = false;
  int auto_parts = 0;
  std::set<std::string, std::less<>> names;
  std::set<std::string> parts_used;
  std::vector<std::string> auto_written;  // ended automatic parts: removed if unfinished
  bool finished = false;
  absl::Status failed;  // sticky I/O error

  ~Impl() {
    current.reset();  // removes its own temporaries
    if (!finished) {
      for (const std::string& p : auto_written) ::unlink(PartPath(dir, p).c_str());
    }
  }

  absl::Status Start(const std::string& name, bool is_named) {
    if (!parts_used.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": part '", name, "' was already written"));
    }
    // transformers refuses shards without {"format": "pt"} metadata.
    DGPTQ_ASSIGN_OR_RETURN(current,
                           SafetensorsFileWriter::Create(PartPath(dir, name), {{"format", "pt"}}));
    part = name;
    named = is_named;
    return absl::OkStatus();
  }
  absl::Status End() {
    if (current == nullptr) return absl::OkStatus();
    const bool empty = current->data_bytes() == 0 && current_tensors == 0;
    absl::Status st = empty ? absl::OkStatus() : current->Finish();
    if (st.ok() && !empty && !named) auto_written.push_back(part);
    current.reset();  // an empty part's temporaries are removed unwritten
    current_tensors = 0;
    return st;
  }
  absl::Status Publish();
};

// Renames every part of the directory to its shard name and writes the index (or removes
// a stale one when a single model.safetensors results).
absl::Status ShardedWriter::Impl::Publish() {
  uint64_t total_bytes = 0;
  DGPTQ_ASSIGN_OR_RETURN(auto parts, ReadParts(dir, &total_bytes));
  std::map<std::string, std::string> file_of;
  const size_t n = std::max<size_t>(parts.size(), 1);
  for (const auto& [p, tensors] : parts) {
    const size_t i = file_of.size();
    file_of[p] = n == 1 ? std::string("model.safetensors")
                        : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, n);
  }
  DGPTQ_ASSIGN_OR_RETURN(json weight_map,
                         WeightMap(parts, [&](const std::string& p) { return file_of.at(p); }));
  if (parts.empty()) {  // an empty checkpoint
    DGPTQ_ASSIGN_OR_RETURN(auto w, SafetensorsFileWriter::Create(absl::StrCat(dir, "/model.safetensors"),
                                                                 {{"format", "pt"}}));
    DGPTQ_RETURN_IF_ERROR(w->Finish());
  }
  for (const auto& [p, file] : file_of) {
    const std::string from = PartPath(dir, p), to = absl::StrCat(dir, "/", file);
    if (::rename(from.c_str(), to.c_str()) != 0) return ErrnoStatus(errno, "rename to " + to, from);
  }
  const std::string index_path = absl::StrCat(dir, "/", kIndexFile);
  if (n == 1) {
    // A stale index from an earlier write would shadow model.safetensors for readers.
    if (::unlink(index_path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, "remove stale", index_path);
    }
    return SyncParentDir(index_path);
  }
  return WriteIndex(dir, weight_map, total_bytes);
}

ShardedWriter::ShardedWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ShardedWriter::~ShardedWriter() = default;

absl::StatusOr<std::unique_ptr<ShardedWriter>> ShardedWriter::Create(const std::string& dir,
                                                                     uint64_t max_shard_bytes) {
  if (max_shard_bytes == 0) {
    return absl::InvalidArgumentError("max_shard_bytes must be positive");
  }
  if (::access(dir.c_str(), W_OK) != 0) return ErrnoStatus(errno, "open directory", dir);
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->max_shard_bytes = max_shard_bytes;
  return std::unique_ptr<ShardedWriter>(new ShardedWriter(std::move(impl)));
}

absl::Status ShardedWriter::Add(const std::string& name, const TensorView& t) {
  Impl& w = *impl_;
  if (w.finished) return absl::FailedPreconditionError(w.dir + ": writer already finished");
  if (!w.failed.ok()) return Annotate(w.failed, w.dir + ": writer failed earlier");
  DGPTQ_RETURN_IF_ERROR(Annotate(CheckName(name), w.dir));
  if (w.names.contains(name)) {
    return absl::InvalidArgumentError(absl::StrCat(w.dir, ": duplicate tensor '", name, "'"));
  }
  const absl::StatusOr<uint64_t> bytes = ViewBytes(name, t);
  if (!bytes.ok()) return Annotate(bytes.status(), w.dir);
  // Outside a named part, roll over when this tensor would overflow a non-empty automatic
  // part; a tensor larger than the cap gets a part of its own.
  absl::Status st;
  if (w.current != nullptr && !w.named && w.current->data_bytes() > 0 &&
      w.current->data_bytes() + *bytes > w.max_shard_bytes) {
    st = w.End();
  }
  if (st.ok() && w.current == nullptr) {
    st = w.Start(absl::StrFormat("auto-%05d", ++w.auto_parts), false);
  }
  if (st.ok()) st = w.current->Add(name, t);
  if (!st.ok()) {
    w.failed = st;
    return st;
  }
  ++w.current_tensors;
  w.names.insert(name);
  return absl::OkStatus();
}

absl::Status ShardedWriter::BeginPart(const std::string& part) {
  Impl& w = *impl_;
  if (w.finished) return absl::FailedPreconditionError(w.dir + ": writer already finished");
  if (!w.failed.ok()) return Annotate(w.failed, w.dir + ": writer failed earlier");
  if (!IsPartName(part) || absl::StartsWith(part, "auto-")) {
    return absl::InvalidArgumentError(absl::StrCat("invalid part name '", part, "'"));
  }
  absl::Status st = w.End();
  if (st.ok()) st = w.Start(part, true);
  if (!st.ok()) w.failed = st;
  return st;
}

absl::Status ShardedWriter::EndPart() {
  Impl& w = *impl_;
  if (!w.failed.ok()) return Annotate(w.failed, w.dir + ": writer failed earlier");
  absl::Status st = w.End();
  if (!st.ok()) w.failed = st;
  return st;
}

absl::Status ShardedWriter::Finish() {
  Impl& w = *impl_;
  if (w.finished) return absl::FailedPreconditionError(w.dir + ": writer already finished");
  if (!w.failed.ok()) return Annotate(w.failed, w.dir + ": writer failed earlier");
  absl::Status st = w.End();
  if (st.ok()) st = w.Publish();
  if (!st.ok()) {
    w.failed = st;
    return st;
  }
  w.finished = true;
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, std::vector<std::string>>> ListParts(
    const std::string& dir) {
  uint64_t total = 0;
  DGPTQ_ASSIGN_OR_RETURN(auto parts, ReadParts(dir, &total));
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [p, tensors] : parts) {
    std::vector<std::string>& names = out[p];
    for (const TensorInfo& t : tensors) names.push_back(t.name);
  }
  return out;
}

absl::Status WritePartsIndex(const std::string& dir) {
  uint64_t total = 0;
  DGPTQ_ASSIGN_OR_RETURN(auto parts, ReadParts(dir, &total));
  DGPTQ_ASSIGN_OR_RETURN(json weight_map, WeightMap(parts, [](const std::string& p) {
                           return absl::StrCat(p, kPartFileSuffix);
                         }));
  return WriteIndex(dir, weight_map, total);
}

absl::Status RemoveParts(const std::string& dir, const std::vector<std::string>& parts) {
  for (const std::string& p : parts) {
    if (!IsPartName(p)) return absl::InvalidArgumentError(absl::StrCat("invalid part name '", p, "'"));
    const std::string path = PartPath(dir, p);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, "remove", path);
  }
  return absl::OkStatus();
}

}  // namespace dgptq
