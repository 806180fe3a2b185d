// Tensor names per quantized linear `<m>` (layouts: kernels/packing.cc):
// GPTQ v1 (GPTQModel TorchQuantLinear buffers, vLLM gptq/gptq_marlin create_weights):
//   <m>.qweight I32, <m>.qzeros I32, <m>.scales F16, <m>.g_idx I32, [<m>.bias].
// compressed-tensors pack-quantized (compressed_tensors/compressors/quantized_compressors/
// pack_quantized.py compress_module; vLLM compressed_tensors_wNa16.py create_weights):
//   <m>.weight_packed I32, <m>.weight_scale (model dtype), <m>.weight_shape I64,
//   <m>.weight_zero_point I32 (asym only), <m>.weight_g_idx I32 (actorder "group" only).
// dequantized: <m>.weight F32 = scale * (code - zero), [<m>.bias]; a plain checkpoint.
#include "worker/output/model_writer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/json_util.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

#ifndef DGPTQ_VERSION
#define DGPTQ_VERSION "0.0.0"
#endif

namespace dgptq::worker {
namespace {

namespace fs = std::filesystem;
using kernels::QuantizedWeight;

// Copied from the source model when present (sentencepiece, fast and GPT-2 BPE tokenizers).
constexpr const char* kTokenizerFiles[] = {"tokenizer.model",
                                           "tokenizer.json",
                                           "tokenizer_config.json",
                                           "special_tokens_map.json",
                                           "generation_config.json",
                                           "vocab.json",
                                           "merges.txt",
                                           "added_tokens.json",
                                           "chat_template.jinja"};

absl::Status CheckName(const char* kind, const std::string& name) {
  bool ok = !name.empty() && name.front() != '.' && name.back() != '.' &&
            name.find("..") == std::string::npos;
  for (char c : name) ok = ok && c > ' ' && c < 127 && c != '/' && c != '\\';
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid ", kind, " name '", name, "' (dotted path like model.layers.0.mlp.up_proj)"));
}

// A path without trailing separators, so "<dir>.partial" is a sibling of it.
std::string Normalized(const std::string& dir) {
  std::string p = fs::path(dir).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

absl::Status Errno(const std::string& op, const std::string& path) {
  return ErrnoStatus(errno, op, path);
}

// FailedPrecondition when `dir` exists and holds anything (and overwrite is false).
absl::Status CheckOutDir(const std::string& dir, bool overwrite) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) return absl::OkStatus();
  if (!fs::is_directory(st)) {
    return absl::FailedPreconditionError(dir + " exists and is not a directory");
  }
  if (overwrite || fs::is_empty(dir, ec)) return absl::OkStatus();
  bool model = fs::exists(dir + "/config.json");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    model = model || e.path().extension() == ".safetensors";
  }
  return absl::FailedPreconditionError(absl::StrCat(
      dir, model ? " already holds a model" : " is not empty", "; pass --overwrite to replace it"));
}

absl::Status CheckBias(const TensorView& b, int64_t rows) {
  if (b.data != nullptr && IsFloat(b.dtype) && b.shape == Shape{rows}) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("bias must be a float [", rows, "] tensor, got ",
                                                 std::string(DTypeName(b.dtype)), " ",
                                                 ShapeString(b.shape)));
}

// Values the GPTQ v1 layout cannot hold, with what to do instead.
absl::Status CheckGptqStorable(const QuantizedWeight& q, bool desc_act) {
  const std::string other = "; use --format compressed-tensors";
  if ((q.cols * q.bits) % 32 != 0 || (q.rows * q.bits) % 32 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ packs whole int32 words: rows (", q.rows,
                                                   ") and cols (", q.cols, ") times ", q.bits,
                                                   " bits must be multiples of 32", other));
  }
  for (size_t i = 0; i < q.zeros.size(); ++i) {
    if (q.zeros[i] == 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("asym zero point 0 (group ", i / q.rows, ", row ", i % q.rows,
                       ") has no GPTQ v1 encoding (v1 stores zero - 1)", other));
    }
  }
  if (!desc_act && !IsImplicitGIdx(q)) {
    return absl::InvalidArgumentError(
        "g_idx is permuted (act-order with dynamic groups) but the quantization config says "
        "desc_act false; set act_order and clear static_groups");
  }
  return absl::OkStatus();
}

absl::Status CheckCompressedStorable(const QuantizedWeight& q, CtActOrder order) {
  for (size_t i = 0; i < q.zeros.size(); ++i) {
    if (q.zeros[i] > static_cast<float>((1 << q.bits) - 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "zero point ", q.zeros[i], " (group ", i / q.rows, ", row ", i % q.rows,
          ") does not fit compressed-tensors' signed ", q.bits, "-bit zero; use --format gptq"));
    }
  }
  if (order != CtActOrder::kGroup && !IsImplicitGIdx(q)) {
    return absl::InvalidArgumentError(
        "g_idx is permuted (act-order with dynamic groups) but the quantization config has "
        "no actorder \"group\"; set act_order and clear static_groups");
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const WriterOptions& o) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("output directory is empty");
  if (o.src_model_dir.empty()) return absl::InvalidArgumentError("source model dir is empty");
  DGPTQ_RETURN_IF_ERROR(Annotate(o.quant.Validate(), "quantization config"));
  if (o.format == OutputFormat::kCompressedTensors) {
    if (o.quant.bits != 4 && o.quant.bits != 8) {
      return absl::InvalidArgumentError(absl::StrCat(
          "compressed-tensors pack-quantized stores 4 and 8 bits (what its compressor and vLLM "
          "take), not ",
          o.quant.bits, "; use --format gptq"));
    }
    if (o.model_dtype != DType::kF16 && o.model_dtype != DType::kBF16) {
      return absl::InvalidArgumentError(
          absl::StrCat("compressed-tensors scales are stored in the model dtype, F16 or BF16, not ",
                       std::string(DTypeName(o.model_dtype))));
    }
  }
  std::error_code ec_out, ec_src;
  const fs::path out = fs::weakly_canonical(o.out_dir, ec_out);
  const fs::path src = fs::weakly_canonical(o.src_model_dir, ec_src);
  if ((!ec_out && !ec_src && out == src) || Normalized(o.out_dir) == Normalized(o.src_model_dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("output directory ", o.out_dir, " is the source model directory"));
  }
  return CheckOutDir(o.out_dir, o.overwrite);
}

}  // namespace

std::string PartialDir(const std::string& out_dir) {
  return Normalized(out_dir) + ".partial";
}

absl::Status RemovePartialOutput(const std::string& out_dir) {
  std::error_code ec;
  fs::remove_all(PartialDir(out_dir), ec);
  if (ec) {
    return absl::Status(absl::ErrnoToStatusCode(ec.value()),
                        absl::StrCat("remove ", PartialDir(out_dir), ": ", ec.message()));
  }
  return absl::OkStatus();
}

namespace {

constexpr char kPartialRecord[] = "dgptq-partial.json";

// What a partial directory was made with: everything that decides its tensors.
std::string PartialRecord(const WriterOptions& o) {
  std::error_code ec;
  const fs::path src = fs::weakly_canonical(o.src_model_dir, ec);
  nlohmann::ordered_json j;
  j["source"] = ec ? o.src_model_dir : src.string();
  j["format"] = OutputFormatName(o.format);
  j["quantization"] =
      nlohmann::ordered_json::parse(BuildDequantizedRecord(o.quant), nullptr, false);
  j["model_dtype"] = std::string(DTypeName(o.model_dtype));
  j["ignore"] = o.ignore;
  j["fingerprint"] = o.fingerprint;
  return j.dump(2) + "\n";
}

// The first top-level key whose value differs between two records, with both values.
std::string FirstDifference(const std::string& have, const std::string& want) {
  const auto a = nlohmann::ordered_json::parse(have, nullptr, false);
  const auto b = nlohmann::ordered_json::parse(want, nullptr, false);
  if (!a.is_object()) return absl::StrCat(kPartialRecord, " is unreadable");
  for (const auto& [key, value] : b.items()) {
    if (!a.contains(key) || a[key] != value) {
      return absl::StrCat(key, " was ", a.contains(key) ? a[key].dump() : "absent", ", now ",
                          value.dump());
    }
  }
  return "the record differs";
}

// Removes everything in `dir` except the parts (and, with keep_parts false, those too).
absl::Status ClearDir(const std::string& dir, bool keep_parts) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (keep_parts && absl::EndsWith(name, kPartFileSuffix)) continue;
    fs::remove_all(e.path(), ec);
    if (ec) break;
  }
  if (!ec) return absl::OkStatus();
  return absl::Status(absl::ErrnoToStatusCode(ec.value()),
                      absl::StrCat("clear ", dir, ": ", ec.message()));
}

}  // namespace

// Creates or keeps the partial directory (per opts_.resume), locks it and records what it
// is made with.
absl::Status ModelWriter::PrepareStaging() {
  const std::string record = PartialRecord(opts_);
  if (::mkdir(staging_.c_str(), 0755) != 0 && errno != EEXIST) return Errno("mkdir", staging_);
  lock_fd_ = ::open(staging_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock_fd_ < 0) return Errno("open", staging_);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          staging_, " is locked: another dgptq process is writing ", opts_.out_dir));
    }
    return ErrnoStatus(err, "lock", staging_);
  }
  owner_ = true;  // from here on the directory is ours to keep or remove
  absl::StatusOr<std::string> have = ReadFile(absl::StrCat(staging_, "/", kPartialRecord));
  auto parts = ListParts(staging_);
  const bool any = parts.ok() && !parts->empty();
  const bool same = have.ok() && *have == record && parts.ok();
  if (any && !same && opts_.resume == ResumeMode::kRequired) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resume ", staging_, ": it was made with other settings (",
        have.ok() ? FirstDifference(*have, record) : std::string(have.status().message()),
        "); remove it, or run without --resume to start over"));
  }
  resumed_ = any && same && opts_.resume != ResumeMode::kOff;
  DGPTQ_RETURN_IF_ERROR(ClearDir(staging_, resumed_));
  DGPTQ_RETURN_IF_ERROR(WriteFileAtomic(absl::StrCat(staging_, "/", kPartialRecord), record));
  // For reading the finished layers back while resuming (ModelReader on the partial dir).
  return WriteConfigs();
}

absl::StatusOr<std::unique_ptr<ModelWriter>> ModelWriter::Create(const WriterOptions& opts) {
  WriterOptions o = opts;
  if (!o.out_dir.empty()) o.out_dir = Normalized(o.out_dir);
  DGPTQ_RETURN_IF_ERROR(ValidateOptions(o));
  std::unique_ptr<ModelWriter> w(new ModelWriter(std::move(o)));
  DGPTQ_ASSIGN_OR_RETURN(w->src_config_, ReadFile(w->opts_.src_model_dir + "/config.json"));
  const fs::path parent = fs::path(w->opts_.out_dir).parent_path();
  std::error_code ec;
  if (!parent.empty() && !fs::exists(parent, ec) && !fs::create_directories(parent, ec)) {
    return absl::Status(absl::ErrnoToStatusCode(ec.value()),
                        absl::StrCat("create ", parent.string(), ": ", ec.message()));
  }
  w->staging_ = PartialDir(w->opts_.out_dir);
  DGPTQ_RETURN_IF_ERROR(w->PrepareStaging());
  DGPTQ_ASSIGN_OR_RETURN(w->shards_, ShardedWriter::Create(w->staging_, w->opts_.max_shard_bytes));
  return w;
}

absl::StatusOr<std::unique_ptr<ModelWriter>> ModelWriter::Attach(const WriterOptions& opts) {
  WriterOptions o = opts;
  if (!o.out_dir.empty()) o.out_dir = Normalized(o.out_dir);
  DGPTQ_RETURN_IF_ERROR(ValidateOptions(o));
  std::unique_ptr<ModelWriter> w(new ModelWriter(std::move(o)));
  w->staging_ = PartialDir(w->opts_.out_dir);
  return w;  // shards_ once the owner made the directory (EnsureShards)
}

ModelWriter::~ModelWriter() {
  shards_.reset();  // removes its own temporaries first
  if (owner_ && !finished_ && !staging_.empty()) {
    auto parts = ListParts(staging_);
    if (!opts_.keep_partial || !parts.ok() || parts->empty()) {
      std::error_code ec;
      fs::remove_all(staging_, ec);
    }
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

absl::Status ModelWriter::EnsureShards() {
  if (shards_ != nullptr) return absl::OkStatus();
  DGPTQ_ASSIGN_OR_RETURN(shards_, ShardedWriter::Create(staging_, opts_.max_shard_bytes));
  return absl::OkStatus();
}

absl::Status ModelWriter::BeginPart(const std::string& part) {
  if (finished_) return absl::FailedPreconditionError("writer already finished");
  DGPTQ_RETURN_IF_ERROR(EnsureShards());
  return shards_->BeginPart(part);
}

absl::Status ModelWriter::EndPart() {
  if (shards_ == nullptr) return absl::OkStatus();
  return shards_->EndPart();
}

absl::Status ModelWriter::CheckModule(const std::string& module, const QuantizedWeight& q,
                                      const TensorView* bias) const {
  DGPTQ_RETURN_IF_ERROR(CheckName("module", module));
  for (const std::string& m : opts_.ignore) {
    if (m == module) return absl::InvalidArgumentError("is in the ignore list");
  }
  if (quantized_.count(module) > 0) return absl::InvalidArgumentError("was already added");
  if (plain_.count(module + ".weight") > 0) {
    return absl::InvalidArgumentError("its .weight was already added unquantized");
  }
  const QuantConfig& c = opts_.quant;
  if (q.bits != c.bits || q.sym != c.sym) {
    return absl::InvalidArgumentError(
        absl::StrFormat("has %d bits %s, the checkpoint %d bits %s (one setting for all modules)",
                        q.bits, q.sym ? "sym" : "asym", c.bits, c.sym ? "sym" : "asym"));
  }
  DGPTQ_RETURN_IF_ERROR(q.Validate());
  if (q.groups() != c.NumGroups(q.cols) || (q.groups() > 1 && q.group_size != c.group_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("has group_size ", q.group_size, " (", q.groups(), " groups over ", q.cols,
                     " columns), the checkpoint group_size ", c.group_size));
  }
  if (bias != nullptr) DGPTQ_RETURN_IF_ERROR(CheckBias(*bias, q.rows));
  return absl::OkStatus();
}

absl::Status ModelWriter::AddQuantized(const std::string& module, const QuantizedWeight& q,
                                       const TensorView* bias) {
  if (finished_) return absl::FailedPreconditionError("writer already finished");
  const std::string where = "module " + module;
  DGPTQ_RETURN_IF_ERROR(Annotate(CheckModule(module, q, bias), where));
  DGPTQ_RETURN_IF_ERROR(EnsureShards());
  // A single group reads as group_size -1 or the configured size alike: store the latter.
  QuantizedWeight qq = q;
  qq.group_size = opts_.quant.group_size;
  absl::Status st;
  switch (opts_.format) {
    case OutputFormat::kGptq:
      st = AddGptq(module, qq);
      break;
    case OutputFormat::kCompressedTensors:
      st = AddCompressed(module, qq);
      break;
    case OutputFormat::kDequantized:
      st = AddDequantized(module, qq);
      break;
  }
  DGPTQ_RETURN_IF_ERROR(Annotate(st, where));
  if (bias != nullptr) DGPTQ_RETURN_IF_ERROR(shards_->Add(module + ".bias", *bias));
  quantized_.insert(module);
  return absl::OkStatus();
}

absl::Status ModelWriter::AddGptq(const std::string& module, const QuantizedWeight& q) {
  DGPTQ_RETURN_IF_ERROR(CheckGptqStorable(q, GptqDescAct(opts_.quant)));
  DGPTQ_ASSIGN_OR_RETURN(const kernels::GptqTensors t, kernels::PackGptq(q));
  DGPTQ_RETURN_IF_ERROR(shards_->Add(module + ".qweight", t.qweight.view()));
  DGPTQ_RETURN_IF_ERROR(shards_->Add(module + ".qzeros", t.qzeros.view()));
  DGPTQ_RETURN_IF_ERROR(shards_->Add(module + ".scales", t.scales.view()));
  return shards_->Add(module + ".g_idx", t.g_idx.view());
}

absl::Status ModelWriter::AddCompressed(const std::string& module, const QuantizedWeight& q) {
  const CtActOrder order = CtActOrderOf(opts_.quant);
  DGPTQ_RETURN_IF_ERROR(CheckCompressedStorable(q, order));
  DGPTQ_ASSIGN_OR_RETURN(
      const kernels::CompressedTensors t,
      kernels::PackCompressed(q, opts_.model_dtype, order == CtActOrder::kGroup));
  DGPTQ_RETURN_IF_ERROR(shards_->Add(module + ".weight_packed", t.weight_packed.view()));
  DGPTQ_RETURN_IF_ERROR(shards_->Add(module + ".weight_scale", t.weight_scale.view()));
  DGPTQ_RETURN_IF_ERROR(shards_->Add(module + ".weight_shape", t.weight_shape.view()));
  if (t.has_zero_point) {
    DGPTQ_RETURN_IF_ERROR(shards_->Add(module + ".weight_zero_point", t.weight_zero_point.view()));
  }
  if (!t.has_g_idx) return absl::OkStatus();
  return shards_->Add(module + ".weight_g_idx", t.weight_g_idx.view());
}

// fp32 holds scale * (code - zero) as Dequantize() computes it, so readers get the exact
// values GPTQ's error feedback assumed; no packing, hence no constraint on bits or shape.
absl::Status ModelWriter::AddDequantized(const std::string& module, const QuantizedWeight& q) {
  const Tensor w = q.Dequantize();
  return shards_->Add(module + ".weight", w.view());
}

absl::Status ModelWriter::AddTensor(const std::string& name, const TensorView& t) {
  if (finished_) return absl::FailedPreconditionError("writer already finished");
  DGPTQ_RETURN_IF_ERROR(CheckName("tensor", name));
  const std::string suffix = ".weight";
  if (name.size() > suffix.size() &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
      quantized_.count(name.substr(0, name.size() - suffix.size())) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, ": its module was already added quantized"));
  }
  DGPTQ_RETURN_IF_ERROR(EnsureShards());
  DGPTQ_RETURN_IF_ERROR(shards_->Add(name, t));
  plain_.insert(name);
  return absl::OkStatus();
}

absl::Status ModelWriter::WriteConfigs() const {
  using Json = nlohmann::ordered_json;
  const std::string src = opts_.src_model_dir + "/config.json";
  Json config = Json::parse(src_config_, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(src + ": not a JSON object");
  }
  config.erase(kDequantizedKey);  // a source that was itself dequantized
  if (opts_.format == OutputFormat::kDequantized) {
    // A plain model to its loaders (dtype / torch_dtype stay as the source has them; the
    // fp32 weights are cast on load like any checkpoint stored wider than its dtype).
    config.erase("quantization_config");
    config[kDequantizedKey] =
        Json::parse(BuildDequantizedRecord(opts_.quant), nullptr, /*allow_exceptions=*/false);
    return WriteFileAtomic(staging_ + "/config.json", config.dump(2) + "\n");
  }
  HfQuantInfo info{opts_.format, opts_.quant, lm_head_quantized_, opts_.ignore};
  const Json qc = Json::parse(BuildQuantizationConfig(info, "dgptq:" DGPTQ_VERSION), nullptr,
                              /*allow_exceptions=*/false);
  config["quantization_config"] = qc;  // dtype / torch_dtype stay as the source has them
  DGPTQ_RETURN_IF_ERROR(WriteFileAtomic(staging_ + "/config.json", config.dump(2) + "\n"));
  if (opts_.format == OutputFormat::kGptq) {
    DGPTQ_RETURN_IF_ERROR(WriteFileAtomic(staging_ + "/quantize_config.json", qc.dump(2) + "\n"));
  }
  return absl::OkStatus();
}

absl::Status ModelWriter::CopyTokenizerFiles() const {
  for (const char* name : kTokenizerFiles) {
    absl::StatusOr<std::string> data = ReadFile(absl::StrCat(opts_.src_model_dir, "/", name));
    if (absl::IsNotFound(data.status())) continue;
    if (!data.ok()) return data.status();
    DGPTQ_RETURN_IF_ERROR(WriteFileAtomic(absl::StrCat(staging_, "/", name), *data));
  }
  return absl::OkStatus();
}

// Moves the staging directory under out_dir. rename(2) replaces an empty directory
// atomically; an old model is renamed aside first and deleted once the new one is in place.
absl::Status ModelWriter::Commit() {
  const std::string& out = opts_.out_dir;
  std::error_code ec;
  std::string old;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec)) {
    if (!opts_.overwrite) return CheckOutDir(out, false);  // it filled up meanwhile
    old = absl::StrCat(out, ".old-", ::getpid());
    fs::remove_all(old, ec);
    if (::rename(out.c_str(), old.c_str()) != 0) return Errno("rename aside to " + old, out);
  }
  if (::rename(staging_.c_str(), out.c_str()) != 0) {
    const absl::Status st = Errno("rename to " + out, staging_);
    if (!old.empty()) ::rename(old.c_str(), out.c_str());  // put the old model back
    return st;
  }
  finished_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
  return SyncParentDir(out);
}

absl::Status ModelWriter::Finish() {
  if (finished_) return absl::FailedPreconditionError("writer already finished");
  if (!owner_) return absl::FailedPreconditionError("only the writer that owns " + staging_ + " publishes it");
  DGPTQ_RETURN_IF_ERROR(shards_->EndPart());
  DGPTQ_ASSIGN_OR_RETURN(const auto parts, ListParts(staging_));
  for (const auto& [part, names] : parts) {
    for (const std::string& n : names) {
      lm_head_quantized_ = lm_head_quantized_ || n == "lm_head.qweight" || n == "lm_head.weight_packed";
    }
  }
  DGPTQ_RETURN_IF_ERROR(shards_->Finish());
  DGPTQ_RETURN_IF_ERROR(WriteConfigs());
  DGPTQ_RETURN_IF_ERROR(CopyTokenizerFiles());
  if (::unlink(absl::StrCat(staging_, "/", kPartialRecord).c_str()) != 0 && errno != ENOENT) {
    return Errno("remove", absl::StrCat(staging_, "/", kPartialRecord));
  }
  return Commit();
}

}  // namespace dgptq::worker
