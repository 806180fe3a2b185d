// libFuzzer target: tokenizer.json / tokenizer_config.json loading and encoding (input layout:
// fuzz_entry.h).
#include "fuzz/fuzz_entry.h"
#include "fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return dgptq::fuzz::AbortOnInternal(dgptq::fuzz::FuzzTokenizer(data, size));
}
