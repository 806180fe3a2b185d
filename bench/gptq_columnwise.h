// The straightforward GPTQ the module benchmark measures ours against: the same algorithm
// on the same device, written the way the paper's first formulation reads (GPTQ Alg. 1
// without the lazy batch): one column at a time, each column's error pushed onto every
// later column at once with a rank-1 GEMM. Only the Backend's library-level calls are
// used (Hessian preparation, damping, the Cholesky inverse, grids, round to nearest, GEMM),
// so on CUDA it is cuBLAS/cuSOLVER column by column, with no fused kernel and no blocks.
// Same inputs and conventions as worker::RunGptq (W [rows, cols] fp32, H [cols, cols] a
// sum over `nsamples` rows), same config (grouping, act-order, static groups, damping
// without raising). Bench and test code, not used by the service.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/quant_config.h"
#include "kernels/backend.h"

namespace dgptq::bench {

struct ColumnwiseResult {
  std::vector<int32_t> codes;  // host [rows, cols], original column order
  double seconds = 0;          // on the device, from H preparation to the last update
};

// Consumes w and h (device memory, overwritten). FailedPrecondition when H + damping is
// not positive definite (no damping raise: compare on well-conditioned inputs).
absl::StatusOr<ColumnwiseResult> RunGptqColumnwise(kernels::Backend& b, const kernels::Mat& w,
                                                   const kernels::Mat& h, double nsamples,
                                                   const QuantConfig& cfg);

// Fraction of equal entries of two code arrays of the same size (1 for two empty ones).
double CodesAgreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

}  // namespace dgptq::bench
