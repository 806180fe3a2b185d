// libFuzzer target: ParseModelConfig on config.json text (fuzz_entry.h).
#include "fuzz/fuzz_entry.h"
#include "fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return dgptq::fuzz::AbortOnInternal(dgptq::fuzz::FuzzModelConfig(data, size));
}
