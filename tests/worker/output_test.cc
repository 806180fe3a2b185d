// Quantized checkpoint writer/reader and `dgptq convert`: both formats read back exactly,
// an independent per-element reader written from the published layouts agrees, the two
// layouts coincide where they should, and bad input is refused without leaving debris.
#include <cstring>
#include <filesystem>
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

class OutputTest : public ::testing::Test {
 protected:
  void SetUp() override { WriteSourceModel(src_, DType::kBF16); }
  testing::TempDir tmp_;
  std::string src_ = tmp_ / "src";
  std::string out_ = tmp_ / "out";
};

struct Case {
  OutputFormat format;
  QuantConfig quant;
  DType dtype;
};

// (a) + (b): both formats read back by ModelReader and by the independent reader.
TEST_F(OutputTest, FormatsReadBackExactly) {
  const std::vector<Case> cases = {
      {OutputFormat::kGptq, Config(4, 32, true, false, false), DType::kF16},
      {OutputFormat::kGptq, Config(4, 32, false, true, false), DType::kF16},
      {OutputFormat::kGptq, Config(3, 32, false, false, false), DType::kF16},
      {OutputFormat::kGptq, Config(8, -1, true, true, false), DType::kF16},
      {OutputFormat::kGptq, Config(2, 64, false, true, true), DType::kF16},
      {OutputFormat::kCompressedTensors, Config(4, 32, true, false, false), DType::kBF16},
      {OutputFormat::kCompressedTensors, Config(4, 32, false, true, false), DType::kF16},
      {OutputFormat::kCompressedTensors, Config(8, -1, false, false, false), DType::kBF16},
      {OutputFormat::kCompressedTensors, Config(4, 64, true, true, true), DType::kBF16},
  };
  for (const Case& k : cases) {
    const std::string what = std::string(OutputFormatName(k.format)) + " " + k.quant.ToString();
    SCOPED_TRACE(what);
    fs::remove_all(out_);
    const auto qs = WriteQuantized(Options(src_, out_, k.format, k.quant, k.dtype));
    auto r = ModelReader::Open(out_);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE((*r)->quantized());
    EXPECT_EQ((*r)->format(), k.format);
    EXPECT_EQ((*r)->quant().ToString(), k.quant.ToString());
    EXPECT_EQ((*r)->QuantizedModules().size(), Linears().size());
    auto ck = Checkpoint::Open(out_);
    ASSERT_TRUE(ck.ok());
    for (const auto& [m, q] : qs) {
      const Tensor want = q.Dequantize();
      auto got = (*r)->LoadQuantized(m);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->codes, q.codes);
      EXPECT_EQ(got->g_idx, q.g_idx);
      ExpectSameFloats(got->Dequantize().as<float>(), want.as<float>(), want.numel(), m);
      auto f32 = (*r)->LoadWeightF32(m + ".weight");
      ASSERT_TRUE(f32.ok()) << f32.status();
      ExpectSameFloats(f32->as<float>(), want.as<float>(), want.numel(), m + " f32");
      const std::vector<float> ind =
          k.format == OutputFormat::kGptq
              ? IndependentGptq(**ck, m, q.bits)
              : IndependentCompressed(**ck, m, q.bits, k.quant.group_size, q.sym);
      ExpectSameFloats(ind.data(), want.as<float>(), want.numel(), m + " independent");
    }
    auto emb = (*r)->LoadWeightF32("model.embed_tokens.weight");
    ASSERT_TRUE(emb.ok());
    const Tensor src_emb =
        Tensor::ToF32(*(*Checkpoint::Open(src_))->Get("model.embed_tokens.weight"));
    ExpectSameFloats(emb->as<float>(), src_emb.as<float>(), src_emb.numel(), "embeddings");
  }
}

// (c) sym int4, static groups + act-order (g_idx = c / group_size), fp16: the two
// layouts are transposes of each other, bit for bit.
TEST_F(OutputTest, StaticActOrderLayoutsAreTransposes) {
  const QuantConfig c = Config(4, 32, true, true, true);
  WriteQuantized(Options(src_, out_, OutputFormat::kGptq, c));
  const std::string ct_dir = tmp_ / "ct";
  WriteQuantized(Options(src_, ct_dir, OutputFormat::kCompressedTensors, c));
  auto gptq = Checkpoint::Open(out_);
  auto ct = Checkpoint::Open(ct_dir);
  ASSERT_TRUE(gptq.ok() && ct.ok());
  for (const Linear& m : Linears()) {
    SCOPED_TRACE(m.name);
    const TensorView qw = *(*gptq)->Get(m.name + ".qweight"),
                     sc = *(*gptq)->Get(m.name + ".scales");
    const TensorView wp = *(*ct)->Get(m.name + ".weight_packed");
    const TensorView ws = *(*ct)->Get(m.name + ".weight_scale");
    ASSERT_EQ(wp.shape, (Shape{qw.shape[1], qw.shape[0]}));
    ASSERT_EQ(ws.shape, (Shape{sc.shape[1], sc.shape[0]}));
    ASSERT_EQ(ws.dtype, DType::kF16);
    int64_t diff = 0;
    for (int64_t i = 0; i < qw.shape[0]; ++i) {
      for (int64_t j = 0; j < qw.shape[1]; ++j) {
        diff += qw.as<int32_t>()[i * qw.shape[1] + j] != wp.as<int32_t>()[j * qw.shape[0] + i];
      }
    }
    for (int64_t i = 0; i < sc.shape[0]; ++i) {
      for (int64_t j = 0; j < sc.shape[1]; ++j) {
        diff += sc.as<uint16_t>()[i * sc.shape[1] + j] != ws.as<uint16_t>()[j * sc.shape[0] + i];
      }
    }
    EXPECT_EQ(diff, 0);
    EXPECT_FALSE((*ct)->Has(m.name + ".weight_g_idx"));       // actorder "weight"
    EXPECT_FALSE((*ct)->Has(m.name + ".weight_zero_point"));  // sym
  }
}

// (d) config.json, quantize_config.json and the tokenizer files.
TEST_F(OutputTest, ConfigAndTokenizerFiles) {
  WriteQuantized(Options(src_, out_, OutputFormat::kGptq, Config(4, 32, false, true, false)));
  const Json src = ReadJson(src_ + "/config.json"), cfg = ReadJson(out_ + "/config.json");
  ASSERT_TRUE(cfg.is_object());
  for (const auto& [k, v] : src.items()) EXPECT_EQ(cfg[k], v) << k;  // torch_dtype included
  const Json& qc = cfg["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "gptq");
  EXPECT_EQ(qc["checkpoint_format"], "gptq");
  EXPECT_EQ(qc["bits"], 4);
  EXPECT_EQ(qc["group_size"], 32);
  EXPECT_EQ(qc["desc_act"], true);
  EXPECT_EQ(qc["sym"], false);
  EXPECT_EQ(qc["lm_head"], false);
  EXPECT_EQ(qc["static_groups"], false);
  EXPECT_EQ(qc["true_sequential"], false);
  EXPECT_DOUBLE_EQ(qc["damp_percent"].get<double>(), 0.01);
  EXPECT_EQ(qc["meta"]["quantizer"][0].get<std::string>().rfind("dgptq:", 0), 0u);
  EXPECT_EQ(ReadJson(out_ + "/quantize_config.json"), qc);
  for (const char* f : {"tokenizer_config.json", "tokenizer.json", "generation_config.json"}) {
    EXPECT_EQ(Slurp(out_ + "/" + f), Slurp(src_ + "/" + f)) << f;
  }
  EXPECT_FALSE(fs::exists(out_ + "/tokenizer.model"));

  const std::string ct_dir = tmp_ / "ct";
  WriteQuantized(Options(src_, ct_dir, OutputFormat::kCompressedTensors,
                         Config(4, 32, true, true, false), DType::kBF16));
  const Json ct = ReadJson(ct_dir + "/config.json")["quantization_config"];
  EXPECT_EQ(ct["quant_method"], "compressed-tensors");
  EXPECT_EQ(ct["format"], "pack-quantized");
  EXPECT_EQ(ct["quantization_status"], "compressed");
  EXPECT_EQ(ct["ignore"], Json::array({"lm_head"}));
  const Json& g = ct["config_groups"]["group_0"];
  EXPECT_EQ(g["targets"], Json::array({"Linear"}));
  EXPECT_TRUE(g["input_activations"].is_null());
  EXPECT_EQ(g["weights"]["num_bits"], 4);
  EXPECT_EQ(g["weights"]["type"], "int");
  EXPECT_EQ(g["weights"]["symmetric"], true);
  EXPECT_EQ(g["weights"]["strategy"], "group");
  EXPECT_EQ(g["weights"]["group_size"], 32);
  EXPECT_EQ(g["weights"]["actorder"], "group");
  EXPECT_EQ(g["weights"]["dynamic"], false);
  EXPECT_FALSE(fs::exists(ct_dir + "/quantize_config.json"));
  EXPECT_EQ(Slurp(ct_dir + "/tokenizer.json"), Slurp(src_ + "/tokenizer.json"));
  auto ck = Checkpoint::Open(ct_dir);
  ASSERT_TRUE(ck.ok());
  EXPECT_TRUE((*ck)->Has("model.layers.0.mlp.up_proj.weight_g_idx"));
  EXPECT_EQ((*(*ck)->Info("model.layers.0.mlp.up_proj.weight_scale")).dtype, DType::kBF16);
  for (const auto& e : fs::directory_iterator(tmp_.path())) {  // no staging left behind
    EXPECT_EQ(e.path().filename().string().find(".partial"), std::string::npos) << e.path();
  }
}

// (e) gptq -> compressed-tensors -> gptq with the CLI: byte-identical packed tensors.
TEST_F(OutputTest, ConvertRoundTripIsByteIdentical) {
  const std::string ct_dir = tmp_ / "ct", back = tmp_ / "back";
  const auto qs =
      WriteQuantized(Options(src_, out_, OutputFormat::kGptq, Config(4, 32, false, true, false)));
  ProcResult r =
      RunDgptq("convert --in " + out_ + " --out " + ct_dir + " --format compressed-tensors");
  ASSERT_EQ(r.code, 0) << r.output;
  const Json line = Json::parse(r.output, nullptr, false);
  ASSERT_TRUE(line.is_object()) << r.output;
  EXPECT_EQ(line["modules"], 14);
  EXPECT_EQ(line["scales_rounded"], 0);
  EXPECT_EQ(line["format"], "compressed-tensors");
  r = RunDgptq("convert --in " + ct_dir + " --out " + back + " --format gptq");
  ASSERT_EQ(r.code, 0) << r.output;

  auto mid = ModelReader::Open(ct_dir);
  ASSERT_TRUE(mid.ok()) << mid.status();
  EXPECT_EQ((*mid)->format(), OutputFormat::kCompressedTensors);
  EXPECT_EQ((*mid)->ignore(), std::vector<std::string>{"lm_head"});
  auto a = Checkpoint::Open(out_);
  auto b = Checkpoint::Open(back);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->TensorNames(), (*b)->TensorNames());
  for (const std::string& name : (*a)->TensorNames()) {
    const TensorView x = *(*a)->Get(name), y = *(*b)->Get(name);
    ASSERT_EQ(x.dtype, y.dtype) << name;
    ASSERT_EQ(x.shape, y.shape) << name;
    EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes()), 0) << name;
  }
  for (const auto& [m, q] : qs) {
    const Tensor want = q.Dequantize();
    auto got = (*mid)->LoadWeightF32(m + ".weight");
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectSameFloats(got->as<float>(), want.as<float>(), want.numel(), m);
  }
  EXPECT_EQ(ReadJson(back + "/config.json")["quantization_config"],
            ReadJson(out_ + "/config.json")["quantization_config"]);
}

TEST_F(OutputTest, ConvertUsageAndFailureExitCodes) {
  EXPECT_EQ(RunDgptq("convert --in " + src_ + " --out " + out_).code, 2);  // no --format
  EXPECT_EQ(RunDgptq("convert --in " + src_ + " --out " + out_ + " --format awq").code, 2);
  const ProcResult r = RunDgptq("convert --in " + src_ + " --out " + out_ + " --format gptq");
  EXPECT_EQ(r.code, 1);  // not quantized
  EXPECT_NE(r.output.find("not a quantized checkpoint"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_));
}

// (f) an existing model is neither overwritten nor touched without overwrite.
TEST_F(OutputTest, RefusesExistingModelUnlessOverwrite) {
  fs::create_directories(out_);
  Spit(out_ + "/config.json", "{\"old\": true}");
  const QuantConfig c = Config(4, 32, true, false, false);
  auto w = ModelWriter::Create(Options(src_, out_, OutputFormat::kGptq, c));
  ASSERT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(w.status().message().find("--overwrite"), std::string::npos) << w.status();
  EXPECT_EQ(Slurp(out_ + "/config.json"), "{\"old\": true}");
  EXPECT_EQ(std::distance(fs::directory_iterator(out_), fs::directory_iterator()), 1);
  EXPECT_FALSE(HasStaging(tmp_.path()));

  WriterOptions o = Options(src_, out_, OutputFormat::kGptq, c);
  o.overwrite = true;
  WriteQuantized(o);
  EXPECT_TRUE(ReadJson(out_ + "/config.json").contains("quantization_config"));
  EXPECT_FALSE(HasStaging(tmp_.path()));

  const std::string empty = tmp_ / "empty";  // an empty directory is fine
  fs::create_directories(empty);
  WriteQuantized(Options(src_, empty, OutputFormat::kGptq, c));
  EXPECT_TRUE(fs::exists(empty + "/model.safetensors"));
}

TEST_F(OutputTest, AbandonedWriterLeavesNothing) {
  {
    auto w = ModelWriter::Create(
        Options(src_, out_, OutputFormat::kCompressedTensors, Config(4, 32, true, false, false)));
    ASSERT_TRUE(w.ok()) << w.status();
    const QuantizedWeight q = MakeQ(64, 64, (*w)->options().quant, 7);
    ASSERT_TRUE((*w)->AddQuantized("model.layers.0.self_attn.q_proj", q, nullptr).ok());
    EXPECT_TRUE(HasStaging(tmp_.path()));
  }
  EXPECT_FALSE(fs::exists(out_));
  EXPECT_FALSE(HasStaging(tmp_.path()));
}

TEST_F(OutputTest, RefusesBadOptions) {
  const QuantConfig c = Config(4, 32, true, false, false);
  for (const std::string& out : {src_, src_ + "/", src_ + "/."}) {
    auto w = ModelWriter::Create(Options(src_, out, OutputFormat::kGptq, c));
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << out;
  }
  auto w3 = ModelWriter::Create(
      Options(src_, out_, OutputFormat::kCompressedTensors, Config(3, 32, true, false, false)));
  EXPECT_EQ(w3.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(w3.status().message().find("--format gptq"), std::string::npos) << w3.status();
  auto nosrc = ModelWriter::Create(Options(tmp_ / "missing", out_, OutputFormat::kGptq, c));
  EXPECT_EQ(nosrc.status().code(), absl::StatusCode::kNotFound) << nosrc.status();
  EXPECT_FALSE(fs::exists(out_));
  EXPECT_FALSE(HasStaging(tmp_.path()));
}

// Refusal of `q` as `module`, naming the module and mentioning `hint`.
void ExpectRefused(ModelWriter& w, const std::string& module, const QuantizedWeight& q,
                   const std::string& hint) {
  const absl::Status st = w.AddQuantized(module, q, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << module << ": " << st;
  if (!module.empty()) {
    EXPECT_NE(st.message().find(module), std::string::npos) << st;
  }
  EXPECT_NE(st.message().find(hint), std::string::npos) << st;
}

TEST_F(OutputTest, RefusesBadModules) {
  const std::string m = "model.layers.0.mlp.up_proj";
  auto w = ModelWriter::Create(
      Options(src_, out_, OutputFormat::kGptq, Config(4, 32, false, false, false)));
  ASSERT_TRUE(w.ok()) << w.status();
  const QuantConfig& c = (*w)->options().quant;
  QuantizedWeight zero0 = MakeQ(96, 64, c, 1);
  zero0.zeros[5] = 0.0f;  // v1 stores zero - 1
  ExpectRefused(**w, m, zero0, "--format compressed-tensors");
  ExpectRefused(**w, m, MakeQ(36, 64, c, 2), "--format compressed-tensors");  // 36*4 % 32
  QuantizedWeight perm = MakeQ(96, 64, Config(4, 32, false, true, false), 3);
  ExpectRefused(**w, m, perm, "act_order");  // permuted g_idx, desc_act false
  ExpectRefused(**w, m, MakeQ(96, 64, Config(8, 32, false, false, false), 4), "bits");
  QuantizedWeight bad = MakeQ(96, 64, c, 5);
  bad.codes.pop_back();
  ExpectRefused(**w, m, bad, "codes");
  const Tensor bias(DType::kF32, {95});
  const TensorView bias_view = bias.view();
  EXPECT_EQ((*w)->AddQuantized(m, MakeQ(96, 64, c, 6), &bias_view).code(),
            absl::StatusCode::kInvalidArgument);
  for (const std::string& name : {std::string(), std::string("a..b"), std::string("a/b"),
                                  std::string(".a"), std::string("lm_head")}) {
    ExpectRefused(**w, name, MakeQ(96, 64, c, 7), name.empty() ? "invalid" : "");
  }
  ASSERT_TRUE((*w)->AddQuantized(m, MakeQ(96, 64, c, 8), nullptr).ok());
  ExpectRefused(**w, m, MakeQ(96, 64, c, 9), "already");
  EXPECT_EQ((*w)->AddTensor(m + ".weight", bias_view).code(), absl::StatusCode::kInvalidArgument);

  auto ct = ModelWriter::Create(Options(src_, tmp_ / "ct", OutputFormat::kCompressedTensors,
                                        Config(4, 32, false, false, false)));
  ASSERT_TRUE(ct.ok()) << ct.status();
  QuantizedWeight big_zero = MakeQ(96, 64, (*ct)->options().quant, 10);
  big_zero.zeros[3] = 16.0f;  // what a GPTQ v1 all-ones zero field decodes to
  ExpectRefused(**ct, m, big_zero, "--format gptq");
  ExpectRefused(**ct, m, MakeQ(96, 64, Config(3, 32, false, false, false), 11), "bits");
}

TEST_F(OutputTest, ReaderRefusesUnknownQuantMethod) {
  WriteQuantized(Options(src_, out_, OutputFormat::kGptq, Config(4, 32, true, false, false)));
  Json cfg = ReadJson(out_ + "/config.json");
  cfg["quantization_config"]["quant_method"] = "awq";
  Spit(out_ + "/config.json", cfg.dump());
  auto r = ModelReader::Open(out_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'awq'"), std::string::npos) << r.status();
  cfg["quantization_config"]["quant_method"] = "gptq";
  cfg["quantization_config"]["checkpoint_format"] = "gptq_v2";
  Spit(out_ + "/config.json", cfg.dump());
  EXPECT_EQ(ModelReader::Open(out_).status().code(), absl::StatusCode::kInvalidArgument);

  auto plain = ModelReader::Open(src_);  // an original checkpoint
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE((*plain)->quantized());
  EXPECT_FALSE((*plain)->format().has_value());
  EXPECT_EQ((*plain)->LoadQuantized("lm_head").status().code(), absl::StatusCode::kNotFound);
  auto w = (*plain)->LoadWeightF32("model.layers.1.mlp.down_proj.weight");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->shape(), (Shape{64, 96}));
}

TEST(HfQuantConfigTest, BuildParseRoundTripAndForeignConfigs) {
  HfQuantInfo gptq{OutputFormat::kGptq,
                   Config(4, 128, false, true, true),
                   false,
                   {"lm_head", "model.layers.1.mlp.down_proj"}};
  const Json qc = Json::parse(BuildQuantizationConfig(gptq, "dgptq:test"));
  EXPECT_EQ(qc["desc_act"], false);  // static groups: g_idx is c / group_size
  EXPECT_TRUE(qc["dynamic"].contains("-:^model\\.layers\\.1\\.mlp\\.down_proj$"));
  auto back = ParseQuantizationConfig(Json({{"quantization_config", qc}}).dump(), "", "c");
  ASSERT_TRUE(back.ok() && back->has_value()) << back.status();
  EXPECT_EQ((*back)->quant.ToString(), gptq.quant.ToString());
  EXPECT_EQ((*back)->ignore, std::vector<std::string>{"model.layers.1.mlp.down_proj"});

  // llm-compressor style: channel strategy, "static" actorder alias.
  const Json ct = {{"quant_method", "compressed-tensors"},
                   {"format", "pack-quantized"},
                   {"ignore", {"lm_head"}},
                   {"config_groups",
                    {{"group_0",
                      {{"targets", {"Linear"}},
                       {"weights",
                        {{"num_bits", 8},
                         {"type", "int"},
                         {"symmetric", true},
                         {"strategy", "channel"},
                         {"group_size", nullptr},
                         {"actorder", "static"},
                         {"dynamic", false}}}}}}}};
  auto c = ParseQuantizationConfig(Json({{"quantization_config", ct}}).dump(), "", "c");
  ASSERT_TRUE(c.ok() && c->has_value()) << c.status();
  EXPECT_EQ((*c)->quant.ToString(), Config(8, -1, true, true, false).ToString());

  // AutoGPTQ: no quantization_config, quantize_config.json without quant_method.
  auto old = ParseQuantizationConfig(R"({"model_type": "llama"})",
                                     R"({"bits": 4, "group_size": 128, "desc_act": false})", "c");
  ASSERT_TRUE(old.ok() && old->has_value()) << old.status();
  EXPECT_EQ((*old)->format, OutputFormat::kGptq);
  auto none = ParseQuantizationConfig(R"({"model_type": "llama"})", "", "c");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  for (const char* bad : {R"({"quantization_config": {"quant_method": "gptq", "bits": "4"}})",
                          R"({"quantization_config": {"quant_method": "compressed-tensors",
                              "format": "float-quantized", "config_groups": {"g": {}}}})",
                          "not json"}) {
    EXPECT_EQ(ParseQuantizationConfig(bad, "", "c").status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

}  // namespace
}  // namespace dgptq::worker
