// A minimal reader of NumPy .npy files holding token ids. Pure, thread-safe.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dgptq {

// Token ids with a 1-D [n] or 2-D [rows, cols] shape, row-major.
struct IdArray {
  std::vector<int64_t> shape;
  std::vector<int32_t> ids;
};

// Parses the bytes of a .npy file (format versions 1, 2 and 3): the magic "\x93NUMPY",
// the header length (u16 LE in version 1, u32 LE in 2 and 3), the header — a Python
// dict literal with exactly the keys 'descr' ('<i4' or '<i8'), 'fortran_order'
// (False) and 'shape' (a tuple of one or two non-negative ints), padded with
// whitespace — then exactly shape-many little-endian elements. int64 values must fit
// in int32. InvalidArgument naming `source` for anything else. The entry point of the
// fuzz target fuzz/fuzz_npy.cc.
absl::StatusOr<IdArray> ParseNpy(std::string_view bytes, std::string_view source);

}  // namespace dgptq
