// Helpers of output_test.cc: a tiny synthetic llama source model, random quantized
// weights, and an independent reader of the two published layouts (per-element bit
// extraction and its own fp16/bf16 decoding; no kernels/packing.h, no ModelReader).
#pragma once

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "common/safetensors_writer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/output/model_writer.h"

namespace dgptq::worker {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using kernels::QuantizedWeight;

struct Linear {
  std::string name;
  int64_t rows, cols;
};

inline std::vector<Linear> Linears() {
  std::vector<Linear> out;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "self_attn.q_proj", 64, 64});
    out.push_back({p + "self_attn.k_proj", 32, 64});
    out.push_back({p + "self_attn.v_proj", 32, 64});
    out.push_back({p + "self_attn.o_proj", 64, 64});
    out.push_back({p + "mlp.gate_proj", 96, 64});
    out.push_back({p + "mlp.up_proj", 96, 64});
    out.push_back({p + "mlp.down_proj", 64, 96});
  }
  return out;
}

inline std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
inline void Spit(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
inline Json ReadJson(const std::string& path) { return Json::parse(Slurp(path), nullptr, false); }

inline Tensor RandomTensor(DType dtype, Shape shape, uint32_t seed) {
  const std::vector<float> v = testing::RandomNormal(NumElements(shape), seed, 0.05f);
  Tensor t(dtype, shape);
  ConvertFromF32(v.data(), dtype, t.data(), v.size());
  return t;
}

// A tiny llama source model: config, tokenizer files and bf16/fp16 weights.
inline void WriteSourceModel(const std::string& dir, DType dtype) {
  fs::create_directories(dir);
  const Json config = {{"architectures", {"LlamaForCausalLM"}},
                       {"model_type", "llama"},
                       {"hidden_size", 64},
                       {"intermediate_size", 96},
                       {"num_hidden_layers", 2},
                       {"num_attention_heads", 4},
                       {"num_key_value_heads", 2},
                       {"vocab_size", 128},
                       {"torch_dtype", dtype == DType::kF16 ? "float16" : "bfloat16"}};
  Spit(dir + "/config.json", config.dump(2));
  Spit(dir + "/tokenizer_config.json", R"({"model_max_length": 2048})");
  Spit(dir + "/tokenizer.json", R"({"version": "1.0", "model": {"type": "BPE"}})");
  Spit(dir + "/generation_config.json", R"({"bos_token_id": 1})");
  auto w = SafetensorsFileWriter::Create(dir + "/model.safetensors");
  ASSERT_TRUE(w.ok()) << w.status();
  uint32_t seed = 1;
  const auto add = [&](const std::string& name, Shape shape) {
    ASSERT_TRUE((*w)->Add(name, RandomTensor(dtype, shape, seed++).view()).ok());
  };
  add("model.embed_tokens.weight", {128, 64});
  add("model.norm.weight", {64});
  add("lm_head.weight", {128, 64});
  for (int l = 0; l < 2; ++l) {
    add("model.layers." + std::to_string(l) + ".input_layernorm.weight", {64});
    add("model.layers." + std::to_string(l) + ".post_attention_layernorm.weight", {64});
  }
  for (const Linear& m : Linears()) add(m.name + ".weight", {m.rows, m.cols});
  ASSERT_TRUE((*w)->Finish().ok());
}

// Random codes; scales with 7 significant bits (exact in fp16 and bf16); act-order with
// dynamic groups permutes g_idx (g_idx[perm[i]] = i / group_size).
inline QuantizedWeight MakeQ(int64_t rows, int64_t cols, const QuantConfig& c, uint32_t seed) {
  std::mt19937 gen(seed);
  QuantizedWeight q;
  q.bits = c.bits;
  q.group_size = c.group_size;
  q.sym = c.sym;
  q.rows = rows;
  q.cols = cols;
  const int64_t groups = c.NumGroups(cols), maxq = (1 << c.bits) - 1;
  for (int64_t i = 0; i < rows * cols; ++i) q.codes.push_back(gen() % (maxq + 1));
  for (int64_t i = 0; i < groups * rows; ++i) {
    q.scales.push_back(std::ldexp(static_cast<float>(64 + gen() % 64), -16 + int(gen() % 4)));
    q.zeros.push_back(c.sym ? float(1 << (c.bits - 1)) : float(1 + gen() % maxq));
  }
  std::vector<int32_t> perm(cols);
  std::iota(perm.begin(), perm.end(), 0);
  if (c.act_order && !c.static_groups) std::shuffle(perm.begin(), perm.end(), gen);
  q.g_idx.resize(cols);
  for (int64_t i = 0; i < cols; ++i) q.g_idx[perm[i]] = c.group_size > 0 ? i / c.group_size : 0;
  return q;
}

inline QuantConfig Config(int bits, int group_size, bool sym, bool act_order, bool static_groups) {
  QuantConfig c;
  c.bits = bits;
  c.group_size = group_size;
  c.sym = sym;
  c.act_order = act_order;
  c.static_groups = static_groups;
  return c;
}

inline WriterOptions Options(const std::string& src, const std::string& out, OutputFormat f,
                             const QuantConfig& c, DType dtype = DType::kF16) {
  WriterOptions o;
  o.src_model_dir = src;
  o.out_dir = out;
  o.format = f;
  o.quant = c;
  o.model_dtype = dtype;
  o.ignore = {"lm_head"};
  return o;
}

// Writes every linear of the source quantized (MakeQ) and the rest as stored.
inline std::map<std::string, QuantizedWeight> WriteQuantized(const WriterOptions& o) {
  std::map<std::string, QuantizedWeight> qs;
  auto w = ModelWriter::Create(o);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return qs;
  uint32_t seed = 100;
  for (const Linear& m : Linears()) {
    qs[m.name] = MakeQ(m.rows, m.cols, o.quant, seed++);
    EXPECT_TRUE((*w)->AddQuantized(m.name, qs[m.name], nullptr).ok()) << m.name;
  }
  auto src = Checkpoint::Open(o.src_model_dir);
  EXPECT_TRUE(src.ok());
  for (const std::string& name : (*src)->TensorNames()) {
    if (name.find("_proj.") != std::string::npos) continue;
    EXPECT_TRUE((*w)->AddTensor(name, *(*src)->Get(name)).ok()) << name;
  }
  const absl::Status st = (*w)->Finish();
  EXPECT_TRUE(st.ok()) << st;
  return qs;
}

// ---- Independent reader: the published layouts, one element at a time. ----

inline float Half(uint16_t h) {  // IEEE binary16
  const int e = (h >> 10) & 31, m = h & 1023;
  const float v = e == 0 ? std::ldexp(float(m), -24) : std::ldexp(float(m | 1024), e - 25);
  return (h & 0x8000) ? -v : v;
}
inline float ScaleAt(const TensorView& t, int64_t i) {
  const uint16_t b = t.as<uint16_t>()[i];
  if (t.dtype == DType::kF16) return Half(b);
  uint32_t u = uint32_t(b) << 16;  // bfloat16: the high half of a float
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Field i of a little-endian bit stream of `bits`-bit fields; word(k) gives word k.
template <typename Word>
inline uint32_t Field(Word word, int64_t i, int bits) {
  const int64_t bit = i * bits;
  uint64_t v = uint64_t(uint32_t(word(bit / 32))) >> (bit % 32);
  if (bit % 32 + bits > 32) v |= uint64_t(uint32_t(word(bit / 32 + 1))) << (32 - bit % 32);
  return uint32_t(v) & ((1u << bits) - 1);
}

inline std::vector<float> IndependentGptq(Checkpoint& ck, const std::string& m, int bits) {
  const TensorView qw = *ck.Get(m + ".qweight"), qz = *ck.Get(m + ".qzeros");
  const TensorView sc = *ck.Get(m + ".scales"), gi = *ck.Get(m + ".g_idx");
  const int64_t rows = sc.shape[1], cols = gi.shape[0];
  std::vector<float> w(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = gi.as<int32_t>()[c];
      const uint32_t q = Field([&](int64_t k) { return qw.as<int32_t>()[k * rows + r]; }, c, bits);
      const uint32_t z =
          Field([&](int64_t k) { return qz.as<int32_t>()[g * qz.shape[1] + k]; }, r, bits) + 1;
      w[r * cols + c] = ScaleAt(sc, g * rows + r) * (float(q) - float(z));
    }
  }
  return w;
}

inline std::vector<float> IndependentCompressed(Checkpoint& ck, const std::string& m, int bits,
                                                int group_size, bool sym) {
  const TensorView wp = *ck.Get(m + ".weight_packed"), ws = *ck.Get(m + ".weight_scale");
  const TensorView shape = *ck.Get(m + ".weight_shape");
  const int64_t rows = shape.as<int64_t>()[0], cols = shape.as<int64_t>()[1];
  const int64_t groups = ws.shape[1];
  const bool has_g = ck.Has(m + ".weight_g_idx");
  std::vector<float> w(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = has_g ? (*ck.Get(m + ".weight_g_idx")).as<int32_t>()[c]
                              : (group_size > 0 ? c / group_size : 0);
      const auto row = [&](int64_t k) { return wp.as<int32_t>()[r * wp.shape[1] + k]; };
      // Packed fields are signed values + 2^(bits-1); the zero point packs the same way.
      const int q = int(Field(row, c, bits)) - (1 << (bits - 1));
      int z = 0;
      if (!sym) {
        const TensorView zp = *ck.Get(m + ".weight_zero_point");
        z = int(Field([&](int64_t k) { return zp.as<int32_t>()[k * groups + g]; }, r, bits)) -
            (1 << (bits - 1));
      }
      w[r * cols + c] = ScaleAt(ws, r * groups + g) * float(q - z);
    }
  }
  return w;
}

inline void ExpectSameFloats(const float* a, const float* b, size_t n, const std::string& what) {
  EXPECT_EQ(std::memcmp(a, b, n * sizeof(float)), 0) << what;
}

struct ProcResult {
  int code;
  std::string output;
};
inline ProcResult RunDgptq(const std::string& args) {
  const std::string cmd = std::string(DGPTQ_BINARY_DIR) + "/worker/dgptq " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ProcResult r{-1, ""};
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// A small synthetic Llama (hidden 64, 4 heads / 2 KV heads) with `layers` layers made by
// `dgptq make-model` under `model`, and calibration text of `lines` lines at `calib`.
inline ProcResult MakeSmallModel(const std::string& model, int layers, const std::string& calib,
                                 int lines) {
  std::string text;
  for (int i = 0; i < lines; ++i) text += "Line " + std::to_string(i * 7) + ": the quick brown fox. ";
  Spit(calib, text);
  return RunDgptq("make-model --out " + model + " --hidden 64 --layers " +
                  std::to_string(layers) +
                  " --heads 4 --kv-heads 2 --intermediate 128 --vocab 300 --max-position 256");
}

inline bool HasStaging(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".partial") != std::string::npos || n.find(".old-") != std::string::npos) {
      return true;
    }
  }
  return false;
}

}  // namespace dgptq::worker
