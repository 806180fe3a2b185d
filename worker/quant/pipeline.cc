#include "worker/quant/pipeline.h"

#include <chrono>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/page_prefetch.h"
#include "common/safetensors_writer.h"
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

// The output part of `layer` that `rank` writes: "layer-00007.rank-001".
std::string LayerPart(int layer, int rank) {
  return absl::StrFormat("layer-%05d.rank-%03d", layer, rank);
}

// The layer of a part LayerPart() named; -1 for any other part (the globals).
int LayerOfPart(const std::string& part) {
  int layer = -1;
  return std::sscanf(part.c_str(), "layer-%d.rank-", &layer) == 1 ? layer : -1;
}

// What decides the tensors besides the writer's options: a partial output is resumed only
// when this matches. The sharding is not in it: it does not change the codes.
std::string Fingerprint(const QuantizeOptions& o, DType dtype) {
  if (o.rtn) return "rtn";
  std::error_code ec;
  const std::string calib = std::filesystem::weakly_canonical(o.calib_path, ec).string();
  return absl::StrFormat("gptq calib=%s samples=%d seq_len=%d seed=%d true_sequential=%d "
                         "batch_windows=%d",
                         ec ? o.calib_path : calib, o.samples, o.seq_len, o.seed,
                         o.true_sequential ? 1 : 0, o.batch_windows) +
         (o.Bf16Gemms(dtype) ? " gemm=bf16" : "");
}

WriterOptions WriterFor(const QuantizeOptions& o, const ModelConfig& c) {
  WriterOptions wo;
  wo.out_dir = o.out_dir;
  wo.src_model_dir = o.model_dir;
  wo.format = o.format;
  wo.quant = o.quant;
  wo.model_dtype = c.torch_dtype == DType::kBF16 ? DType::kBF16 : DType::kF16;
  wo.overwrite = o.overwrite;
  wo.ignore = {"lm_head"};
  wo.fingerprint = Fingerprint(o, c.torch_dtype);
  wo.resume = o.resume;
  wo.keep_partial = true;
  return wo;
}

// The Hessian sum of one linear group, in fp64: each window's X^T X is formed in fp32
// (one GEMM per window, the same on any rank) and added in fp64, and ranks reduce in fp64,
// so the fp32 Hessian GPTQ receives rounds the same sum whatever the sharding (up to
// fp64 association, far below fp32's last bit).
struct HessianSum {
  kernels::Buffer sum;  // double [n, n]
  int64_t n = 0;
  bool empty = true;
  double* data() const { return static_cast<double*>(sum.data()); }
  size_t count() const { return static_cast<size_t>(n * n); }
};

class Pipeline {
 public:
  Pipeline(const QuantizeOptions& o, const RankContext& ctx, const ProgressFn& p)
      : o_(o), ctx_(ctx), progress_(p) {}
  absl::StatusOr<QuantizeReport> Run();

 private:
  bool distributed() const { return ctx_.world > 1; }
  int Owner(int layer, int group) const {
    return ctx_.owner ? ctx_.owner(layer, model_->Groups()[group].modules[0]) : 0;
  }
  absl::Status CheckContext(int layers) const;
  absl::Status CheckCancelled() const {
    if (ctx_.cancelled && ctx_.cancelled()) return absl::CancelledError("stopped");
    return absl::OkStatus();
  }
  absl::Status ShardCalibration();
  absl::Status QuantizeLayer(int layer, const Mat& x);
  // Starts reading `layer`'s weights into the page cache in the background (no-op past the
  // last layer or with prefetch off).
  absl::Status PrefetchLayer(int layer);
  // Rank 0 finds the first layer the partial output lacks and drops what follows it; every
  // rank gets that layer.
  absl::StatusOr<int> ResumePoint();
  // Whether `parts` hold every tensor of `layer`; otherwise the first one missing.
  std::string MissingFromLayer(const std::map<std::string, std::vector<std::string>>& parts,
                               int layer) const;
  // Regenerates the activations of layers [0, end) from the partial output.
  absl::Status ReplayLayers(int end, const Mat& x);
  absl::Status WriteLayer(int layer);
  // The layer's tensors stored as they are (norms): those under its prefix that are not a
  // linear module's weight or bias.
  std::vector<std::string> PlainLayerTensors(int layer) const;
  // Every source tensor of `layer` (those under its prefix).
  std::vector<std::string> LayerTensors(int layer) const;
  absl::Status BroadcastValue(int64_t* v);
  absl::Status QuantizeStage(LayerWeights& w, int layer, const std::set<int>& stage, const Mat& x);
  // Adds the time spent forming and summing the products to *hessian_seconds.
  absl::Status CollectHessians(const LayerWeights& w, const Mat& x, const std::set<int>& groups,
                               std::map<int, HessianSum>* hessians, double* hessian_seconds);
  absl::Status ReduceHessians(int layer, const std::set<int>& stage,
                              std::map<int, HessianSum>* hessians);
  absl::Status QuantizeGroup(LayerWeights& w, int layer, int group, HessianSum* h,
                             std::map<std::string, kernels::QuantizedWeight>* results);
  absl::Status ShareResults(LayerWeights& w, int layer, const std::set<int>& stage,
                            std::map<std::string, kernels::QuantizedWeight>* results);
  absl::Status WriteModule(const std::string& full, const kernels::QuantizedWeight& q);
  // Makes `wm` the dequantized `q`, as every rank and a reader of the output see it.
  absl::Status Install(const Mat& wm, const kernels::QuantizedWeight& q);
  absl::Status Propagate(const LayerWeights& w, const Mat& x);
  absl::Status WritePlain(const std::vector<std::string>& names);
  uint64_t CommBytes() const {
    return ctx_.comm ? ctx_.comm->bytes_sent() + ctx_.comm->bytes_received() : 0;
  }
  void Phase(const std::string& phase, int layer, double seconds, int64_t bytes = 0) {
    phase_seconds_[phase] += seconds;
    if (progress_) {
      const int64_t tokens = phase == "forward" ? calib_.count * calib_.seq_len : 0;
      progress_({phase, layer, model_ ? model_->num_layers() : 0, "", 0, seconds, bytes, tokens,
                 b_ ? b_->PeakDeviceBytes() : 0});
    }
  }

  const QuantizeOptions& o_;
  const RankContext& ctx_;
  const ProgressFn& progress_;
  std::unique_ptr<Backend> b_;
  std::unique_ptr<ModelReader> reader_;
  PagePrefetcher prefetch_;  // reads reader_'s mapped files: declared after it, so joined first
  std::unique_ptr<DecoderModel> model_;
  std::unique_ptr<ModelWriter> writer_;  // rank 0 owns the partial output; others attach
  std::optional<DType> scale_dtype_;     // what the output stores scales in
  std::map<std::string, kernels::QuantizedWeight> owned_;  // this layer's, by module
  TokenWindows calib_;                   // this rank's shard of the windows
  double total_tokens_ = 0;              // over every rank: the Hessian's divisor
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
  DGPTQ_ASSIGN_OR_RETURN(b_, kernels::MakeBackend(o_.device, o_.cpu_threads, o_.gpu));
  DGPTQ_ASSIGN_OR_RETURN(model_, DecoderModel::Create(c, *b_));
  model_->SetBf16Gemms(o_.Bf16Gemms(c.torch_dtype));
  DGPTQ_RETURN_IF_ERROR(CheckContext(model_->num_layers()));
  if (!o_.rtn) {
    auto tc = Clock::now();
    absl::StatusOr<TokenWindows> calib = LoadCalibration(o_);
    if (!calib.ok()) return Annotate(calib.status(), "calibration data " + o_.calib_path);
    calib_ = *std::move(calib);
    DGPTQ_RETURN_IF_ERROR(CheckWindows(c, calib_, o_.calib_path.c_str()));
    DGPTQ_RETURN_IF_ERROR(ShardCalibration());
    Phase("calibration", -1, Since(tc));
  }
  const WriterOptions wo = WriterFor(o_, c);
  scale_dtype_ = StoredScaleDType(wo.format, wo.model_dtype);
  if (ctx_.rank == 0) {
    DGPTQ_ASSIGN_OR_RETURN(writer_, ModelWriter::Create(wo));
  } else {
    DGPTQ_ASSIGN_OR_RETURN(writer_, ModelWriter::Attach(wo));
  }
  DGPTQ_ASSIGN_OR_RETURN(const int start, ResumePoint());
  DeviceTensor x;
  if (!o_.rtn) {
    // The tables are needed for this one step: freed before the layers need the memory.
    DGPTQ_RETURN_IF_ERROR(model_->LoadGlobals(*reader_, DecoderModel::Globals::kEmbeddings));
    const int64_t n = calib_.count * calib_.seq_len;
    DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer ids,
                           kernels::UploadNew(*b_, calib_.ids.data(), n * sizeof(int32_t)));
    DGPTQ_ASSIGN_OR_RETURN(x, NewDeviceTensor(*b_, n, c.hidden_size));
    DGPTQ_RETURN_IF_ERROR(model_->Embed(ids.i32(), calib_.seq_len, x.mat));
    model_->DropGlobals();  // frees are ordered after the embedding on the backend's stream
  }
  DGPTQ_RETURN_IF_ERROR(PrefetchLayer(start));
  DGPTQ_RETURN_IF_ERROR(ReplayLayers(start, x.mat));
  for (int layer = start; layer < model_->num_layers(); ++layer) {
    DGPTQ_RETURN_IF_ERROR(Annotate(QuantizeLayer(layer, x.mat), absl::StrFormat("layer %d", layer)));
  }
  // Every rank's last part is written before rank 0 publishes them.
  if (distributed()) DGPTQ_RETURN_IF_ERROR(ctx_.comm->Barrier());
  if (ctx_.rank == 0) {
    auto tw = Clock::now();
    DGPTQ_ASSIGN_OR_RETURN(const auto parts, ListParts(writer_->partial_dir()));
    for (int l = 0; l < model_->num_layers(); ++l) {
      const std::string missing = MissingFromLayer(parts, l);
      if (!missing.empty()) {
        return absl::DataLossError(absl::StrFormat(
            "layer %d of the output lacks %s: a rank did not write its part to %s (storage "
            "not shared between the workers?)", l, missing, writer_->partial_dir()));
      }
    }
    DGPTQ_RETURN_IF_ERROR(writer_->BeginPart("globals"));
    DGPTQ_RETURN_IF_ERROR(WritePlain(model_->GlobalTensors(*reader_)));
    DGPTQ_RETURN_IF_ERROR(writer_->Finish());
    Phase("write", -1, Since(tw));
  }
  for (const auto& [phase, s] : phase_seconds_) report_.phase_seconds.emplace_back(phase, s);
  report_.samples = calib_.count;  // this rank's shard
  report_.seq_len = calib_.seq_len;
  report_.peak_rss_bytes = PeakRssBytes();
  report_.peak_device_bytes = b_->PeakDeviceBytes();
  report_.device = b_->name();
  report_.total_seconds = Since(t0);
  return report_;
}

absl::Status Pipeline::QuantizeLayer(int layer, const Mat& x) {
  if (ctx_.inputs_unchanged) DGPTQ_RETURN_IF_ERROR(ctx_.inputs_unchanged());
  auto t = Clock::now();
  DGPTQ_ASSIGN_OR_RETURN(LayerWeights w, model_->LoadLayer(*reader_, layer));
  Phase("load", layer, Since(t));
  DGPTQ_RETURN_IF_ERROR(PrefetchLayer(layer + 1));
  const int groups = static_cast<int>(model_->Groups().size());
  // Stages of groups quantized together: all at once, or one by one (true-sequential).
  std::vector<std::set<int>> stages;
  for (int g = 0; g < groups; ++g) {
    if (o_.true_sequential || stages.empty()) stages.emplace_back();
    stages.back().insert(g);
  }
  for (const std::set<int>& stage : stages) {
    DGPTQ_RETURN_IF_ERROR(CheckCancelled());
    DGPTQ_RETURN_IF_ERROR(QuantizeStage(w, layer, stage, x));
  }
  if (!o_.rtn) {
    DGPTQ_RETURN_IF_ERROR(CheckCancelled());
    t = Clock::now();
    DGPTQ_RETURN_IF_ERROR(Propagate(w, x));
    Phase("propagate", layer, Since(t));
  }
  t = Clock::now();
  DGPTQ_RETURN_IF_ERROR(WriteLayer(layer));
  Phase("write", layer, Since(t));
  return absl::OkStatus();
}

absl::Status Pipeline::PrefetchLayer(int layer) {
  if (!o_.prefetch || layer >= model_->num_layers()) return absl::OkStatus();
  std::vector<PagePrefetcher::Span> spans;
  for (const std::string& name : LayerTensors(layer)) {
    DGPTQ_ASSIGN_OR_RETURN(TensorView v, reader_->Raw(name));  // maps here, on this thread
    spans.push_back({v.data, v.nbytes()});
  }
  prefetch_.Start(std::move(spans));
  return absl::OkStatus();
}

// The layer's part of this rank: the modules it quantized and, on rank 0, the layer's other
// tensors (norms) as they are. Written at once, so a part on disk is a finished one.
absl::Status Pipeline::WriteLayer(int layer) {
  const std::string prefix = model_->LayerPrefix(layer);
  DGPTQ_RETURN_IF_ERROR(writer_->BeginPart(LayerPart(layer, ctx_.rank)));
  for (const LinearGroup& g : model_->Groups()) {
    for (const std::string& m : g.modules) {
      auto it = owned_.find(m);
      if (it != owned_.end()) DGPTQ_RETURN_IF_ERROR(WriteModule(prefix + m, it->second));
    }
  }
  owned_.clear();
  if (ctx_.rank == 0) DGPTQ_RETURN_IF_ERROR(WritePlain(PlainLayerTensors(layer)));
  return writer_->EndPart();
}

std::vector<std::string> Pipeline::PlainLayerTensors(int layer) const {
  const std::string prefix = model_->LayerPrefix(layer);
  std::set<std::string> linear;  // written by AddQuantized, with their biases
  for (const LinearGroup& g : model_->Groups()) {
    for (const std::string& m : g.modules) {
      linear.insert(prefix + m + ".weight");
      linear.insert(prefix + m + ".bias");
    }
  }
  std::vector<std::string> plain;
  for (const std::string& name : LayerTensors(layer)) {
    if (!linear.count(name)) plain.push_back(name);
  }
  return plain;
}

std::vector<std::string> Pipeline::LayerTensors(int layer) const {
  const std::string prefix = model_->LayerPrefix(layer);
  std::vector<std::string> names;
  for (const std::string& name : reader_->TensorNames()) {
    if (absl::StartsWith(name, prefix)) names.push_back(name);
  }
  return names;
}

std::string Pipeline::MissingFromLayer(const std::map<std::string, std::vector<std::string>>& parts,
                                       int layer) const {
  const std::string prefix = model_->LayerPrefix(layer);
  std::set<std::string> have;
  for (const auto& [part, names] : parts) {
    if (LayerOfPart(part) == layer) have.insert(names.begin(), names.end());
  }
  for (const LinearGroup& g : model_->Groups()) {
    for (const std::string& m : g.modules) {
      const std::string name = StoredTensorName(o_.format, prefix + m);
      if (!have.count(name)) return name;
    }
  }
  for (const std::string& name : PlainLayerTensors(layer)) {
    if (!have.count(name)) return name;
  }
  return "";
}

absl::StatusOr<int> Pipeline::ResumePoint() {
  int64_t start = 0;
  if (ctx_.rank == 0 && writer_->resumed()) {
    const std::string dir = writer_->partial_dir();
    DGPTQ_ASSIGN_OR_RETURN(const auto parts, ListParts(dir));
    while (start < model_->num_layers() && MissingFromLayer(parts, start).empty()) ++start;
    std::vector<std::string> stale;  // parts of unfinished layers, and the globals
    for (const auto& [part, names] : parts) {
      const int l = LayerOfPart(part);
      if (l < 0 || l >= start) stale.push_back(part);
    }
    DGPTQ_RETURN_IF_ERROR(RemoveParts(dir, stale));
    DGPTQ_RETURN_IF_ERROR(WritePartsIndex(dir));
  }
  if (distributed()) DGPTQ_RETURN_IF_ERROR(BroadcastValue(&start));
  report_.resumed_layers = static_cast<int>(start);
  return static_cast<int>(start);
}

// One int64 from rank 0 to every rank (through device memory for NCCL).
absl::Status Pipeline::BroadcastValue(int64_t* v) {
  if (ctx_.comm->backend() != "nccl") return ctx_.comm->Broadcast(v, sizeof(*v), 0);
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer d, kernels::UploadNew(*b_, v, sizeof(*v)));
  DGPTQ_RETURN_IF_ERROR(b_->Synchronize());
  DGPTQ_RETURN_IF_ERROR(ctx_.comm->Broadcast(d.data(), sizeof(*v), 0));
  return b_->Download(d.data(), v, sizeof(*v));
}

// Layers [0, end) come from the partial output: each is loaded as it was written (the
// stored codes and scales, dequantized exactly as the run that wrote it had them) and
// forwarded to regenerate the next layer's input.
absl::Status Pipeline::ReplayLayers(int end, const Mat& x) {
  if (end == 0) return absl::OkStatus();
  DGPTQ_ASSIGN_OR_RETURN(auto done, ModelReader::Open(writer_->partial_dir()));
  for (int layer = 0; layer < end; ++layer) {
    DGPTQ_RETURN_IF_ERROR(CheckCancelled());
    auto t = Clock::now();
    absl::StatusOr<LayerWeights> w = model_->LoadLayer(*done, layer);
    if (!w.ok()) return Annotate(w.status(), absl::StrFormat("finished layer %d of %s", layer,
                                                             writer_->partial_dir()));
    Phase("load", layer, Since(t));
    if (!o_.rtn) {
      t = Clock::now();
      DGPTQ_RETURN_IF_ERROR(Propagate(*w, x));
      Phase("propagate", layer, Since(t));
    }
    Phase("write", layer, 0);
  }
  return absl::OkStatus();
}

// One stage: Hessians of the stage's groups (this rank's shard), reduced onto their
// owners; GPTQ (or RTN) on the owned groups; the results shared with every rank.
absl::Status Pipeline::QuantizeStage(LayerWeights& w, int layer, const std::set<int>& stage,
                                     const Mat& x) {
  std::map<int, HessianSum> hessians;
  if (!o_.rtn) {
    auto t = Clock::now();
    double hessian_seconds = 0;
    DGPTQ_RETURN_IF_ERROR(CollectHessians(w, x, stage, &hessians, &hessian_seconds));
    Phase("forward", layer, Since(t) - hessian_seconds);
    Phase("hessian", layer, hessian_seconds);
    if (distributed()) {
      DGPTQ_RETURN_IF_ERROR(CheckCancelled());
      t = Clock::now();
      const uint64_t bytes0 = CommBytes();
      DGPTQ_RETURN_IF_ERROR(ReduceHessians(layer, stage, &hessians));
      Phase("reduce", layer, Since(t), static_cast<int64_t>(CommBytes() - bytes0));
    }
  }
  DGPTQ_RETURN_IF_ERROR(CheckCancelled());
  auto t = Clock::now();
  std::map<std::string, kernels::QuantizedWeight> results;  // by module name in the layer
  for (int g : stage) {
    if (Owner(layer, g) != ctx_.rank) continue;
    DGPTQ_RETURN_IF_ERROR(QuantizeGroup(w, layer, g, o_.rtn ? nullptr : &hessians.at(g), &results));
    hessians.erase(g);
  }
  Phase("quantize", layer, Since(t));
  if (distributed()) {
    t = Clock::now();
    const uint64_t bytes0 = CommBytes();
    DGPTQ_RETURN_IF_ERROR(ShareResults(w, layer, stage, &results));
    Phase("broadcast", layer, Since(t), static_cast<int64_t>(CommBytes() - bytes0));
  }
  for (int g : stage) {
    for (const std::string& m : model_->Groups()[g].modules) {
      if (!distributed()) DGPTQ_RETURN_IF_ERROR(Install(w.mat(m + ".weight"), results.at(m)));
      if (Owner(layer, g) == ctx_.rank) owned_[m] = std::move(results.at(m));
    }
  }
  return absl::OkStatus();
}

// Forwards copies of the activations batch by batch, summing X^T X of each captured
// group input; stops each forward after the stage's last group.
absl::Status Pipeline::CollectHessians(const LayerWeights& w, const Mat& x,
                                       const std::set<int>& stage,
                                       std::map<int, HessianSum>* hessians,
                                       double* hessian_seconds) {
  int64_t max_n = 0;
  for (int g : stage) {
    const int64_t cols = model_->LinearShape(model_->Groups()[g].modules[0])[1];
    HessianSum& h = (*hessians)[g];
    h.n = cols;
    DGPTQ_ASSIGN_OR_RETURN(h.sum, b_->Allocate(h.count() * sizeof(double)));
    max_n = std::max(max_n, cols);
  }
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer product, b_->Allocate(max_n * max_n * sizeof(float)));
  const int last = *stage.rbegin();
  const int64_t L = calib_.seq_len, bw = o_.batch_windows;
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor tmp, NewDeviceTensor(*b_, std::min(bw, calib_.count) * L, x.cols));
  const CaptureFn capture = [&](int g, const Mat& in) -> absl::StatusOr<bool> {
    if (stage.count(g)) {
      HessianSum& h = hessians->at(g);
      const Mat p{product.f32(), h.n, h.n, h.n};
      const auto th = Clock::now();
      for (int64_t r0 = 0; r0 < in.rows; r0 += L) {  // one window at a time
        const Mat xw = in.Block(r0, 0, std::min(L, in.rows - r0), in.cols);
        DGPTQ_RETURN_IF_ERROR(
            kernels::GemmIn(*b_, model_->bf16_gemms(), true, false, 1.0f, xw, xw, 0.0f, p));
        DGPTQ_RETURN_IF_ERROR(b_->AddF32ToF64(p.data, h.data(), h.count(), h.empty));
        h.empty = false;
      }
      *hessian_seconds += Since(th);
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

absl::Status Pipeline::QuantizeGroup(LayerWeights& w, int layer, int group, HessianSum* h,
                                     std::map<std::string, kernels::QuantizedWeight>* results) {
  const std::vector<std::string>& modules = model_->Groups()[group].modules;
  DeviceTensor h32;  // the fp32 Hessian GPTQ takes, rounded once from the fp64 sum
  for (size_t i = 0; i < modules.size(); ++i) {
    const auto t = Clock::now();
    const std::string& m = modules[i];
    const Mat wm = w.mat(m + ".weight");
    absl::StatusOr<DeviceQuantized> q;
    if (h == nullptr) {
      q = RunRtn(*b_, wm, o_.quant);
    } else {
      // RunGptq consumes its Hessian: the group's last module takes the original.
      if (h32.mat.data == nullptr) {
        DGPTQ_ASSIGN_OR_RETURN(h32, NewDeviceTensor(*b_, h->n, h->n));
        DGPTQ_RETURN_IF_ERROR(b_->F64ToF32(h->data(), h32.mat.data, h->count()));
        h->sum.Reset();
      }
      DeviceTensor copy;
      Mat hm = h32.mat;
      if (i + 1 < modules.size()) {
        DGPTQ_ASSIGN_OR_RETURN(copy, NewDeviceTensor(*b_, hm.rows, hm.cols));
        DGPTQ_RETURN_IF_ERROR(b_->Copy(copy.mat.data, hm.data, hm.rows * hm.cols * sizeof(float)));
        hm = copy.mat;
      }
      q = RunGptq(*b_, DeviceModule{wm, hm}, total_tokens_, o_.quant);
    }
    const std::string full = model_->LayerPrefix(layer) + m;
    if (!q.ok()) return Annotate(q.status(), full);
    DGPTQ_ASSIGN_OR_RETURN(ModuleResult r, DownloadResult(*b_, wm, *q, o_.quant, false));
    // The scales as the output stores them: the next layers, a resumed run and the
    // checkpoint's readers all dequantize the same weights.
    if (scale_dtype_) RoundScales(&r.q, *scale_dtype_);
    (*results)[m] = std::move(r.q);
    const double s = Since(t);
    report_.modules.push_back({full, wm.rows, wm.cols, r.stats.loss, r.stats.damp_used,
                               r.stats.damp_raises, s});
    if (progress_) progress_({"quantize", layer, model_->num_layers(), full, r.stats.loss, s});
  }
  return absl::OkStatus();
}

absl::Status Pipeline::CheckContext(int layers) const {
  if (ctx_.world < 1 || ctx_.rank < 0 || ctx_.rank >= ctx_.world) {
    return absl::InvalidArgumentError(
        absl::StrFormat("rank %d is not in a world of size %d", ctx_.rank, ctx_.world));
  }
  if (distributed()) {
    if (ctx_.comm == nullptr) {
      return absl::InvalidArgumentError("a world size above 1 needs a communicator");
    }
    if (ctx_.comm->rank() != ctx_.rank || ctx_.comm->world_size() != ctx_.world) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "communicator is rank %d of %d but the job says rank %d of %d", ctx_.comm->rank(),
          ctx_.comm->world_size(), ctx_.rank, ctx_.world));
    }
    if (ctx_.comm->backend() == "nccl" && b_->kind() != kernels::DeviceKind::kCuda) {
      return absl::InvalidArgumentError("the NCCL communicator needs the CUDA backend");
    }
  }
  const int groups = static_cast<int>(model_->Groups().size());
  for (int l = 0; l < layers; ++l) {
    for (int g = 0; g < groups; ++g) {
      const int r = Owner(l, g);
      if (r < 0 || r >= ctx_.world) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "the plan gives layer %d group %s to rank %d, outside the world of %d (a plan "
            "made for another architecture?)", l, model_->Groups()[g].modules[0], r, ctx_.world));
      }
    }
  }
  return absl::OkStatus();
}

// Keeps this rank's windows [window_begin, window_end) of the job's calibration set.
absl::Status Pipeline::ShardCalibration() {
  total_tokens_ = static_cast<double>(calib_.count) * static_cast<double>(calib_.seq_len);
  const int64_t end = ctx_.window_end < 0 ? calib_.count : ctx_.window_end;
  if (ctx_.window_begin < 0 || ctx_.window_begin >= end || end > calib_.count) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sample shard [%d, %d) is empty or outside the %d calibration samples", ctx_.window_begin,
        end, calib_.count));
  }
  if (ctx_.window_begin == 0 && end == calib_.count) return absl::OkStatus();
  const int64_t L = calib_.seq_len;
  calib_.ids = std::vector<int32_t>(calib_.ids.begin() + ctx_.window_begin * L,
                                    calib_.ids.begin() + end * L);
  calib_.count = end - ctx_.window_begin;
  return absl::OkStatus();
}

// Sums every rank's Hessian of each stage group onto the group's owner, all groups in
// one communicator group. The NCCL communicator works on device memory; the host one on
// host memory, so a GPU rank on the host transport stages through the host.
absl::Status Pipeline::ReduceHessians(int layer, const std::set<int>& stage,
                                      std::map<int, HessianSum>* hessians) {
  const bool staged = ctx_.comm->backend() != "nccl" && b_->kind() != kernels::DeviceKind::kCpu;
  std::map<int, std::vector<double>> host;
  DGPTQ_RETURN_IF_ERROR(b_->Synchronize());
  DGPTQ_RETURN_IF_ERROR(ctx_.comm->GroupStart());
  for (int g : stage) {
    const HessianSum& h = hessians->at(g);
    double* buf = h.data();
    if (staged) {
      std::vector<double>& v = host[g];
      v.resize(h.count());
      DGPTQ_RETURN_IF_ERROR(b_->Download(h.data(), v.data(), h.count() * sizeof(double)));
      buf = v.data();
    }
    DGPTQ_RETURN_IF_ERROR(ctx_.comm->ReduceF64(buf, buf, h.count(), Owner(layer, g)));
  }
  DGPTQ_RETURN_IF_ERROR(ctx_.comm->GroupEnd());
  for (int g : stage) {
    if (Owner(layer, g) != ctx_.rank) {
      hessians->erase(g);  // only the owner's sum is used
    } else if (staged) {
      const HessianSum& h = hessians->at(g);
      DGPTQ_RETURN_IF_ERROR(b_->Upload(host[g].data(), h.data(), h.count() * sizeof(double)));
    }
  }
  return absl::OkStatus();
}

// Owners broadcast each module's serialized result; every rank (owners included)
// rebuilds the module's weight from those bytes, so all ranks hold the same layer.
absl::Status Pipeline::ShareResults(LayerWeights& w, int layer, const std::set<int>& stage,
                                    std::map<std::string, kernels::QuantizedWeight>* results) {
  struct Item {
    std::string module;
    int owner;
    std::string bytes;
    kernels::Buffer device;  // NCCL only: the bytes in device memory
  };
  const bool on_device = ctx_.comm->backend() == "nccl";
  std::vector<Item> items;
  for (int g : stage) {
    for (const std::string& m : model_->Groups()[g].modules) {
      const Mat& wm = w.mat(m + ".weight");
      Item it{m, Owner(layer, g), {}, {}};
      if (it.owner == ctx_.rank) {
        it.bytes = SerializeQuantized(results->at(m));
      } else {
        it.bytes.resize(SerializedQuantizedBytes(wm.rows, wm.cols, o_.quant));
      }
      if (on_device) {
        DGPTQ_ASSIGN_OR_RETURN(it.device, b_->Allocate(it.bytes.size()));
        if (it.owner == ctx_.rank) {
          DGPTQ_RETURN_IF_ERROR(b_->Upload(it.bytes.data(), it.device.data(), it.bytes.size()));
        }
      }
      items.push_back(std::move(it));
    }
  }
  DGPTQ_RETURN_IF_ERROR(b_->Synchronize());
  DGPTQ_RETURN_IF_ERROR(ctx_.comm->GroupStart());
  for (Item& it : items) {
    void* buf = on_device ? it.device.data() : it.bytes.data();
    DGPTQ_RETURN_IF_ERROR(ctx_.comm->Broadcast(buf, it.bytes.size(), it.owner));
  }
  DGPTQ_RETURN_IF_ERROR(ctx_.comm->GroupEnd());
  for (Item& it : items) {
    if (on_device && it.owner != ctx_.rank) {
      DGPTQ_RETURN_IF_ERROR(b_->Download(it.device.data(), it.bytes.data(), it.bytes.size()));
    }
    const Mat& wm = w.mat(it.module + ".weight");
    absl::StatusOr<kernels::QuantizedWeight> q =
        DeserializeQuantized(it.bytes, wm.rows, wm.cols, o_.quant);
    if (!q.ok()) {
      return Annotate(q.status(), absl::StrFormat("result of %s%s from rank %d",
                                                  model_->LayerPrefix(layer), it.module, it.owner));
    }
    DGPTQ_RETURN_IF_ERROR(Install(wm, *q));
    (*results)[it.module] = *std::move(q);
  }
  return absl::OkStatus();
}

absl::Status Pipeline::WriteModule(const std::string& full, const kernels::QuantizedWeight& q) {
  const TensorView* bias = nullptr;
  TensorView bias_view;
  if (reader_->HasTensor(full + ".bias")) {
    DGPTQ_ASSIGN_OR_RETURN(bias_view, reader_->Raw(full + ".bias"));
    bias = &bias_view;
  }
  return writer_->AddQuantized(full, q, bias);
}

// The codes and the (rounded) grid go to the device and the weight is rebuilt there: no
// host pass over the weight and no fp32 upload; the same fp32 operations as
// QuantizedWeight::Dequantize, so a reader of the output sees these weights bit for bit.
// `q` comes from this rank's GPTQ or from DeserializeQuantized, which validated its codes
// and g_idx; the sizes are checked again here (cheap), the values are not (a host pass).
absl::Status Pipeline::Install(const Mat& wm, const kernels::QuantizedWeight& q) {
  const size_t cells = static_cast<size_t>(wm.rows * wm.cols);
  if (q.rows != wm.rows || q.cols != wm.cols || q.codes.size() != cells ||
      q.g_idx.size() != static_cast<size_t>(wm.cols) || q.scales.size() != q.zeros.size() ||
      q.scales.size() < static_cast<size_t>(wm.rows)) {
    return absl::InternalError(absl::StrFormat("result [%d, %d] for a weight [%d, %d]", q.rows,
                                               q.cols, wm.rows, wm.cols));
  }
  using kernels::UploadNew;
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer codes, UploadNew(*b_, q.codes.data(), q.codes.size() * 4));
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer g_idx, UploadNew(*b_, q.g_idx.data(), q.g_idx.size() * 4));
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer scales,
                         UploadNew(*b_, q.scales.data(), q.scales.size() * 4));
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer zeros, UploadNew(*b_, q.zeros.data(), q.zeros.size() * 4));
  // The buffers' frees are ordered after the kernel on the backend's stream.
  return b_->Dequantize(codes.i32(), g_idx.i32(), scales.f32(), zeros.f32(), wm);
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

bool QuantizeOptions::Bf16Gemms(DType model) const {
  if (gemm == Gemm::kAuto) return device == kernels::DeviceKind::kCuda && model == DType::kBF16;
  return gemm == Gemm::kBf16;
}

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
  if (cpu_threads < 0 || cpu_threads > 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--threads must be in [0, 4096] (0: all cores), got %d", cpu_threads));
  }
  if (gpu < 0) return absl::InvalidArgumentError(absl::StrFormat("--gpu must be >= 0, got %d", gpu));
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
  return QuantizeRank(opts, RankContext{}, progress);
}

absl::StatusOr<QuantizeReport> QuantizeRank(const QuantizeOptions& opts, const RankContext& ctx,
                                            const ProgressFn& progress) {
  Pipeline p(opts, ctx, progress);
  return p.Run();
}

namespace {

struct WireHeader {
  int64_t rows, cols, groups;
};

int64_t PackedCodeBytes(int64_t n, int bits) { return (n * bits + 7) / 8; }

}  // namespace

size_t SerializedQuantizedBytes(int64_t rows, int64_t cols, const QuantConfig& cfg) {
  const int64_t groups = cfg.NumGroups(cols);
  return sizeof(WireHeader) + PackedCodeBytes(rows * cols, cfg.bits) +
         2 * groups * rows * sizeof(float) + cols * sizeof(int32_t);
}

std::string SerializeQuantized(const kernels::QuantizedWeight& q) {
  const int64_t n = q.rows * q.cols;
  const WireHeader h{q.rows, q.cols, q.groups()};
  std::string out(sizeof(h) + PackedCodeBytes(n, q.bits), '\0');
  std::memcpy(out.data(), &h, sizeof(h));
  auto* packed = reinterpret_cast<uint8_t*>(out.data() + sizeof(h));
  for (int64_t i = 0; i < n; ++i) {  // little-endian bit stream, `bits` per code
    const uint32_t code = static_cast<uint32_t>(q.codes[i]);
    const int64_t bit = i * q.bits;
    const uint32_t v = code << (bit % 8);
    for (int64_t b = bit / 8, shift = 0; shift < (bit % 8) + q.bits; ++b, shift += 8) {
      packed[b] |= static_cast<uint8_t>(v >> shift);
    }
  }
  out.append(reinterpret_cast<const char*>(q.scales.data()), q.scales.size() * sizeof(float));
  out.append(reinterpret_cast<const char*>(q.zeros.data()), q.zeros.size() * sizeof(float));
  out.append(reinterpret_cast<const char*>(q.g_idx.data()), q.g_idx.size() * sizeof(int32_t));
  return out;
}

absl::StatusOr<kernels::QuantizedWeight> DeserializeQuantized(const std::string& bytes,
                                                              int64_t rows, int64_t cols,
                                                              const QuantConfig& cfg) {
  if (bytes.size() != SerializedQuantizedBytes(rows, cols, cfg)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d bytes, expected %d for a [%d, %d] module", bytes.size(),
        SerializedQuantizedBytes(rows, cols, cfg), rows, cols));
  }
  WireHeader h;
  std::memcpy(&h, bytes.data(), sizeof(h));
  if (h.rows != rows || h.cols != cols || h.groups != cfg.NumGroups(cols)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "header says [%d, %d] with %d groups, expected [%d, %d] with %d", h.rows, h.cols,
        h.groups, rows, cols, cfg.NumGroups(cols)));
  }
  kernels::QuantizedWeight q;
  q.bits = cfg.bits;
  q.group_size = cfg.group_size;
  q.sym = cfg.sym;
  q.rows = rows;
  q.cols = cols;
  const int64_t n = rows * cols;
  q.codes.resize(n);
  const auto* packed = reinterpret_cast<const uint8_t*>(bytes.data() + sizeof(h));
  const uint32_t mask = (1u << cfg.bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = i * cfg.bits;
    uint32_t v = 0;
    for (int64_t b = bit / 8, shift = 0; shift < (bit % 8) + cfg.bits; ++b, shift += 8) {
      v |= static_cast<uint32_t>(packed[b]) << shift;
    }
    q.codes[i] = static_cast<int32_t>((v >> (bit % 8)) & mask);
  }
  const char* p = bytes.data() + sizeof(h) + PackedCodeBytes(n, cfg.bits);
  q.scales.resize(h.groups * rows);
  q.zeros.resize(h.groups * rows);
  q.g_idx.resize(cols);
  std::memcpy(q.scales.data(), p, q.scales.size() * sizeof(float));
  p += q.scales.size() * sizeof(float);
  std::memcpy(q.zeros.data(), p, q.zeros.size() * sizeof(float));
  p += q.zeros.size() * sizeof(float);
  std::memcpy(q.g_idx.data(), p, q.g_idx.size() * sizeof(int32_t));
  DGPTQ_RETURN_IF_ERROR(q.Validate());
  return q;
}

}  // namespace dgptq::worker
