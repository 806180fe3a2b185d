// File helpers shared by the JSON and safetensors readers/writers of common/.
// nlohmann/json stays out of this header on purpose: include it in .cc files only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dgptq {

// Status for a failed system call: NotFound for ENOENT, otherwise the code that
// absl::ErrnoToStatusCode gives. The message reads "<op> <path>: <strerror>".
absl::Status ErrnoStatus(int err, std::string_view op, std::string_view path);

// Whole contents of a regular file. NotFound naming `path` if it does not exist,
// InvalidArgument if it is not a regular file, other I/O errors as ErrnoStatus.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Replaces `path` with `contents` atomically: writes `<path>.tmp.<pid>` in the same
// directory, fsyncs it, renames it over `path` and fsyncs the directory. On error the
// temporary is removed and `path` is untouched.
absl::Status WriteFileAtomic(const std::string& path, std::string_view contents);

// Opens `path` read-only (O_CLOEXEC) and stores its size; the caller closes the fd.
// NotFound if missing, InvalidArgument naming `path` if it is not a regular file.
absl::StatusOr<int> OpenRegularFile(const std::string& path, uint64_t* size);

// Reads exactly `n` bytes at `offset` of `fd` (retrying short reads and EINTR);
// InvalidArgument naming `path` if the file ends first.
absl::Status ReadExactAt(int fd, void* buf, size_t n, uint64_t offset, const std::string& path);

// Writes all `n` bytes to `fd` (retrying short writes and EINTR); `path` names the
// file in errors.
absl::Status WriteAll(int fd, const void* data, size_t n, std::string_view path);

// fsync()s the directory holding `path`, making a rename into it durable.
absl::Status SyncParentDir(const std::string& path);

// "<path>.tmp.<pid>": the temporary name used while `path` is being written.
std::string TempPathFor(const std::string& path);

}  // namespace dgptq
