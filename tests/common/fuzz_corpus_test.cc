// The fuzz corpora of the common/ parsers, replayed (tests/fuzz/corpus_replay.h).
#include "fuzz/fuzz_entry.h"
#include "gtest/gtest.h"
#include "tests/fuzz/corpus_replay.h"

namespace dgptq {
namespace {

using fuzz::ReplayCorpus;

TEST(FuzzCorpusTest, SafetensorsHeader) {
  ReplayCorpus("fuzz_safetensors_header", &fuzz::FuzzSafetensorsHeader);
}

TEST(FuzzCorpusTest, ModelConfig) { ReplayCorpus("fuzz_model_config", &fuzz::FuzzModelConfig); }

TEST(FuzzCorpusTest, Npy) { ReplayCorpus("fuzz_npy", &fuzz::FuzzNpy); }

TEST(FuzzCorpusTest, Tokenizer) { ReplayCorpus("fuzz_tokenizer", &fuzz::FuzzTokenizer); }

TEST(FuzzCorpusTest, Calibration) { ReplayCorpus("fuzz_calibration", &fuzz::FuzzCalibration); }

}  // namespace
}  // namespace dgptq
