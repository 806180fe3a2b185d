// `dgptq convert`: rewrites a quantized checkpoint in another format (GPTQ v1 <->
// compressed-tensors pack-quantized, or either -> dequantized). Codes, zeros and g_idx are
// carried exactly; scales are exact whenever the target dtype holds them (fp16 for GPTQ;
// compressed-tensors keeps the source's scale dtype, or fp16 from GPTQ; dequantized stores
// fp32 scale * (code - zero) of the source's scales). Unquantized tensors pass through as
// stored. A dequantized checkpoint holds no codes and is refused as a source.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/cli/commands.h"
#include "worker/cli/progress.h"
#include "worker/output/model_reader.h"
#include "worker/output/model_writer.h"

namespace dgptq::cli {
namespace {

struct Options {
  std::string in, out, format;
  bool overwrite = false;
};

struct Stats {
  int64_t modules = 0;
  int64_t tensors = 0;
  int64_t scales_rounded = 0;  // scales the target dtype does not hold exactly
};

// The scale dtype of the output: GPTQ stores fp16; compressed-tensors keeps what the
// source stores (fp16 for a GPTQ source), so nothing is rounded.
absl::StatusOr<DType> ScaleDtype(worker::ModelReader& r, worker::OutputFormat to,
                                 const std::vector<std::string>& modules) {
  if (to == worker::OutputFormat::kGptq || r.format() == worker::OutputFormat::kGptq ||
      modules.empty()) {
    return DType::kF16;
  }
  DGPTQ_ASSIGN_OR_RETURN(const TensorView s, r.Raw(modules.front() + ".weight_scale"));
  return s.dtype == DType::kBF16 ? DType::kBF16 : DType::kF16;
}

int64_t CountRounded(const std::vector<float>& scales, DType dtype) {
  int64_t n = 0;
  for (float s : scales) {
    uint16_t bits;
    float back;
    ConvertFromF32(&s, dtype, &bits, 1);
    ConvertToF32(dtype, &bits, &back, 1);
    n += back != s;
  }
  return n;
}

absl::StatusOr<Stats> Convert(const Options& o) {
  DGPTQ_ASSIGN_OR_RETURN(const worker::OutputFormat to, worker::ParseOutputFormat(o.format));
  DGPTQ_ASSIGN_OR_RETURN(std::unique_ptr<worker::ModelReader> r, worker::ModelReader::Open(o.in));
  if (r->dequantized()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is a dequantized (fake-quant) checkpoint: it holds fp32 weights, not codes, "
        "scales and zeros, so it cannot be converted; convert the quantized checkpoint it "
        "was made from, or quantize the original model again",
        o.in));
  }
  if (!r->quantized()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has no quantization_config: not a quantized checkpoint (quantize it first)", o.in));
  }
  const std::vector<std::string> modules = r->QuantizedModules();
  worker::WriterOptions w;
  w.out_dir = o.out;
  w.src_model_dir = o.in;
  w.format = to;
  w.quant = r->quant();
  w.overwrite = o.overwrite;
  w.ignore = r->ignore();
  DGPTQ_ASSIGN_OR_RETURN(w.model_dtype, ScaleDtype(*r, to, modules));
  DGPTQ_ASSIGN_OR_RETURN(std::unique_ptr<worker::ModelWriter> writer,
                         worker::ModelWriter::Create(w));
  Stats stats;
  const DType scale_dtype = to == worker::OutputFormat::kGptq ? DType::kF16 : w.model_dtype;
  for (const std::string& m : modules) {
    DGPTQ_ASSIGN_OR_RETURN(const kernels::QuantizedWeight q, r->LoadQuantized(m));
    if (to != worker::OutputFormat::kDequantized) {  // fp32 products round no scale
      stats.scales_rounded += CountRounded(q.scales, scale_dtype);
    }
    DGPTQ_RETURN_IF_ERROR(writer->AddQuantized(m, q, /*bias=*/nullptr));
    ++stats.modules;
  }
  for (const std::string& name : r->PlainTensors()) {  // biases included
    DGPTQ_ASSIGN_OR_RETURN(const TensorView t, r->Raw(name));
    DGPTQ_RETURN_IF_ERROR(writer->AddTensor(name, t));
    ++stats.tensors;
  }
  DGPTQ_RETURN_IF_ERROR(writer->Finish());
  return stats;
}


// Runs the conversion and prints its one JSON line; returns the exit code.
int RunConvert(const Options& o) {
  const auto start = std::chrono::steady_clock::now();
  const absl::StatusOr<Stats> s = Convert(o);
  if (!s.ok()) {
    std::fprintf(stderr, "dgptq convert: %s\n", s.status().ToString().c_str());
    return kExitFailed;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "{\"in\":%s,\"out\":%s,\"format\":%s,\"modules\":%lld,\"tensors\":%lld,"
      "\"scales_rounded\":%lld,\"seconds\":%.3f}\n",
      JsonString(o.in).c_str(), JsonString(o.out).c_str(), JsonString(o.format).c_str(),
      static_cast<long long>(s->modules), static_cast<long long>(s->tensors),
      static_cast<long long>(s->scales_rounded), secs);
  return kExitOk;
}

}  // namespace

Command AddConvertCommand(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* c = app.add_subcommand(
      "convert", "rewrite a quantized checkpoint as gptq, compressed-tensors or dequantized");
  c->add_option("--in", o->in, "quantized checkpoint directory")->required();
  c->add_option("--out", o->out, "output directory (must not exist or be empty)")->required();
  c->add_option("--format", o->format,
                "gptq, compressed-tensors, or dequantized (fp32 scale * (code - zero) weights "
                "in a plain checkpoint; not convertible back)")
      ->required()
      ->check(CLI::IsMember({"gptq", "compressed-tensors", "dequantized"}));
  c->add_flag("--overwrite", o->overwrite, "replace a model already in --out");
  return {c, [o]() { return RunConvert(*o); }};
}

}  // namespace dgptq::cli
