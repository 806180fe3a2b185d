// `dgptq make-model`: writes a synthetic Hugging Face checkpoint (random weights, a
// byte-level BPE tokenizer) so the main job runs on a machine with nothing downloaded.
#include <cstdio>
#include <memory>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/json_util.h"
#include "common/model_config.h"
#include "common/safetensors_writer.h"
#include "common/status_macros.h"
#include "worker/cli/commands.h"

namespace dgptq::cli {
namespace {

using nlohmann::json;

struct MakeFlags {
  std::string arch = "llama", out, dtype = "bf16";
  int64_t hidden = 256, layers = 4, heads = 8, kv_heads = 4, intermediate = 688, vocab = 512;
  int64_t max_position = 2048;
  uint64_t seed = 0;
};

// GPT-2's byte-to-unicode map: printable bytes map to themselves, the rest to U+0100+.
std::string ByteToken(int byte) {
  int cp = byte;
  const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
                         (byte >= 0xAE && byte <= 0xFF);
  if (!printable) {
    int n = 0;
    for (int b = 0; b < byte; ++b) {
      n += !((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF));
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A byte-level BPE tokenizer without merges: ids 0..255 are bytes, 256 is <|endoftext|>.
json Tokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToken(b)] = b;
  return {{"version", "1.0"},
          {"added_tokens", json::array({{{"id", 256}, {"content", "<|endoftext|>"},
                                         {"single_word", false}, {"lstrip", false},
                                         {"rstrip", false}, {"normalized", false},
                                         {"special", true}}})},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false},
                             {"trim_offsets", true}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true},
                       {"trim_offsets", true}, {"use_regex", true}}},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                     {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                     {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                     {"vocab", vocab}, {"merges", json::array()}}}};
}

json Config(const MakeFlags& f) {
  const char* dtype = f.dtype == "bf16" ? "bfloat16" : f.dtype == "fp16" ? "float16" : "float32";
  if (f.arch == "opt") {
    return {{"architectures", {"OPTForCausalLM"}}, {"model_type", "opt"},
            {"hidden_size", f.hidden}, {"ffn_dim", f.intermediate},
            {"num_hidden_layers", f.layers}, {"num_attention_heads", f.heads},
            {"vocab_size", f.vocab}, {"max_position_embeddings", f.max_position},
            {"word_embed_proj_dim", f.hidden}, {"do_layer_norm_before", true},
            {"enable_bias", true}, {"activation_function", "relu"},
            {"tie_word_embeddings", true}, {"torch_dtype", dtype},
            {"bos_token_id", 256}, {"eos_token_id", 256}};
  }
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
          {"hidden_size", f.hidden}, {"intermediate_size", f.intermediate},
          {"num_hidden_layers", f.layers}, {"num_attention_heads", f.heads},
          {"num_key_value_heads", f.kv_heads}, {"vocab_size", f.vocab},
          {"max_position_embeddings", f.max_position}, {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0}, {"hidden_act", "silu"}, {"tie_word_embeddings", false},
          {"torch_dtype", dtype}, {"bos_token_id", 256}, {"eos_token_id", 256}};
}

// name -> shape of every tensor of the checkpoint, in file order.
std::vector<std::pair<std::string, Shape>> Tensors(const ModelConfig& c) {
  const int64_t h = c.hidden_size, f = c.intermediate_size, v = c.vocab_size;
  std::vector<std::pair<std::string, Shape>> t;
  if (c.model_type == "opt") {
    t.push_back({"model.decoder.embed_tokens.weight", {v, h}});
    t.push_back({"model.decoder.embed_positions.weight", {c.max_position_embeddings + 2, h}});
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = absl::StrFormat("model.decoder.layers.%d.", l);
      for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"}) {
        t.push_back({p + m + ".weight", {h, h}});
        t.push_back({p + m + ".bias", {h}});
      }
      t.push_back({p + "fc1.weight", {f, h}});
      t.push_back({p + "fc1.bias", {f}});
      t.push_back({p + "fc2.weight", {h, f}});
      t.push_back({p + "fc2.bias", {h}});
      for (const char* ln : {"self_attn_layer_norm", "final_layer_norm"}) {
        t.push_back({p + ln + ".weight", {h}});
        t.push_back({p + ln + ".bias", {h}});
      }
    }
    t.push_back({"model.decoder.final_layer_norm.weight", {h}});
    t.push_back({"model.decoder.final_layer_norm.bias", {h}});
    return t;
  }
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  t.push_back({"model.embed_tokens.weight", {v, h}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrFormat("model.layers.%d.", l);
    t.push_back({p + "input_layernorm.weight", {h}});
    t.push_back({p + "self_attn.q_proj.weight", {q, h}});
    t.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    t.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    t.push_back({p + "self_attn.o_proj.weight", {h, q}});
    t.push_back({p + "post_attention_layernorm.weight", {h}});
    t.push_back({p + "mlp.gate_proj.weight", {f, h}});
    t.push_back({p + "mlp.up_proj.weight", {f, h}});
    t.push_back({p + "mlp.down_proj.weight", {h, f}});
  }
  t.push_back({"model.norm.weight", {h}});
  t.push_back({"lm_head.weight", {v, h}});
  return t;
}

absl::Status Make(const MakeFlags& f) {
  if (f.arch != "llama" && f.arch != "opt") {
    return absl::InvalidArgumentError("--arch must be llama or opt, got " + f.arch);
  }
  if (f.dtype != "bf16" && f.dtype != "fp16" && f.dtype != "fp32") {
    return absl::InvalidArgumentError("--dtype must be bf16, fp16 or fp32, got " + f.dtype);
  }
  if (f.vocab < 257) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--vocab must be at least 257 (256 bytes + <|endoftext|>), got %d", f.vocab));
  }
  const std::string config_text = Config(f).dump(2);
  DGPTQ_ASSIGN_OR_RETURN(ModelConfig c, ParseModelConfig(config_text, "--make-model flags"));
  const DType dt = f.dtype == "bf16" ? DType::kBF16 : f.dtype == "fp16" ? DType::kF16 : DType::kF32;
  std::error_code ec;
  std::filesystem::create_directories(f.out, ec);
  if (std::filesystem::exists(f.out + "/config.json")) {
    return absl::FailedPreconditionError(f.out + " already holds a model");
  }
  DGPTQ_ASSIGN_OR_RETURN(auto w, ShardedWriter::Create(f.out, 2ull << 30));
  std::mt19937_64 gen(f.seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (const auto& [name, shape] : Tensors(c)) {
    const bool norm = name.find("norm") != std::string::npos;
    const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    std::vector<float> v(NumElements(shape));
    for (float& x : v) x = norm && !bias ? 1.0f : bias ? 0.0f : normal(gen);
    Tensor t(dt, shape);
    ConvertFromF32(v.data(), dt, t.data(), v.size());
    DGPTQ_RETURN_IF_ERROR(w->Add(name, t.view()));
  }
  DGPTQ_RETURN_IF_ERROR(w->Finish());
  DGPTQ_RETURN_IF_ERROR(WriteFileAtomic(f.out + "/tokenizer.json", Tokenizer().dump()));
  DGPTQ_RETURN_IF_ERROR(WriteFileAtomic(
      f.out + "/tokenizer_config.json",
      json{{"tokenizer_class", "PreTrainedTokenizerFast"}, {"eos_token", "<|endoftext|>"},
           {"bos_token", "<|endoftext|>"}, {"model_max_length", f.max_position}}.dump(2)));
  return WriteFileAtomic(f.out + "/config.json", config_text);
}

}  // namespace

Command AddMakeModelCommand(CLI::App& app) {
  auto f = std::make_shared<MakeFlags>();
  CLI::App* c = app.add_subcommand("make-model", "write a synthetic checkpoint with a tokenizer");
  c->add_option("--arch", f->arch, "llama or opt");
  c->add_option("--out", f->out, "output directory")->required();
  c->add_option("--hidden", f->hidden, "hidden size");
  c->add_option("--layers", f->layers, "decoder layers");
  c->add_option("--heads", f->heads, "attention heads");
  c->add_option("--kv-heads", f->kv_heads, "key/value heads (llama)");
  c->add_option("--intermediate", f->intermediate, "MLP width");
  c->add_option("--vocab", f->vocab, "vocabulary size (>= 257)");
  c->add_option("--max-position", f->max_position, "max_position_embeddings");
  c->add_option("--dtype", f->dtype, "bf16, fp16 or fp32");
  c->add_option("--seed", f->seed, "weight seed");
  return {c, [f] {
    absl::Status s = Make(*f);
    if (!s.ok()) {
      std::fprintf(stderr, "dgptq make-model: %s\n", s.ToString().c_str());
      return kExitFailed;
    }
    std::printf("{\"event\":\"make-model\",\"out\":\"%s\",\"arch\":\"%s\"}\n", f->out.c_str(),
                f->arch.c_str());
    return kExitOk;
  }};
}

}  // namespace dgptq::cli
