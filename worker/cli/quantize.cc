// `dgptq quantize`: the whole pipeline in one process; `dgptq eval`: perplexity.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/token_data.h"
#include "worker/cli/commands.h"
#include "worker/cli/progress.h"
#include "worker/model/eval.h"
#include "worker/output/model_reader.h"
#include "worker/quant/pipeline.h"

namespace dgptq::cli {
namespace {

struct QuantizeFlags {
  worker::QuantizeOptions o;
  std::string format = "gptq", device = "cpu", gemm = "auto";
  bool asym = false;
  bool resume = false;
};

std::string ReportJson(const worker::QuantizeReport& r, const std::string& out) {
  std::string modules, phases;
  for (const auto& m : r.modules) {
    modules += absl::StrFormat("%s{\"name\":%s,\"rows\":%d,\"cols\":%d,\"loss\":%.6g,"
                               "\"damp\":%g,\"seconds\":%.4f}",
                               modules.empty() ? "" : ",", JsonString(m.name), m.rows, m.cols,
                               m.loss, m.damp, m.seconds);
  }
  for (const auto& [p, s] : r.phase_seconds) {
    phases += absl::StrFormat("%s%s:%.4f", phases.empty() ? "" : ",", JsonString(p), s);
  }
  return absl::StrFormat(
      "{\"event\":\"report\",\"out\":%s,\"device\":%s,\"samples\":%d,\"seq_len\":%d,"
      "\"total_seconds\":%.3f,\"peak_rss_bytes\":%d,\"peak_device_bytes\":%d,"
      "\"resumed_layers\":%d,\"phase_seconds\":{%s},\"modules\":[%s]}",
      JsonString(out), JsonString(r.device), r.samples, r.seq_len, r.total_seconds,
      r.peak_rss_bytes, r.peak_device_bytes, r.resumed_layers, phases, modules);
}

int RunQuantize(QuantizeFlags& f) {
  if (f.asym) f.o.quant.sym = false;
  auto fmt = worker::ParseOutputFormat(f.format);
  auto dev = kernels::ParseDeviceKind(f.device);
  if (!fmt.ok() || !dev.ok()) {
    std::fprintf(stderr, "dgptq quantize: %s\n",
                 (!fmt.ok() ? fmt.status() : dev.status()).ToString().c_str());
    return kExitUsage;
  }
  using Gemm = worker::QuantizeOptions::Gemm;
  const std::map<std::string, Gemm> gemms = {
      {"auto", Gemm::kAuto}, {"fp32", Gemm::kFp32}, {"bf16", Gemm::kBf16}};
  if (!gemms.count(f.gemm)) {
    std::fprintf(stderr, "dgptq quantize: --gemm must be auto, fp32 or bf16, got '%s'\n",
                 f.gemm.c_str());
    return kExitUsage;
  }
  f.o.gemm = gemms.at(f.gemm);
  f.o.format = *fmt;
  f.o.device = *dev;
  if (f.resume) f.o.resume = worker::ResumeMode::kRequired;
  ProgressPrinter printer;
  auto report = worker::Quantize(f.o, [&](const worker::ProgressEvent& e) { printer(e); });
  printer.Finish();
  if (!report.ok()) {
    std::fprintf(stderr, "dgptq quantize: %s\n", report.status().ToString().c_str());
    const std::string partial = worker::PartialDir(f.o.out_dir);
    if (std::filesystem::exists(partial + "/dgptq-partial.json")) {
      std::fprintf(stderr, "dgptq quantize: the finished layers are kept in %s; run again with "
                   "--resume to go on from there\n", partial.c_str());
    }
    return kExitFailed;
  }
  std::printf("%s\n", ReportJson(*report, f.o.out_dir).c_str());
  return kExitOk;
}

struct EvalFlags {
  std::string model, data, device = "cpu";
  int64_t seq_len = 512, max_windows = 0, batch = 8;
};

absl::StatusOr<worker::EvalResult> Eval(const EvalFlags& f) {
  DGPTQ_ASSIGN_OR_RETURN(kernels::DeviceKind kind, kernels::ParseDeviceKind(f.device));
  DGPTQ_ASSIGN_OR_RETURN(auto backend, kernels::MakeBackend(kind));
  DGPTQ_ASSIGN_OR_RETURN(auto reader, worker::ModelReader::Open(f.model));
  std::unique_ptr<Tokenizer> tok;
  if (auto t = LoadTokenizer(f.model); t.ok()) tok = std::move(t).value();
  DGPTQ_ASSIGN_OR_RETURN(TokenWindows w, LoadTokenWindows(f.data, tok.get(), f.seq_len));
  if (f.max_windows > 0 && w.count > f.max_windows) {
    w.count = f.max_windows;
    w.ids.resize(w.count * w.seq_len);
  }
  return worker::EvaluatePerplexity(*backend, *reader, w, f.batch);
}

}  // namespace

Command AddQuantizeCommand(CLI::App& app) {
  auto f = std::make_shared<QuantizeFlags>();
  worker::QuantizeOptions& o = f->o;
  CLI::App* c = app.add_subcommand("quantize", "quantize a model with GPTQ (one process)");
  c->add_option("--model", o.model_dir, "Hugging Face model directory")->required();
  c->add_option("--calib", o.calib_path, "calibration text (.txt) or token ids (.npy/.jsonl/.safetensors)");
  c->add_option("--out", o.out_dir, "output directory (must not hold a model)")->required();
  c->add_option("--bits", o.quant.bits, "2, 3, 4 or 8");
  c->add_option("--group-size", o.quant.group_size, "-1 (per channel) or a positive size");
  c->add_flag("--sym", o.quant.sym, "symmetric grid (default)");
  c->add_flag("--asym", f->asym, "asymmetric grid (compressed-tensors only)");
  c->add_flag("--act-order", o.quant.act_order, "columns by descending Hessian diagonal");
  c->add_flag("--static-groups", o.quant.static_groups, "group grids fixed before act-order");
  c->add_option("--damp", o.quant.damp_percent, "damping percent");
  c->add_option("--block-size", o.quant.block_size, "lazy-batch block size");
  c->add_flag("--mse", o.quant.mse, "MSE grid search");
  c->add_flag("--true-sequential", o.true_sequential, "re-forward after each module group");
  c->add_option("--samples", o.samples, "calibration windows");
  c->add_option("--seq-len", o.seq_len, "tokens per calibration window");
  c->add_option("--seed", o.seed, "calibration sampling seed");
  c->add_option("--format", f->format, "gptq, compressed-tensors or dequantized (fp32 fake-quant)");
  c->add_option("--device", f->device, "cpu or cuda");
  c->add_option("--gemm", f->gemm,
                "forward and Hessian GEMM precision: auto (bf16 operands, fp32 accumulation "
                "on CUDA for a bf16 model; fp32 otherwise), fp32 or bf16");
  c->add_option("--threads", o.cpu_threads, "CPU backend threads (0: all cores)");
  c->add_option("--gpu", o.gpu, "CUDA device ordinal");
  c->add_flag("--rtn", o.rtn, "round to nearest (no calibration)");
  c->add_flag("--overwrite", o.overwrite, "replace an existing output model");
  c->add_flag("!--no-prefetch", o.prefetch,
              "read each layer from disk only when it starts (default: the next layer is read "
              "while this one computes)");
  c->add_flag("--resume", f->resume,
              "keep the finished layers of an interrupted run (OUT.partial, same settings) and "
              "go on from the first unfinished one");
  return {c, [f] { return RunQuantize(*f); }};
}

Command AddEvalCommand(CLI::App& app) {
  auto f = std::make_shared<EvalFlags>();
  CLI::App* c = app.add_subcommand("eval", "perplexity over non-overlapping windows");
  c->add_option("--model", f->model, "model directory (original or dgptq output)")->required();
  c->add_option("--data", f->data, "text (.txt) or token ids")->required();
  c->add_option("--seq-len", f->seq_len, "window length");
  c->add_option("--max-windows", f->max_windows, "evaluate at most this many windows");
  c->add_option("--batch", f->batch, "windows per forward chunk");
  c->add_option("--device", f->device, "cpu or cuda");
  return {c, [f] {
    auto r = Eval(*f);
    if (!r.ok()) {
      std::fprintf(stderr, "dgptq eval: %s\n", r.status().ToString().c_str());
      return kExitFailed;
    }
    std::printf("{\"event\":\"eval\",\"model\":%s,\"perplexity\":%.4f,\"mean_nll\":%.6f,"
                "\"windows\":%ld,\"seq_len\":%ld,\"seconds\":%.2f}\n",
                JsonString(f->model).c_str(), r->perplexity, r->mean_nll, long(r->windows),
                long(f->seq_len), r->seconds);
    return kExitOk;
  }};
}

}  // namespace dgptq::cli
