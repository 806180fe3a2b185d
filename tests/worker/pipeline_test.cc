// The one-process pipeline end to end: quality on the real models in ../shared,
// bad input, and the `dgptq quantize` / `eval` / `make-model` commands.
#include "worker/quant/pipeline.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_format.h"

#include "common/token_data.h"
#include "tests/test_util.h"
#include "tests/worker/pipeline_test_util.h"
#include "worker/model/eval.h"

namespace dgptq::worker {
namespace {

using dgptq::testing::TempDir;

class SharedModelQuality : public ::testing::TestWithParam<const char*> {};

// GPTQ beats RTN at 4 and 3 bits (w?g128, act-order), calibrating on the training part
// of the text and evaluating on held-out windows.
TEST_P(SharedModelQuality, GptqBeatsRtn) {
  const std::string shared = dgptq::testing::SharedDir();
  if (shared.empty()) GTEST_SKIP() << "../shared is absent";
  const std::string model = shared + "/models/" + GetParam();
  auto eval = LoadTokenWindows(shared + "/data/tinystories/eval_windows_256.npy", nullptr, 256);
  ASSERT_TRUE(eval.ok());
  eval->count = 128;
  eval->ids.resize(128 * 256);
  TempDir tmp;
  for (int bits : {4, 3}) {
    double ppl[2];
    for (bool rtn : {true, false}) {
      QuantizeOptions o;
      o.model_dir = model;
      o.out_dir = tmp / absl::StrFormat("w%d_%s", bits, rtn ? "rtn" : "gptq");
      o.calib_path = shared + "/data/tinystories/calib_128x256.npy";
      o.samples = 128;
      o.seq_len = 256;
      o.quant.bits = bits;
      o.quant.act_order = true;
      o.rtn = rtn;
      o.format = OutputFormat::kDequantized;
      auto report = Quantize(o, nullptr);
      ASSERT_TRUE(report.ok()) << report.status();
      EXPECT_EQ(report->modules.size(), 7u * ModelReader::Open(model).value()->config().num_hidden_layers);
      ppl[rtn] = Perplexity(o.out_dir, *eval, 64);
    }
    std::printf("%s w%dg128: RTN %.4f GPTQ %.4f\n", GetParam(), bits, ppl[1], ppl[0]);
    EXPECT_LT(ppl[0], ppl[1]) << "bits " << bits;
  }
}

INSTANTIATE_TEST_SUITE_P(Shared, SharedModelQuality,
                         ::testing::Values("stories260k-llama", "tinystories-llama-3m"),
                         [](const auto& i) {
                           std::string n = i.param;
                           for (char& c : n) if (c == '-') c = '_';
                           return n;
                         });

// A small synthetic model and calibration text for the bad-input tests.
class PipelineInput : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = tmp_ / "model";
    calib_ = tmp_ / "calib.txt";
    auto r = MakeSmallModel(model_, 2, calib_, 200);
    ASSERT_EQ(r.code, 0) << r.output;
  }
  QuantizeOptions Options(const std::string& out) const {
    QuantizeOptions o;
    o.model_dir = model_;
    o.out_dir = tmp_ / out;
    o.calib_path = calib_;
    o.samples = 8;
    o.seq_len = 64;
    o.quant.group_size = 32;
    return o;
  }
  void EditConfig(const std::function<void(Json&)>& edit) {
    auto j = ReadJson(model_ + "/config.json");
    edit(j);
    Spit(model_ + "/config.json", j.dump());
  }
  // The failed run left nothing under the output name, nor any staging directory.
  void ExpectNoOutput(const QuantizeOptions& o) {
    EXPECT_FALSE(fs::exists(o.out_dir)) << o.out_dir;
    EXPECT_FALSE(HasStaging(tmp_.path()));
  }
  TempDir tmp_;
  std::string model_, calib_;
};

TEST_F(PipelineInput, QuantizesAndRefusesToOverwrite) {
  QuantizeOptions o = Options("out");
  auto r = Quantize(o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->modules.size(), 14u);
  EXPECT_GT(r->peak_rss_bytes, 0);
  auto again = Quantize(o, nullptr);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("overwrite"), std::string::npos);
  EXPECT_TRUE(fs::exists(o.out_dir + "/config.json"));
  o.overwrite = true;
  EXPECT_TRUE(Quantize(o, nullptr).ok());
}

TEST_F(PipelineInput, MissingConfigIsNotFound) {
  fs::remove(model_ + "/config.json");
  const QuantizeOptions o = Options("out");
  EXPECT_EQ(Quantize(o, nullptr).status().code(), absl::StatusCode::kNotFound);
  ExpectNoOutput(o);
}

TEST_F(PipelineInput, UnsupportedModelTypeListsTheSupportedOnes) {
  EditConfig([](auto& j) { j["model_type"] = "gpt2"; });
  const QuantizeOptions o = Options("out");
  auto r = Quantize(o, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("llama"), std::string::npos) << r.status();
  ExpectNoOutput(o);
}

TEST_F(PipelineInput, MissingTensorIsNamed) {
  EditConfig([](auto& j) { j["num_hidden_layers"] = 3; });
  const QuantizeOptions o = Options("out");
  auto r = Quantize(o, nullptr);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.layers.2."), std::string::npos) << r.status();
  ExpectNoOutput(o);
}

TEST_F(PipelineInput, WrongShapeIsNamed) {
  EditConfig([](auto& j) { j["intermediate_size"] = 96; });
  const QuantizeOptions o = Options("out");
  auto r = Quantize(o, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("mlp.gate_proj.weight"), std::string::npos) << r.status();
  ExpectNoOutput(o);
}

TEST_F(PipelineInput, CalibrationShorterThanOneWindow) {
  Spit(calib_, "too short");
  const QuantizeOptions o = Options("out");
  auto r = Quantize(o, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  ExpectNoOutput(o);
}

TEST_F(PipelineInput, SeqLenBeyondMaxPositionEmbeddings) {
  QuantizeOptions o = Options("out");
  o.seq_len = 512;
  o.samples = 2;
  auto r = Quantize(o, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("max_position_embeddings"), std::string::npos) << r.status();
  ExpectNoOutput(o);
}

TEST_F(PipelineInput, AbsurdConfigIsRefused) {
  QuantizeOptions o = Options("out");
  o.quant.bits = 5;
  EXPECT_EQ(Quantize(o, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options("out");
  o.quant.sym = false;  // GPTQ v1 cannot store asym zero points of 0
  EXPECT_EQ(Quantize(o, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  ExpectNoOutput(o);
}

TEST_F(PipelineInput, TrueSequentialAndFormatsAgreeOnCodes) {
  QuantizeOptions g = Options("gptq");
  QuantizeOptions c = Options("ct");
  c.format = OutputFormat::kCompressedTensors;
  ASSERT_TRUE(Quantize(g, nullptr).ok());
  ASSERT_TRUE(Quantize(c, nullptr).ok());
  auto rg = ModelReader::Open(g.out_dir);
  auto rc = ModelReader::Open(c.out_dir);
  ASSERT_TRUE(rg.ok() && rc.ok());
  for (const std::string& m : (*rg)->QuantizedModules()) {
    auto a = (*rg)->LoadQuantized(m);
    auto b = (*rc)->LoadQuantized(m);
    ASSERT_TRUE(a.ok() && b.ok()) << m;
    EXPECT_EQ(a->codes, b->codes) << m;
  }
  QuantizeOptions t = Options("ts");
  t.true_sequential = true;
  auto rt = Quantize(t, nullptr);
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_EQ(rt->modules.size(), 14u);
}

TEST_F(PipelineInput, CommandLine) {
  const std::string out = tmp_ / "cli";
  auto q = RunDgptq("quantize --model " + model_ + " --calib " + calib_ +
                                    " --samples 8 --seq-len 64 --group-size 32 --out " + out);
  ASSERT_EQ(q.code, 0) << q.output;
  EXPECT_NE(q.output.find("\"event\":\"progress\""), std::string::npos);
  EXPECT_NE(q.output.find("\"event\":\"report\""), std::string::npos);
  EXPECT_NE(q.output.find("peak_rss_bytes"), std::string::npos);
  auto e = RunDgptq("eval --model " + out + " --data " + calib_ + " --seq-len 64");
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_NE(e.output.find("\"perplexity\""), std::string::npos);
  EXPECT_EQ(RunDgptq("quantize --model " + model_).code, 2);
  EXPECT_EQ(RunDgptq("quantize --model /nonexistent --calib " + calib_ +
                                     " --out " + tmp_ / "x").code, 1);
}

TEST_F(PipelineInput, CpuAndCudaAgreeOnCodes) {
  if (!kernels::CudaAvailable()) GTEST_SKIP() << "no CUDA device";
  QuantizeOptions a = Options("cpu");
  QuantizeOptions b = Options("cuda");
  b.device = kernels::DeviceKind::kCuda;
  ASSERT_TRUE(Quantize(a, nullptr).ok());
  auto rb = Quantize(b, nullptr);
  ASSERT_TRUE(rb.ok()) << rb.status();
  auto ra = ModelReader::Open(a.out_dir), rcu = ModelReader::Open(b.out_dir);
  ASSERT_TRUE(ra.ok() && rcu.ok());
  size_t total = 0, differ = 0;
  for (const std::string& m : (*ra)->QuantizedModules()) {
    auto x = (*ra)->LoadQuantized(m), y = (*rcu)->LoadQuantized(m);
    ASSERT_TRUE(x.ok() && y.ok());
    const auto d = dgptq::testing::CompareCodes(x->codes, y->codes);
    total += x->codes.size();
    differ += d.off_by_one + d.off_more;
  }
  EXPECT_LE(differ, total / 1000) << differ << " of " << total;
}

}  // namespace
}  // namespace dgptq::worker
