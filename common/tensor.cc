#include "common/tensor.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_join.h"

namespace dgptq {
namespace {

constexpr size_t kAlignment = 64;

[[noreturn]] void Die(const char* what, const Shape& shape) {
  std::fprintf(stderr, "dgptq: Tensor %s for shape %s\n", what, ShapeString(shape).c_str());
  std::abort();
}

}  // namespace

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) { return "[" + absl::StrJoin(shape, ", ") + "]"; }

void Tensor::Free::operator()(void* p) const { std::free(p); }

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_) {
    if (d < 0) Die("negative dimension", shape_);  // programmer invariant: parsers validate
  }
  // aligned_alloc wants a multiple of the alignment; never ask for 0 bytes so that data()
  // is non-null even for empty tensors.
  const size_t bytes = nbytes();
  const size_t rounded =
      bytes == 0 ? kAlignment : (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded < bytes) Die("size overflow", shape_);
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr) Die("out of host memory", shape_);
  std::memset(p, 0, rounded);
  storage_.reset(p);
}

Tensor Tensor::CopyOf(const TensorView& v) {
  Tensor t(v.dtype, v.shape);
  if (t.nbytes() > 0) std::memcpy(t.data(), v.data, t.nbytes());
  return t;
}

Tensor Tensor::ToF32(const TensorView& v) {
  Tensor t(DType::kF32, v.shape);
  ConvertToF32(v.dtype, v.data, t.as<float>(), static_cast<size_t>(t.numel()));
  return t;
}

}  // namespace dgptq
