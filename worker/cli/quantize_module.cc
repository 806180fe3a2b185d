// `dgptq quantize-module`: GPTQ (or RTN) on one weight matrix, exposing the core.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "common/safetensors.h"
#include "common/safetensors_writer.h"
#include "common/status_macros.h"
#include "worker/cli/commands.h"
#include "worker/gptq/gptq.h"

namespace dgptq::cli {
namespace {

struct Options {
  std::string weight, hessian, out, device = "cpu";
  bool asym = false, rtn = false;
  QuantConfig cfg;
};

// Reads the optional scalar "nsamples" (any numeric dtype); 1 when absent.
absl::StatusOr<double> ReadNsamples(const SafetensorsFile& f) {
  if (!f.Has("nsamples")) return 1.0;
  DGPTQ_ASSIGN_OR_RETURN(TensorView t, f.Get("nsamples"));
  if (t.numel() != 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: nsamples must hold one value, got shape %s", f.path(), ShapeString(t.shape)));
  }
  switch (t.dtype) {
    case DType::kF32: return *t.as<float>();
    case DType::kI32: return *t.as<int32_t>();
    case DType::kI64: return static_cast<double>(*t.as<int64_t>());
    default: break;
  }
  if (IsFloat(t.dtype)) {
    float v;
    ConvertToF32(t.dtype, t.data, &v, 1);
    return v;
  }
  return absl::InvalidArgumentError(absl::StrFormat("%s: nsamples has unsupported dtype %s",
                                                    f.path(), DTypeName(t.dtype)));
}

absl::Status WriteResult(const std::string& path, const worker::ModuleResult& r) {
  const auto& q = r.q;
  const int64_t groups = q.groups();
  DGPTQ_ASSIGN_OR_RETURN(auto w, SafetensorsFileWriter::Create(path));
  DGPTQ_RETURN_IF_ERROR(w->Add("codes", TensorView{DType::kI32, {q.rows, q.cols}, q.codes.data()}));
  DGPTQ_RETURN_IF_ERROR(w->Add("scales", TensorView{DType::kF32, {groups, q.rows}, q.scales.data()}));
  DGPTQ_RETURN_IF_ERROR(w->Add("zeros", TensorView{DType::kF32, {groups, q.rows}, q.zeros.data()}));
  DGPTQ_RETURN_IF_ERROR(w->Add("g_idx", TensorView{DType::kI32, {q.cols}, q.g_idx.data()}));
  DGPTQ_RETURN_IF_ERROR(w->Add("dequantized", r.dequantized.view()));
  return w->Finish();
}

absl::StatusOr<worker::ModuleResult> Run(const Options& o) {
  DGPTQ_ASSIGN_OR_RETURN(kernels::DeviceKind kind, kernels::ParseDeviceKind(o.device));
  DGPTQ_ASSIGN_OR_RETURN(auto backend, kernels::MakeBackend(kind));
  DGPTQ_ASSIGN_OR_RETURN(auto wf, SafetensorsFile::Open(o.weight));
  DGPTQ_ASSIGN_OR_RETURN(TensorView w, wf->Get("weight"));
  worker::ModuleResult r;
  if (o.rtn) {
    DGPTQ_ASSIGN_OR_RETURN(r, worker::QuantizeModuleRtn(*backend, w, o.cfg));
  } else {
    if (o.hessian.empty()) return absl::InvalidArgumentError("--hessian is required for GPTQ");
    DGPTQ_ASSIGN_OR_RETURN(auto hf, SafetensorsFile::Open(o.hessian));
    DGPTQ_ASSIGN_OR_RETURN(TensorView h, hf->Get("hessian"));
    DGPTQ_ASSIGN_OR_RETURN(double n, ReadNsamples(*hf));
    DGPTQ_ASSIGN_OR_RETURN(r, worker::QuantizeModuleGptq(*backend, w, h, n, o.cfg));
  }
  DGPTQ_RETURN_IF_ERROR(WriteResult(o.out, r));
  return r;
}

}  // namespace

Command AddQuantizeModuleCommand(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* c = app.add_subcommand("quantize-module", "GPTQ or RTN on one weight matrix");
  c->add_option("--weight", o->weight, "safetensors file with tensor \"weight\" [out, in]")
      ->required();
  c->add_option("--hessian", o->hessian,
                "safetensors file with \"hessian\" F32 [in, in] and optional \"nsamples\"");
  c->add_option("--out", o->out, "output safetensors file")->required();
  c->add_option("--bits", o->cfg.bits, "2, 3, 4 or 8");
  c->add_option("--group-size", o->cfg.group_size, "-1 (per channel) or a positive size");
  c->add_flag("--sym", o->cfg.sym, "symmetric grid (default)");
  c->add_flag("--asym", o->asym, "asymmetric grid");
  c->add_flag("--act-order", o->cfg.act_order, "quantize columns by descending diag(H)");
  c->add_flag("--static-groups", o->cfg.static_groups, "fix group grids before act-order");
  c->add_option("--damp", o->cfg.damp_percent, "damping percent of mean diag(H)");
  c->add_option("--block-size", o->cfg.block_size, "lazy-batch block size");
  c->add_flag("--mse", o->cfg.mse, "MSE grid search (clipping)");
  c->add_flag("--rtn", o->rtn, "round to nearest instead of GPTQ");
  c->add_option("--device", o->device, "cpu or cuda");
  return {c, [o]() {
    if (o->asym) o->cfg.sym = false;
    auto r = Run(*o);
    if (!r.ok()) {
      std::fprintf(stderr, "dgptq quantize-module: %s\n", r.status().ToString().c_str());
      return kExitFailed;
    }
    std::printf("%s\n", absl::StrFormat(
        "{\"method\":\"%s\",\"rows\":%d,\"cols\":%d,\"loss\":%s,\"damp\":%g,"
        "\"damp_raises\":%d,\"seconds\":%.6f,\"device\":\"%s\"}",
        o->rtn ? "rtn" : "gptq", r->q.rows, r->q.cols,
        o->rtn ? std::string("null") : absl::StrFormat("%.9g", r->stats.loss), r->stats.damp_used,
        r->stats.damp_raises, r->stats.seconds, o->device).c_str());
    return kExitOk;
  }};
}

}  // namespace dgptq::cli
