// The one-process pipeline end to end: quality on the real models in ../shared,
// bad input, and the `dgptq quantize` / `eval` / `make-model` commands.
#include "worker/quant/pipeline.h"

#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/str_format.h"

#include "common/token_data.h"
#include "tests/subprocess.h"
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

// Fraction of equal codes between two quantized outputs of one model, over the modules
// whose name contains `only` (all when empty); -1 when they cannot be read.
double CodesAgreement(const std::string& out_a, const std::string& out_b,
                      const std::string& only = "") {
  auto a = ModelReader::Open(out_a);
  auto b = ModelReader::Open(out_b);
  if (!a.ok() || !b.ok()) return -1;
  int64_t same = 0, total = 0;
  for (const std::string& m : (*a)->QuantizedModules()) {
    if (m.find(only) == std::string::npos) continue;
    auto qa = (*a)->LoadQuantized(m);
    auto qb = (*b)->LoadQuantized(m);
    if (!qa.ok() || !qb.ok() || qa->codes.size() != qb->codes.size()) return -1;
    for (size_t i = 0; i < qa->codes.size(); ++i) same += qa->codes[i] == qb->codes[i];
    total += static_cast<int64_t>(qa->codes.size());
  }
  return total == 0 ? -1 : static_cast<double>(same) / static_cast<double>(total);
}

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
  // The failed run left nothing under the output name; a partial output stays only when it
  // holds finished layers (for --resume).
  void ExpectNoOutput(const QuantizeOptions& o) {
    EXPECT_FALSE(fs::exists(o.out_dir)) << o.out_dir;
    const std::string partial = PartialDir(o.out_dir);
    if (fs::exists(partial)) {
      EXPECT_TRUE(fs::exists(partial + "/layer-00000.rank-000.part.safetensors")) << partial;
    }
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

// Quantization never computes logits: the head is not loaded and the embedding table is
// freed after the one embedding step (a Llama-3-8B head and table are 4.2 GB in fp32).
// Backend memory peaks at the table (+ its raw bf16 staging), below table + head.
TEST_F(PipelineInput, HoldsNoHeadWhileQuantizing) {
  const std::string model = tmp_ / "wide_vocab";
  auto m = RunDgptq("make-model --out " + model + " --hidden 64 --layers 1 --heads 4 "
                    "--kv-heads 2 --intermediate 128 --vocab 32000 --max-position 128");
  ASSERT_EQ(m.code, 0) << m.output;
  QuantizeOptions o = Options("wide_out");
  o.model_dir = model;
  const std::string ids = tmp_ / "ids.jsonl";
  std::string lines;
  for (int w = 0; w < 8; ++w) {
    lines += "[";
    for (int t = 0; t < 64; ++t) lines += std::to_string((w * 977 + t * 131) % 32000) + (t < 63 ? "," : "");
    lines += "]\n";
  }
  Spit(ids, lines);
  o.calib_path = ids;
  auto r = Quantize(o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  const int64_t table = int64_t{32000} * 64 * 4;
  EXPECT_GT(r->peak_device_bytes, table);
  EXPECT_LT(r->peak_device_bytes, 2 * table);
}

// bf16 GEMMs (what a bf16 model gets on CUDA by default) run on the CPU too, emulated:
// the codes differ from the fp32 run's only where the rounded activations tip a code.
TEST_F(PipelineInput, Bf16GemmsAgreeWithFp32OnNearlyEveryCode) {
  QuantizeOptions f = Options("fp32");
  QuantizeOptions h = Options("bf16");
  EXPECT_FALSE(f.Bf16Gemms(DType::kBF16));  // auto on the CPU
  h.gemm = QuantizeOptions::Gemm::kBf16;
  EXPECT_TRUE(h.Bf16Gemms(DType::kF32));
  ASSERT_TRUE(Quantize(f, nullptr).ok());
  auto rh = Quantize(h, nullptr);
  ASSERT_TRUE(rh.ok()) << rh.status();
  const double agree = CodesAgreement(f.out_dir, h.out_dir);
  EXPECT_GT(agree, 0.9);
  EXPECT_LT(agree, 1.0) << "bf16 operands changed nothing: were they rounded?";
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
  // Each format's stored scales (fp16 for GPTQ, the model's bf16 for compressed-tensors)
  // make the weights the next layers are calibrated on: layer 0 agrees exactly, later ones
  // on nearly every code.
  EXPECT_EQ(CodesAgreement(g.out_dir, c.out_dir, "layers.0."), 1.0);
  EXPECT_GT(CodesAgreement(g.out_dir, c.out_dir), 0.98);
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

// `dgptq quantize` killed with SIGKILL after its first layer keeps the finished layers in
// OUT.partial; `--resume` with other settings is refused and leaves them alone; `--resume`
// with the same settings goes on from there and writes exactly the files of an
// uninterrupted run.
TEST_F(PipelineInput, KilledRunResumesWithTheSameOutput) {
  const std::string model = tmp_ / "model4";
  auto m = RunDgptq("make-model --out " + model + " --hidden 256 --layers 4 --heads 4 "
                    "--kv-heads 2 --intermediate 512 --vocab 300 --max-position 256");
  ASSERT_EQ(m.code, 0) << m.output;
  const std::string args = " --model " + model + " --calib " + calib_ +
                           " --samples 64 --seq-len 64 --group-size 64 --act-order --threads 1";
  const std::string whole = tmp_ / "whole", out = tmp_ / "resumed";
  auto ref = RunDgptq("quantize" + args + " --out " + whole);
  ASSERT_EQ(ref.code, 0) << ref.output;

  const std::string log = tmp_ / "killed.log";
  {
    dgptq::testing::Subprocess p({std::string(DGPTQ_BINARY_DIR) + "/worker/dgptq", "quantize",
                                  "--model", model, "--calib", calib_, "--samples", "64",
                                  "--seq-len", "64", "--group-size", "64", "--act-order",
                                  "--threads", "1", "--out", out},
                                 log);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (p.running() && std::chrono::steady_clock::now() < end &&
           p.Log().find("\"phase\":\"write\",\"layer\":0") == std::string::npos) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    p.Signal(SIGKILL);
    p.Wait(std::chrono::seconds(10));
  }
  ASSERT_FALSE(fs::exists(out)) << "the run finished before it was killed";
  ASSERT_TRUE(fs::exists(PartialDir(out) + "/layer-00000.rank-000.part.safetensors"));

  auto other = RunDgptq("quantize" + args + " --out " + out + " --seed 7 --resume");
  EXPECT_EQ(other.code, 1) << other.output;
  EXPECT_NE(other.output.find("other settings"), std::string::npos) << other.output;
  EXPECT_TRUE(fs::exists(PartialDir(out) + "/layer-00000.rank-000.part.safetensors"));

  // Without the next layer's read-ahead too: it must not change a byte either.
  auto resumed = RunDgptq("quantize" + args + " --out " + out + " --resume --no-prefetch");
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_EQ(resumed.output.find("\"resumed_layers\":0"), std::string::npos) << resumed.output;
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(whole)) files.insert(e.path().filename().string());
  std::set<std::string> got;
  for (const auto& e : fs::directory_iterator(out)) got.insert(e.path().filename().string());
  EXPECT_EQ(got, files);
  for (const std::string& f : files) EXPECT_EQ(Slurp(out + "/" + f), Slurp(whole + "/" + f)) << f;
  EXPECT_FALSE(HasStaging(tmp_.path()));
}

// In each GEMM precision (the CPU emulates bf16 operands exactly as the tensor cores take
// them), the two backends differ only by fp32 summation order.
TEST_F(PipelineInput, CpuAndCudaAgreeOnCodes) {
  if (!kernels::CudaAvailable()) GTEST_SKIP() << "no CUDA device";
  for (auto gemm : {QuantizeOptions::Gemm::kFp32, QuantizeOptions::Gemm::kBf16}) {
    const std::string tag = gemm == QuantizeOptions::Gemm::kFp32 ? "fp32" : "bf16";
    QuantizeOptions a = Options("cpu_" + tag);
    QuantizeOptions b = Options("cuda_" + tag);
    a.gemm = b.gemm = gemm;
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
    EXPECT_LE(differ, total / 1000) << tag << ": " << differ << " of " << total;
  }
}

}  // namespace
}  // namespace dgptq::worker
