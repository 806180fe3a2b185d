// libFuzzer target: JobSpec parsing and validation (job_spec_entry.h).
#include "fuzz/fuzz_target.h"
#include "fuzz/job_spec_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return dgptq::fuzz::AbortOnInternal(dgptq::fuzz::FuzzJobSpec(data, size));
}
