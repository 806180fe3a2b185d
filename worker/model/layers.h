// Shared building blocks of the decoder models: device tensors loaded from a
// checkpoint, linear layers, rotary frequencies and per-forward scratch space.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "kernels/backend.h"
#include "worker/output/model_reader.h"

namespace dgptq::worker {

// An fp32 tensor on the backend's device; 1-D tensors are a single row.
struct DeviceTensor {
  kernels::Buffer buf;
  kernels::Mat mat;
  int64_t numel() const { return mat.rows * mat.cols; }
};

// Allocates an fp32 [rows, cols] device tensor (zeroed).
absl::StatusOr<DeviceTensor> NewDeviceTensor(kernels::Backend& b, int64_t rows, int64_t cols);
// Uploads a host tensor of any float dtype as fp32 (1-D -> [1, n]).
absl::StatusOr<DeviceTensor> UploadF32(kernels::Backend& b, const TensorView& t);
// Loads `name` from the checkpoint as fp32 on the device, dequantizing quantized linear
// weights, and checks its shape: InvalidArgument naming the tensor, the expected and
// the stored shapes on a mismatch (e.g. a config.json that disagrees with the weights).
absl::StatusOr<DeviceTensor> LoadTensor(kernels::Backend& b, ModelReader& r,
                                        const std::string& name, const Shape& expected);

// The weights of one decoder layer, by name relative to the layer prefix
// (e.g. "self_attn.q_proj.weight").
struct LayerWeights {
  int layer = 0;
  std::map<std::string, DeviceTensor> t;
  const kernels::Mat& mat(const std::string& name) const { return t.at(name).mat; }
  const float* ptr(const std::string& name) const { return t.at(name).mat.data; }
  bool has(const std::string& name) const { return t.count(name) != 0; }
};

// out = x W^T (+ bias). W is [out_features, in_features]; `bf16`: Backend::GemmBf16.
absl::Status Linear(kernels::Backend& b, const kernels::Mat& x, const kernels::Mat& w,
                    const float* bias, const kernels::Mat& out, bool bf16 = false);

// Rotary inverse frequencies [head_dim / 2] as transformers computes them in fp32,
// including "linear" and "llama3" rope_scaling; InvalidArgument for other types.
absl::StatusOr<std::vector<float>> RopeInvFreq(const ModelConfig& c);

}  // namespace dgptq::worker
