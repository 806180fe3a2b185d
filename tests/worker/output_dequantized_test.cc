// The dequantized (fake-quant) output format: each quantized linear's `.weight` is the fp32
// QuantizedWeight::Dequantize() for any bits and shape (3 bits, 172 rows: what neither
// packed format stores), config.json is the source's with no quantization_config and a
// dgptq_dequantized record, the directory reads as a plain checkpoint, and `dgptq convert`
// writes it from either packed format but refuses it as a source.
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "tests/worker/output_test_util.h"
#include "worker/output/model_reader.h"
#include "worker/output/model_writer.h"

namespace dgptq::worker {
namespace {

constexpr int64_t kInter = 172;  // a ragged MLP width: 172 * 3 bits is no whole int32 word
const std::string kBiased = "model.layers.0.self_attn.q_proj";

// The linears of the source below, plus an odd 1 x 3 module (the writer needs no model).
std::vector<Linear> RaggedLinears() {
  std::vector<Linear> out = {{"model.extra.odd_proj", 1, 3}};
  for (const Linear& m : Linears()) {
    const bool mlp = m.name.find(".mlp.") != std::string::npos;
    out.push_back(
        {m.name, mlp && m.rows == 96 ? kInter : m.rows, mlp && m.cols == 96 ? kInter : m.cols});
  }
  return out;
}

// WriteSourceModel's llama (bf16) with intermediate_size 172 and weights to match.
void WriteRaggedSource(const std::string& dir) {
  WriteSourceModel(dir, DType::kBF16);
  Json config = ReadJson(dir + "/config.json");
  config["intermediate_size"] = kInter;
  Spit(dir + "/config.json", config.dump(2));
  auto src = Checkpoint::Open(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  std::map<std::string, Tensor> keep;  // everything but the linears, copied before rewriting
  for (const std::string& name : (*src)->TensorNames()) {
    if (name.find("_proj.") != std::string::npos) continue;
    const TensorView v = *(*src)->Get(name);
    keep.emplace(name, Tensor(v.dtype, v.shape));
    std::memcpy(keep.at(name).data(), v.data, v.nbytes());
  }
  src->reset();
  auto w = SafetensorsFileWriter::Create(dir + "/model.safetensors");
  ASSERT_TRUE(w.ok()) << w.status();
  for (const auto& [name, t] : keep) ASSERT_TRUE((*w)->Add(name, t.view()).ok()) << name;
  uint32_t seed = 50;
  for (const Linear& m : RaggedLinears()) {
    if (m.name.rfind("model.layers.", 0) != 0) continue;
    ASSERT_TRUE(
        (*w)->Add(m.name + ".weight", RandomTensor(DType::kBF16, {m.rows, m.cols}, seed++).view())
            .ok());
  }
  ASSERT_TRUE((*w)->Finish().ok());
}

Tensor Bias() { return RandomTensor(DType::kF16, {64}, 9); }

// Writes every RaggedLinears() module (MakeQ), a bias on kBiased, and the source's other
// tensors as stored; returns the quantized weights.
std::map<std::string, QuantizedWeight> WriteDequantized(const WriterOptions& o) {
  std::map<std::string, QuantizedWeight> qs;
  auto w = ModelWriter::Create(o);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return qs;
  const Tensor bias = Bias();
  const TensorView bias_view = bias.view();
  uint32_t seed = 200;
  for (const Linear& m : RaggedLinears()) {
    qs[m.name] = MakeQ(m.rows, m.cols, o.quant, seed++);
    const absl::Status st =
        (*w)->AddQuantized(m.name, qs[m.name], m.name == kBiased ? &bias_view : nullptr);
    EXPECT_TRUE(st.ok()) << m.name << ": " << st;
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

void ExpectRecord(const std::optional<QuantConfig>& got, const QuantConfig& want) {
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->bits, want.bits);
  EXPECT_EQ(got->group_size, want.group_size);
  EXPECT_EQ(got->sym, want.sym);
  EXPECT_EQ(got->act_order, want.act_order);
  EXPECT_EQ(got->static_groups, want.static_groups);
}

class DequantizedTest : public ::testing::Test {
 protected:
  void SetUp() override { WriteRaggedSource(src_); }
  testing::TempDir tmp_;
  std::string src_ = tmp_ / "src";
  std::string out_ = tmp_ / "out";
};

TEST_F(DequantizedTest, AnyBitsAndShapesReadBackExactly) {
  const std::vector<QuantConfig> cases = {
      Config(3, 32, false, true, false),  // act-order g_idx; 172 cols: a last group of 12
      Config(3, -1, true, false, false), Config(2, 64, true, true, true),
      Config(8, 128, false, false, false), Config(4, 32, false, false, false)};
  const Tensor bias = Bias();
  for (const QuantConfig& c : cases) {
    SCOPED_TRACE(c.ToString());
    fs::remove_all(out_);
    const auto qs = WriteDequantized(Options(src_, out_, OutputFormat::kDequantized, c));
    auto r = ModelReader::Open(out_);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE((*r)->quantized());
    EXPECT_FALSE((*r)->format().has_value());
    ExpectRecord((*r)->dequantized(), c);
    EXPECT_TRUE((*r)->QuantizedModules().empty());
    EXPECT_EQ((*r)->PlainTensors().size(), (*r)->TensorNames().size());
    EXPECT_EQ((*r)->config().intermediate_size, kInter);
    EXPECT_EQ((*r)->config().torch_dtype, DType::kBF16);  // fp32 weights in a bf16 config
    for (const auto& [m, q] : qs) {
      const Tensor want = q.Dequantize();
      auto raw = (*r)->Raw(m + ".weight");
      ASSERT_TRUE(raw.ok()) << raw.status();
      EXPECT_EQ(raw->dtype, DType::kF32) << m;
      ASSERT_EQ(raw->shape, (Shape{q.rows, q.cols})) << m;
      ExpectSameFloats(raw->as<float>(), want.as<float>(), want.numel(), m + " raw");
      auto f32 = (*r)->LoadWeightF32(m + ".weight");
      ASSERT_TRUE(f32.ok()) << f32.status();
      ExpectSameFloats(f32->as<float>(), want.as<float>(), want.numel(), m + " f32");
      EXPECT_EQ((*r)->LoadQuantized(m).status().code(), absl::StatusCode::kNotFound);
    }
    auto b = (*r)->Raw(kBiased + ".bias");
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->dtype, DType::kF16);
    EXPECT_EQ(std::memcmp(b->data, bias.data(), bias.nbytes()), 0);
    EXPECT_EQ((*r)->TensorNames().size(), 3 + 2 * 2 + qs.size() + 1);  // + norms, bias
  }
}

TEST_F(DequantizedTest, PackedFormatsCannotStoreItButWriterStillChecksModules) {
  const QuantConfig c = Config(3, 32, true, false, false);
  const QuantizedWeight q = MakeQ(kInter, 64, c, 3);
  auto gptq = ModelWriter::Create(Options(src_, tmp_ / "g", OutputFormat::kGptq, c));
  ASSERT_TRUE(gptq.ok()) << gptq.status();
  EXPECT_EQ((*gptq)->AddQuantized("model.layers.0.mlp.up_proj", q, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ModelWriter::Create(Options(src_, tmp_ / "ct", OutputFormat::kCompressedTensors, c))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);

  auto w = ModelWriter::Create(Options(src_, out_, OutputFormat::kDequantized, c));
  ASSERT_TRUE(w.ok()) << w.status();
  const std::string m = "model.layers.0.mlp.up_proj";
  EXPECT_EQ((*w)->AddQuantized(m, MakeQ(kInter, 64, Config(4, 32, true, false, false), 4), nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);  // bits differ from the record
  EXPECT_EQ((*w)->AddQuantized("lm_head", MakeQ(128, 64, c, 5), nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // ignored
  ASSERT_TRUE((*w)->AddQuantized(m, q, nullptr).ok());
  EXPECT_EQ((*w)->AddQuantized(m, q, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->AddTensor(m + ".weight", q.Dequantize().view()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DequantizedTest, ConfigIsPlainWithRecordAndOverwriteRules) {
  fs::create_directories(out_);
  Spit(out_ + "/config.json", "{\"old\": true}");
  const QuantConfig c = Config(3, 32, false, true, false);
  auto refused = ModelWriter::Create(Options(src_, out_, OutputFormat::kDequantized, c));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Slurp(out_ + "/config.json"), "{\"old\": true}");
  Spit(out_ + "/quantize_config.json", "{}");  // a GPTQ model's leftover must go

  WriterOptions o = Options(src_, out_, OutputFormat::kDequantized, c);
  o.overwrite = true;
  WriteDequantized(o);
  const Json src = ReadJson(src_ + "/config.json"), cfg = ReadJson(out_ + "/config.json");
  ASSERT_TRUE(cfg.is_object());
  EXPECT_FALSE(cfg.contains("quantization_config"));
  for (const auto& [k, v] : src.items()) EXPECT_EQ(cfg[k], v) << k;  // torch_dtype included
  EXPECT_EQ(cfg.size(), src.size() + 1);
  ASSERT_TRUE(cfg.contains(kDequantizedKey));
  const Json record = {{"bits", 3},
                       {"group_size", 32},
                       {"sym", false},
                       {"act_order", true},
                       {"static_groups", false}};
  EXPECT_EQ(cfg[kDequantizedKey], record);
  EXPECT_FALSE(fs::exists(out_ + "/quantize_config.json"));
  for (const char* f : {"tokenizer_config.json", "tokenizer.json", "generation_config.json"}) {
    EXPECT_EQ(Slurp(out_ + "/" + f), Slurp(src_ + "/" + f)) << f;
  }
  EXPECT_FALSE(HasStaging(tmp_.path()));
  auto none = ParseQuantizationConfig(Slurp(out_ + "/config.json"), "", "c");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  // Quantized again into a packed format, the stale record is dropped.
  const std::string std_src = tmp_ / "std_src", again = tmp_ / "again";
  WriteSourceModel(std_src, DType::kBF16);
  const std::string deq_std = tmp_ / "deq_std";
  WriteQuantized(Options(std_src, deq_std, OutputFormat::kDequantized, c));
  WriteQuantized(
      Options(deq_std, again, OutputFormat::kCompressedTensors, Config(4, 32, true, false, false)));
  Json cfg2 = ReadJson(again + "/config.json");
  EXPECT_FALSE(cfg2.contains(kDequantizedKey));
  EXPECT_EQ(cfg2["quantization_config"]["quant_method"], "compressed-tensors");
}

TEST_F(DequantizedTest, ConvertPackedToDequantized) {
  const std::string std_src = tmp_ / "std_src";
  WriteSourceModel(std_src, DType::kBF16);
  struct Case {
    OutputFormat format;
    QuantConfig quant;
    DType dtype;
  };
  for (const Case& k :
       {Case{OutputFormat::kGptq, Config(4, 32, true, true, false), DType::kF16},
        Case{OutputFormat::kCompressedTensors, Config(4, 32, false, true, true), DType::kBF16}}) {
    SCOPED_TRACE(OutputFormatName(k.format));
    const std::string packed = tmp_ / "packed", deq = tmp_ / "deq";
    fs::remove_all(packed);
    fs::remove_all(deq);
    const auto qs = WriteQuantized(Options(std_src, packed, k.format, k.quant, k.dtype));
    const ProcResult p =
        RunDgptq("convert --in " + packed + " --out " + deq + " --format dequantized");
    ASSERT_EQ(p.code, 0) << p.output;
    const Json line = Json::parse(p.output, nullptr, false);
    ASSERT_TRUE(line.is_object()) << p.output;
    EXPECT_EQ(line["format"], "dequantized");
    EXPECT_EQ(line["modules"], 14);
    EXPECT_EQ(line["scales_rounded"], 0);

    auto r = ModelReader::Open(deq);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE((*r)->quantized());
    ExpectRecord((*r)->dequantized(), k.quant);
    for (const auto& [m, q] : qs) {
      const Tensor want = q.Dequantize();
      auto got = (*r)->LoadWeightF32(m + ".weight");
      ASSERT_TRUE(got.ok()) << got.status();
      ExpectSameFloats(got->as<float>(), want.as<float>(), want.numel(), m);
    }
    auto pk = Checkpoint::Open(packed);
    ASSERT_TRUE(pk.ok());
    std::set<std::string> want_names;
    for (const auto& [m, q] : qs) want_names.insert(m + ".weight");
    auto pr = ModelReader::Open(packed);
    ASSERT_TRUE(pr.ok());
    for (const std::string& name : (*pr)->PlainTensors()) {  // passed through byte for byte
      want_names.insert(name);
      const TensorView x = *(*pk)->Get(name), y = *(*r)->Raw(name);
      ASSERT_EQ(x.dtype, y.dtype) << name;
      ASSERT_EQ(x.shape, y.shape) << name;
      EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes()), 0) << name;
    }
    const std::vector<std::string> names = (*r)->TensorNames();
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), want_names);
    const Json cfg = ReadJson(deq + "/config.json");
    EXPECT_FALSE(cfg.contains("quantization_config"));
    EXPECT_TRUE(cfg.contains(kDequantizedKey));
    EXPECT_FALSE(fs::exists(deq + "/quantize_config.json"));
  }
}

TEST_F(DequantizedTest, ConvertFromDequantizedIsRefused) {
  WriteDequantized(
      Options(src_, out_, OutputFormat::kDequantized, Config(4, 32, true, false, false)));
  for (const char* to : {"gptq", "compressed-tensors", "dequantized"}) {
    SCOPED_TRACE(to);
    const std::string dst = tmp_ / "dst";
    const ProcResult p =
        RunDgptq("convert --in " + out_ + " --out " + dst + " --format " + std::string(to));
    EXPECT_EQ(p.code, 1) << p.output;
    EXPECT_NE(p.output.find("dequantized (fake-quant) checkpoint"), std::string::npos) << p.output;
    EXPECT_NE(p.output.find("cannot be converted"), std::string::npos) << p.output;
    EXPECT_FALSE(fs::exists(dst));
  }
  EXPECT_FALSE(HasStaging(tmp_.path()));
}

TEST(DequantizedConfigTest, FormatNamesAndRecordParsing) {
  for (OutputFormat f :
       {OutputFormat::kGptq, OutputFormat::kCompressedTensors, OutputFormat::kDequantized}) {
    auto back = ParseOutputFormat(OutputFormatName(f));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, f);
  }
  EXPECT_STREQ(OutputFormatName(OutputFormat::kDequantized), "dequantized");
  const absl::Status unknown = ParseOutputFormat("fake").status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.message().find("dequantized"), std::string::npos) << unknown;

  const QuantConfig c = Config(2, 64, false, true, true);
  Json cfg = {{"model_type", "llama"}};
  cfg[kDequantizedKey] = Json::parse(BuildDequantizedRecord(c));
  auto rec = ParseDequantizedRecord(cfg.dump(), "cfg.json");
  ASSERT_TRUE(rec.ok()) << rec.status();
  ExpectRecord(*rec, c);
  auto absent = ParseDequantizedRecord(R"({"model_type": "llama"})", "cfg.json");
  ASSERT_TRUE(absent.ok()) << absent.status();
  EXPECT_FALSE(absent->has_value());
  for (const char* bad :
       {R"({"dgptq_dequantized": "w4"})", R"({"dgptq_dequantized": {"group_size": 128}})",
        R"({"dgptq_dequantized": {"bits": 5, "group_size": 128}})",
        R"({"dgptq_dequantized": {"bits": 4, "group_size": 128, "sym": 1}})", "not json"}) {
    const absl::Status st = ParseDequantizedRecord(bad, "cfg.json").status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("cfg.json"), std::string::npos) << st;
  }
}

}  // namespace
}  // namespace dgptq::worker
