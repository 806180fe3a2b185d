// GPTQ time per module on Llama-3-8B shapes (w4g128, act-order), ours against the
// straightforward column-by-column GPTQ on the same device (bench/gptq_columnwise.h), from
// the same W and H. Prints one JSON line per shape and device: both times, the speedup and
// the fraction of codes the two agree on; figures, not a pass/fail test.
//
//   bench_gptq_module [--device cpu|cuda|all] [--shapes 4096x4096,14336x4096,4096x14336]
//                     [--tokens 2048] [--repeat 2] [--reference 1|0]
// A shape is ROWSxCOLS = out_features x in_features. The reference runs once (it is the
// slow one); ours takes the best of --repeat runs.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/gptq_columnwise.h"
#include "worker/gptq/gptq.h"

namespace {

using dgptq::kernels::Backend;
using dgptq::kernels::Buffer;
using dgptq::kernels::Mat;

struct Args {
  std::string device = "all";
  std::string shapes = "4096x4096,14336x4096,4096x14336";
  long tokens = 2048;
  int repeat = 2;
  bool reference = true;
};

std::vector<float> Normal(size_t n, uint32_t seed, float sd) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// Times RunGptq on one shape; H built on the device from random activations.
int BenchShape(Backend& b, long rows, long cols, const Args& a) {
  dgptq::QuantConfig cfg;
  cfg.act_order = true;
  const std::vector<float> x = Normal(a.tokens * cols, 1, 1.0f);
  const std::vector<float> w = Normal(rows * cols, 2, 0.02f);
  auto xb = b.Allocate(x.size() * 4), hb = b.Allocate(cols * cols * 4), h0 = b.Allocate(cols * cols * 4);
  auto wb = b.Allocate(w.size() * 4);
  if (!xb.ok() || !hb.ok() || !h0.ok() || !wb.ok()) {
    std::fprintf(stderr, "allocation failed\n");
    return 1;
  }
  if (!b.Upload(x.data(), xb->data(), x.size() * 4).ok()) return 1;
  const dgptq::kernels::ActView xv{xb->data(), dgptq::DType::kF32, a.tokens, cols, cols};
  if (!b.AccumulateHessian(xv, Mat{h0->f32(), cols, cols, cols}).ok()) return 1;
  double best = 1e30, loss = 0;
  std::vector<int32_t> codes(rows * cols);
  for (int i = 0; i < a.repeat; ++i) {
    if (!b.Upload(w.data(), wb->data(), w.size() * 4).ok()) return 1;
    if (!b.Copy(hb->data(), h0->data(), cols * cols * 4).ok() || !b.Synchronize().ok()) return 1;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = dgptq::worker::RunGptq(b, {Mat{wb->f32(), rows, cols, cols}, Mat{hb->f32(), cols, cols, cols}},
                                    a.tokens, cfg);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!r.ok()) {
      std::fprintf(stderr, "gptq failed: %s\n", r.status().ToString().c_str());
      return 1;
    }
    best = std::min(best, s);
    loss = r->stats.loss;
    if (!b.Download(r->codes.data(), codes.data(), codes.size() * 4).ok()) return 1;
  }
  std::string ref = "";
  if (a.reference) {
    if (!b.Upload(w.data(), wb->data(), w.size() * 4).ok()) return 1;
    if (!b.Copy(hb->data(), h0->data(), cols * cols * 4).ok()) return 1;
    auto r = dgptq::bench::RunGptqColumnwise(b, Mat{wb->f32(), rows, cols, cols},
                                             Mat{hb->f32(), cols, cols, cols}, a.tokens, cfg);
    if (!r.ok()) {
      std::fprintf(stderr, "reference failed: %s\n", r.status().ToString().c_str());
      return 1;
    }
    ref = absl::StrFormat(",\"reference_seconds\":%.4f,\"speedup\":%.2f,\"codes_agree\":%.6f",
                          r->seconds, r->seconds / best,
                          dgptq::bench::CodesAgreement(codes, r->codes));
  }
  std::printf("{\"bench\":\"gptq_module\",\"device\":\"%s\",\"rows\":%ld,\"cols\":%ld,"
              "\"config\":\"%s\",\"seconds\":%.4f,\"loss\":%.6g%s}\n",
              b.name().c_str(), rows, cols, cfg.ToString().c_str(), best, loss, ref.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--device")) a.device = argv[i + 1];
    else if (!std::strcmp(argv[i], "--shapes")) a.shapes = argv[i + 1];
    else if (!std::strcmp(argv[i], "--tokens")) a.tokens = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--repeat")) a.repeat = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reference")) a.reference = std::atoi(argv[i + 1]) != 0;
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  std::vector<std::unique_ptr<Backend>> backends;
  if (a.device == "cpu" || a.device == "all") backends.push_back(dgptq::kernels::MakeCpuBackend());
  if (a.device == "cuda" || a.device == "all") {
    auto c = dgptq::kernels::MakeCudaBackend();
    if (c.ok()) backends.push_back(std::move(c).value());
    else std::fprintf(stderr, "skipping CUDA: %s\n", c.status().ToString().c_str());
  }
  for (auto& b : backends) {
    for (absl::string_view shape : absl::StrSplit(a.shapes, ',')) {
      std::vector<std::string> rc = absl::StrSplit(shape, 'x');
      if (rc.size() != 2) return 2;
      if (BenchShape(*b, std::atol(rc[0].c_str()), std::atol(rc[1].c_str()), a) != 0) return 1;
    }
  }
  return 0;
}
