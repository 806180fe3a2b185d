// Host tensors: a dtype, a row-major shape and bytes, either owned or a view into
// memory someone else owns (an mmap'ed safetensors file, a caller's buffer).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace dgptq {

using Shape = std::vector<int64_t>;

// Number of elements of `shape` (1 for a scalar).
int64_t NumElements(const Shape& shape);
std::string ShapeString(const Shape& shape);

// Non-owning, read-only view. Valid while the owner of `data` lives.
struct TensorView {
  DType dtype = DType::kF32;
  Shape shape;
  const void* data = nullptr;

  int64_t numel() const { return NumElements(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }
};

// Owning host tensor (64-byte aligned storage). Movable, not copyable.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape);  // zero-filled
  Tensor(Tensor&&) = default;
  Tensor& operator=(Tensor&&) = default;

  // Deep copy of a view.
  static Tensor CopyOf(const TensorView& v);
  // fp32 copy of a float view (f32/f16/bf16), converting as needed.
  static Tensor ToF32(const TensorView& v);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  void* data() { return storage_.get(); }
  const void* data() const { return storage_.get(); }
  template <typename T>
  T* as() { return static_cast<T*>(data()); }
  template <typename T>
  const T* as() const { return static_cast<const T*>(data()); }
  TensorView view() const { return TensorView{dtype_, shape_, data()}; }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  DType dtype_ = DType::kF32;
  Shape shape_;
  std::unique_ptr<void, Free> storage_;
};

}  // namespace dgptq
