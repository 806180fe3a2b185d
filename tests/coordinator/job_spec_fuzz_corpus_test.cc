// The fuzz_job_spec corpus, replayed (tests/fuzz/corpus_replay.h).
#include "fuzz/job_spec_entry.h"
#include "gtest/gtest.h"
#include "tests/fuzz/corpus_replay.h"

namespace dgptq {
namespace {

TEST(FuzzCorpusTest, JobSpec) { fuzz::ReplayCorpus("fuzz_job_spec", &fuzz::FuzzJobSpec); }

}  // namespace
}  // namespace dgptq
