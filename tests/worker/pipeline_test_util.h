// Helpers shared by the pipeline tests (one process, ranks, the service end to end):
// read back every quantized module of an output, and the perplexity of a checkpoint.
#pragma once

#include <map>
#include <string>

#include "common/token_data.h"
#include "tests/worker/output_test_util.h"
#include "worker/model/eval.h"
#include "worker/output/model_reader.h"

namespace dgptq::worker {

// Every quantized module of the checkpoint in `dir`, by name.
inline std::map<std::string, QuantizedWeight> LoadQuantizedModules(const std::string& dir) {
  std::map<std::string, QuantizedWeight> m;
  auto r = ModelReader::Open(dir);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return m;
  for (const std::string& name : (*r)->QuantizedModules()) {
    auto q = (*r)->LoadQuantized(name);
    EXPECT_TRUE(q.ok()) << name << ": " << q.status();
    if (q.ok()) m[name] = *std::move(q);
  }
  return m;
}

// Perplexity of `model` over `w` on the CPU, `batch` windows per forward chunk.
inline double Perplexity(const std::string& model, const TokenWindows& w, int64_t batch) {
  auto b = kernels::MakeBackend(kernels::DeviceKind::kCpu);
  auto r = ModelReader::Open(model);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return 0;
  auto res = EvaluatePerplexity(**b, **r, w, batch);
  EXPECT_TRUE(res.ok()) << res.status();
  return res.ok() ? res->perplexity : 0;
}

}  // namespace dgptq::worker
