#include "common/file_stamp.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/json_util.h"

namespace dgptq {
namespace {

bool Stamped(const std::string& name) {
  return name == "config.json" || name == "model.safetensors.index.json" ||
         absl::EndsWith(name, ".safetensors");
}

absl::StatusOr<FileStamp> Stamp(const std::string& dir, const std::string& name) {
  const std::string path = absl::StrCat(dir, "/", name);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  return FileStamp{name, static_cast<int64_t>(st.st_size),
                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

}  // namespace

absl::StatusOr<std::vector<FileStamp>> StampModelFiles(const std::string& dir) {
  std::vector<FileStamp> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!Stamped(name)) continue;
    absl::StatusOr<FileStamp> s = Stamp(dir, name);
    if (!s.ok()) return s.status();
    out.push_back(*std::move(s));
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  std::sort(out.begin(), out.end(),
            [](const FileStamp& a, const FileStamp& b) { return a.name < b.name; });
  return out;
}

absl::Status CheckModelFiles(const std::string& dir, const std::vector<FileStamp>& planned) {
  const std::string why = " since the job was planned; submit the job again to plan it anew";
  for (const FileStamp& p : planned) {
    absl::StatusOr<FileStamp> now = Stamp(dir, p.name);
    if (!now.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(dir, "/", p.name, " is gone", why));
    }
    if (now->size != p.size || now->mtime_ns != p.mtime_ns) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, "/", p.name, " changed on disk", why, " (size ", p.size, " -> ", now->size,
          now->mtime_ns != p.mtime_ns ? ", modification time changed)" : ")"));
    }
  }
  absl::StatusOr<std::vector<FileStamp>> files = StampModelFiles(dir);
  if (!files.ok()) return files.status();
  for (const FileStamp& f : *files) {
    const bool known = std::any_of(planned.begin(), planned.end(),
                                   [&](const FileStamp& p) { return p.name == f.name; });
    if (!known) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, "/", f.name, " appeared", why));
    }
  }
  return absl::OkStatus();
}

}  // namespace dgptq
