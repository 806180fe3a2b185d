#include "worker/quant/pipeline.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/token_data.h"
#include "common/tokenizer.h"
#include "worker/gptq/gptq.h"
#include "worker/model/eval.h"
#include "worker/model/model.h"
#include "worker/output/model_writer.h"

namespace dgptq::worker {
namespace {

using kernels::Backend;
using kernels::Mat;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Pre-tokenized files give their windows as they are; text is sampled with the seed.
absl::StatusOr<TokenWindows> LoadCalibration(const QuantizeOptions& o) {
  const bool pretokenized = absl::EndsWith(o.calib_path, ".npy") ||
                            absl::EndsWith(o.calib_path, ".safetensors") ||
                            absl::EndsWith(o.calib_path, ".jsonl");
  if (pretokenized) {
    DGPTQ_ASSIGN_OR_RETURN(TokenWindows w, LoadTokenWindows(o.calib_path, nullptr, o.seq_len));
    if (w.count < o.samples) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s holds %d windows of %d tokens, fewer than --samples %d", o.calib_path, w.count,
          o.seq_len, o.samples));
    }
    w.count = o.samples;
    w.ids.resize(w.count * w.seq_len);
    return w;
  }
  DGPTQ_ASSIGN_OR_RETURN(auto tok, LoadTokenizer(o.model_dir));
  DGPTQ_ASSIGN_OR_RETURN(std::vector<int32_t> stream, LoadTokenStream(o.calib_path, tok.get()));
  return DrawCalibration(stream, o.samples, o.seq_len, o.seed);
}

class Pipeline {
 public:
  Pipeline(const QuantizeOptions& o, const ProgressFn& p) : o_(o), progress_(p) {}
  absl::StatusOr<QuantizeReport> Run();

 private:
  absl::Status QuantizeLayer(int layer, const Mat& x);
  absl::Status CollectHessians(const LayerWeights& w, const Mat& x, const std::set<int>& groups,
                               std::map<int, DeviceTensor>* hessians);
  absl::Status QuantizeGroup(LayerWeights& w, int layer, int group, DeviceTensor* h);
  absl::Status Propagate(const LayerWeights& w, const Mat& x);
  absl::Status WritePlain(const std::vector<std::string>& names);
  void Phase(const std::string& phase, int layer, double seconds) {
    phase_seconds_[phase] += seconds;
    if (progress_) progress_({phase, layer, model_ ? model_->num_layers() : 0, "", 0, seconds});
  }

  const QuantizeOptions& o_;
  const ProgressFn& progress_;
  std::unique_ptr<Backend> b_;
  std::unique_ptr<ModelReader> reader_;
  std::unique_ptr<DecoderModel> model_;
  std::unique_ptr<ModelWriter> writer_;
  TokenWindows calib_;
  std::map<std::string, double> phase_seconds_;
  QuantizeReport report_;
};

absl::StatusOr<QuantizeReport> Pipeline::Run() {
  const auto t0 = Clock::now();
  DGPTQ_RETURN_IF_ERROR(o_.Validate());
  DGPTQ_ASSIGN_OR_RETURN(reader_, ModelReader::Open(o_.model_dir));
  if (reader_->quantized()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is already quantized; give the original checkpoint", o_.model_dir));
  }
  const ModelConfig& c = reader_->config();
  if (c.sliding_window > 0 && o_.seq_len > c.sliding_window) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--seq-len %d exceeds the model's sliding_window %d", o_.seq_len, c.sliding_window));
  }
  DGPTQ_ASSIGN_OR_RETURN(b_, kernels::MakeBackend(o_.device));
  DGPTQ_ASSIGN_OR_RETURN(model_, DecoderModel::Create(c, *b_));
  if (!o_.rtn) {
    auto tc = Clock::now();
    DGPTQ_ASSIGN_OR_RETURN(calib_, LoadCalibration(o_));
    DGPTQ_RETURN_IF_ERROR(CheckWindows(c, calib_, o_.calib_path.c_str()));
    Phase("calibration", -1, Since(tc));
  }
  WriterOptions wo;
  wo.out_dir = o_.out_dir;
  wo.src_model_dir = o_.model_dir;
  wo.format = o_.format;
  wo.quant = o_.quant;
  wo.model_dtype = c.torch_dtype == DType::kBF16 ? DType::kBF16 : DType::kF16;
  wo.overwrite = o_.overwrite;
  wo.ignore = {"lm_head"};
  DGPTQ_ASSIGN_OR_RETURN(writer_, ModelWriter::Create(wo));
  DGPTQ_RETURN_IF_ERROR(model_->LoadGlobals(*reader_));
  DeviceTensor x;
  if (!o_.rtn) {
    const int64_t n = calib_.count * calib_.seq_len;
    DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer ids, b_->Allocate(n * sizeof(int32_t)));
    DGPTQ_RETURN_IF_ERROR(b_->Upload(calib_.ids.data(), ids.data(), n * sizeof(int32_t)));
    DGPTQ_ASSIGN_OR_RETURN(x, NewDeviceTensor(*b_, n, c.hidden_size));
    DGPTQ_RETURN_IF_ERROR(model_->Embed(ids.i32(), calib_.seq_len, x.mat));
  }
  for (int layer = 0; layer < model_->num_layers(); ++layer) {
    DGPTQ_RETURN_IF_ERROR(Annotate(QuantizeLayer(layer, x.mat), absl::StrFormat("layer %d", layer)));
  }
  auto tw = Clock::now();
  DGPTQ_RETURN_IF_ERROR(WritePlain(model_->GlobalTensors(*reader_)));
  DGPTQ_RETURN_IF_ERROR(writer_->Finish());
  Phase("write", -1, Since(tw));
  for (const auto& [phase, s] : phase_seconds_) report_.phase_seconds.emplace_back(phase, s);
  report_.samples = calib_.count;
  report_.seq_len = calib_.seq_len;
  report_.peak_rss_bytes = PeakRssBytes();
  report_.peak_device_bytes = b_->PeakDeviceBytes();
  report_.device = b_->name();
  report_.total_seconds = Since(t0);
  return report_;
}

absl::Status Pipeline::QuantizeLayer(int layer, const Mat& x) {
  auto t = Clock::now();
  DGPTQ_ASSIGN_OR_RETURN(LayerWeights w, model_->LoadLayer(*reader_, layer));
  Phase("load", layer, Since(t));
  const int groups = static_cast<int>(model_->Groups().size());
  // Stages of groups quantized together: all at once, or one by one (true-sequential).
  std::vector<std::set<int>> stages;
  for (int g = 0; g < groups; ++g) {
    if (o_.true_sequential || stages.empty()) stages.emplace_back();
    stages.back().insert(g);
  }
  for (const std::set<int>& stage : stages) {
    std::map<int, DeviceTensor> hessians;
    if (!o_.rtn) {
      t = Clock::now();
      DGPTQ_RETURN_IF_ERROR(CollectHessians(w, x, stage, &hessians));
      Phase("forward", layer, Since(t));
    }
    t = Clock::now();
    for (int g : stage) DGPTQ_RETURN_IF_ERROR(QuantizeGroup(w, layer, g, o_.rtn ? nullptr : &hessians[g]));
    Phase("quantize", layer, Since(t));
  }
  if (!o_.rtn) {
    t = Clock::now();
    DGPTQ_RETURN_IF_ERROR(Propagate(w, x));
    Phase("propagate", layer, Since(t));
  }
  // The layer's other tensors (norms, and biases of quantized modules) as they are.
  t = Clock::now();
  const std::string prefix = model_->LayerPrefix(layer);
  std::set<std::string> linear;  // written by AddQuantized, with their biases
  for (const LinearGroup& g : model_->Groups()) {
    for (const std::string& m : g.modules) {
      linear.insert(prefix + m + ".weight");
      linear.insert(prefix + m + ".bias");
    }
  }
  std::vector<std::string> plain;
  for (const std::string& name : reader_->TensorNames()) {
    if (absl::StartsWith(name, prefix) && !linear.count(name)) plain.push_back(name);
  }
  DGPTQ_RETURN_IF_ERROR(WritePlain(plain));
  Phase("write", layer, Since(t));
  return absl::OkStatus();
}

// Forwards copies of the activations batch by batch, summing X^T X of each captured
// group input; stops each forward after the stage's last group.
absl::Status Pipeline::CollectHessians(const LayerWeights& w, const Mat& x,
                                       const std::set<int>& stage,
                                       std::map<int, DeviceTensor>* hessians) {
  for (int g : stage) {
    const int64_t cols = model_->LinearShape(model_->Groups()[g].modules[0])[1];
    DGPTQ_ASSIGN_OR_RETURN((*hessians)[g], NewDeviceTensor(*b_, cols, cols));
  }
  const int last = *stage.rbegin();
  const int64_t L = calib_.seq_len, bw = o_.batch_windows;
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor tmp, NewDeviceTensor(*b_, std::min(bw, calib_.count) * L, x.cols));
  const CaptureFn capture = [&](int g, const Mat& in) -> absl::StatusOr<bool> {
    if (stage.count(g)) {
      const kernels::ActView av{in.data, DType::kF32, in.rows, in.cols, in.ld};
      DGPTQ_RETURN_IF_ERROR(b_->AccumulateHessian(av, hessians->at(g).mat));
    }
    return g < last;
  };
  for (int64_t w0 = 0; w0 < calib_.count; w0 += bw) {
    const int64_t rows = std::min(bw, calib_.count - w0) * L;
    const Mat chunk = tmp.mat.Block(0, 0, rows, x.cols);
    DGPTQ_RETURN_IF_ERROR(b_->Copy(chunk.data, x.data + w0 * L * x.ld, rows * x.cols * sizeof(float)));
    DGPTQ_RETURN_IF_ERROR(model_->ForwardLayer(w, chunk, L, capture));
  }
  return absl::OkStatus();
}

absl::Status Pipeline::QuantizeGroup(LayerWeights& w, int layer, int group, DeviceTensor* h) {
  const std::vector<std::string>& modules = model_->Groups()[group].modules;
  for (size_t i = 0; i < modules.size(); ++i) {
    const auto t = Clock::now();
    const std::string& m = modules[i];
    const Mat wm = w.mat(m + ".weight");
    absl::StatusOr<DeviceQuantized> q;
    if (h == nullptr) {
      q = RunRtn(*b_, wm, o_.quant);
    } else {
      // RunGptq consumes its Hessian: the group's last module takes the original.
      DeviceTensor copy;
      Mat hm = h->mat;
      if (i + 1 < modules.size()) {
        DGPTQ_ASSIGN_OR_RETURN(copy, NewDeviceTensor(*b_, hm.rows, hm.cols));
        DGPTQ_RETURN_IF_ERROR(b_->Copy(copy.mat.data, hm.data, hm.rows * hm.cols * sizeof(float)));
        hm = copy.mat;
      }
      q = RunGptq(*b_, DeviceModule{wm, hm}, static_cast<double>(calib_.count * calib_.seq_len), o_.quant);
    }
    const std::string full = model_->LayerPrefix(layer) + m;
    if (!q.ok()) return Annotate(q.status(), full);
    DGPTQ_ASSIGN_OR_RETURN(ModuleResult r, DownloadResult(*b_, wm, *q, o_.quant));
    const TensorView* bias = nullptr;
    TensorView bias_view;
    if (reader_->HasTensor(full + ".bias")) {
      DGPTQ_ASSIGN_OR_RETURN(bias_view, reader_->Raw(full + ".bias"));
      bias = &bias_view;
    }
    DGPTQ_RETURN_IF_ERROR(writer_->AddQuantized(full, r.q, bias));
    const double s = Since(t);
    report_.modules.push_back({full, wm.rows, wm.cols, r.stats.loss, r.stats.damp_used,
                               r.stats.damp_raises, s});
    if (progress_) progress_({"quantize", layer, model_->num_layers(), full, r.stats.loss, s});
  }
  return absl::OkStatus();
}

absl::Status Pipeline::Propagate(const LayerWeights& w, const Mat& x) {
  const CaptureFn none = [](int, const Mat&) -> absl::StatusOr<bool> { return true; };
  const int64_t L = calib_.seq_len;
  for (int64_t w0 = 0; w0 < calib_.count; w0 += o_.batch_windows) {
    const int64_t nw = std::min(o_.batch_windows, calib_.count - w0);
    DGPTQ_RETURN_IF_ERROR(model_->ForwardLayer(w, x.Block(w0 * L, 0, nw * L, x.cols), L, none));
  }
  return absl::OkStatus();
}

absl::Status Pipeline::WritePlain(const std::vector<std::string>& names) {
  for (const std::string& n : names) {
    if (!reader_->HasTensor(n)) continue;
    DGPTQ_ASSIGN_OR_RETURN(TensorView v, reader_->Raw(n));
    DGPTQ_RETURN_IF_ERROR(writer_->AddTensor(n, v));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status QuantizeOptions::Validate() const {
  DGPTQ_RETURN_IF_ERROR(quant.Validate());
  if (model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (!rtn && calib_path.empty()) return absl::InvalidArgumentError("--calib is required for GPTQ");
  if (samples <= 0 || samples > kMaxCalibrationSamples) {
    return absl::InvalidArgumentError(absl::StrFormat("--samples must be in [1, %d], got %d",
                                                      kMaxCalibrationSamples, samples));
  }
  if (seq_len <= 0 || seq_len > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrFormat("--seq-len must be in [1, 2^20], got %d", seq_len));
  }
  if (batch_windows <= 0) return absl::InvalidArgumentError("batch_windows must be positive");
  if (format == OutputFormat::kGptq && !quant.sym) {
    return absl::InvalidArgumentError(
        "--asym cannot be stored in the GPTQ v1 format (a zero point of 0 has no encoding); "
        "use --format compressed-tensors");
  }
  return absl::OkStatus();
}

int64_t PeakRssBytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    long kb = 0;
    if (std::sscanf(line.c_str(), "VmHWM: %ld kB", &kb) == 1) return int64_t{kb} * 1024;
  }
  return 0;
}

absl::StatusOr<QuantizeReport> Quantize(const QuantizeOptions& opts, const ProgressFn& progress) {
  Pipeline p(opts, progress);
  return p.Run();
}

}  // namespace dgptq::worker
