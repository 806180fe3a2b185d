// Token ids for calibration and evaluation: loading them from files, and cutting them
// into fixed-length windows.
//
// Files (chosen by extension):
//   .txt          UTF-8 text, encoded as one string with the tokenizer (no BOS added);
//   .jsonl        one JSON list of integer ids per line (blank lines are skipped);
//   .npy          int32 or int64 ('<i4' / '<i8'), C order, 1-D or 2-D;
//   .safetensors  the tensor "input_ids", else the only I32/I64 tensor (1-D or 2-D).
// Ids must be in [0, 2^31) and, when a tokenizer is given, in [0, vocab_size()).
// Every malformed input is InvalidArgument naming the file (and the line or field);
// a missing file is NotFound. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/npy.h"  // ParseNpy, IdArray
#include "common/tokenizer.h"

namespace dgptq {

// `count` windows of `seq_len` ids each: ids is [count, seq_len], row-major.
struct TokenWindows {
  int64_t count = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> ids;

  const int32_t* row(int64_t i) const { return ids.data() + i * seq_len; }
};

// Ids of `path`, flattened. `tok` is required for .txt (InvalidArgument if null) and,
// when given, bounds the ids.
absl::StatusOr<std::vector<int32_t>> LoadTokenStream(const std::string& path, const Tokenizer* tok);

// Windows of `seq_len` ids from `path`. 2-D inputs (.npy and .safetensors of rank 2,
// and .jsonl files of two or more lines that all have the same length) keep their
// rows as windows, each truncated to seq_len (a row shorter than seq_len is
// InvalidArgument). Other inputs are streams, cut as EvalWindows(stream, seq_len, 0).
absl::StatusOr<TokenWindows> LoadTokenWindows(const std::string& path, const Tokenizer* tok,
                                              int64_t seq_len);

// Largest number of windows DrawCalibration accepts.
inline constexpr int64_t kMaxCalibrationSamples = int64_t{1} << 20;

// `samples` windows of `seq_len` ids drawn from `stream`, deterministic in `seed`, the
// same on every platform and standard library. The rule: state = seed; for each
// window, draw x from splitmix64 (state += 0x9E3779B97F4A7C15; z = state;
// z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9; z = (z ^ z >> 27) * 0x94D049BB133111EB;
// x = z ^ z >> 31), redrawing while x < 2^64 mod n where n = stream.size() - seq_len + 1
// (so that x mod n is unbiased); the window starts at x mod n. Windows may overlap.
// InvalidArgument (with the numbers) when seq_len <= 0, samples <= 0 or >
// kMaxCalibrationSamples, or the stream is shorter than one window.
absl::StatusOr<TokenWindows> DrawCalibration(const std::vector<int32_t>& stream, int64_t samples,
                                             int64_t seq_len, uint64_t seed);

// Consecutive, non-overlapping windows from the start of `stream` (the GPTQ paper's
// perplexity protocol): window i is stream[i*seq_len, (i+1)*seq_len), the tail shorter
// than a window is dropped, at most `max_windows` are kept (<= 0: all).
// InvalidArgument when seq_len <= 0 or the stream is shorter than one window.
absl::StatusOr<TokenWindows> EvalWindows(const std::vector<int32_t>& stream, int64_t seq_len,
                                         int64_t max_windows);

}  // namespace dgptq
