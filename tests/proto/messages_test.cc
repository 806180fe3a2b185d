// Wire round trips of the API messages.
#include <string>

#include "dgptq/v1/coordinator.pb.h"
#include "dgptq/v1/worker.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace dgptq {
namespace {

using google::protobuf::util::MessageDifferencer;

v1::JobSpec MakeSpec() {
  v1::JobSpec spec;
  spec.set_model_path("/models/llama");
  spec.set_output_path("/out/llama-gptq");
  v1::QuantizationConfig* q = spec.mutable_quantization();
  q->set_bits(3);
  q->set_group_size(-1);
  q->set_asym(true);
  q->set_act_order(true);
  q->set_static_groups(true);
  q->set_damp_percent(0.01);
  q->set_block_size(64);
  q->set_mse(true);
  q->set_true_sequential(true);
  q->set_rtn(false);
  v1::CalibrationSpec* c = spec.mutable_calibration();
  c->set_path("/data/c4.npy");
  c->set_samples(256);
  c->set_seq_len(4096);
  c->set_seed(0xFFFFFFFFFFFFull);
  spec.set_num_workers(3);
  spec.set_worker_device_kind(v1::DEVICE_KIND_CUDA);
  spec.set_output_format(v1::OUTPUT_FORMAT_COMPRESSED_TENSORS);
  spec.set_overwrite(true);
  return spec;
}

TEST(MessagesTest, JobSpecRoundTrips) {
  const v1::JobSpec spec = MakeSpec();
  std::string wire;
  ASSERT_TRUE(spec.SerializeToString(&wire));
  v1::JobSpec back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_TRUE(MessageDifferencer::Equals(spec, back));
  EXPECT_EQ(back.quantization().bits(), 3);
  EXPECT_EQ(back.quantization().group_size(), -1);
  EXPECT_DOUBLE_EQ(back.quantization().damp_percent(), 0.01);
  EXPECT_EQ(back.calibration().seed(), 0xFFFFFFFFFFFFull);
  EXPECT_EQ(back.output_format(), v1::OUTPUT_FORMAT_COMPRESSED_TENSORS);
}

TEST(MessagesTest, GarbageDoesNotParse) {
  v1::JobSpec back;
  EXPECT_FALSE(back.ParseFromString(std::string("\xff\xff\xff\xff", 4)));
}

TEST(MessagesTest, AssignmentCarries128ByteNcclIdAndPlan) {
  v1::ControlResponse msg;
  v1::Assignment* a = msg.mutable_assignment();
  a->set_job_id("j-1");
  a->set_rank(1);
  a->set_world_size(2);
  *a->mutable_spec() = MakeSpec();
  std::string id(128, '\0');
  for (int i = 0; i < 128; ++i) id[i] = static_cast<char>(i * 7);
  a->mutable_rendezvous()->set_backend("nccl");
  a->mutable_rendezvous()->set_nccl_unique_id(id);
  v1::ModuleGroup* g = a->mutable_plan()->add_layers()->add_groups();
  g->add_modules("self_attn.q_proj");
  g->set_owner_rank(1);
  a->mutable_shard()->set_begin(64);
  a->mutable_shard()->set_end(128);
  std::string wire;
  ASSERT_TRUE(msg.SerializeToString(&wire));
  v1::ControlResponse back;
  ASSERT_TRUE(back.ParseFromString(wire));
  ASSERT_TRUE(back.has_assignment());
  EXPECT_EQ(back.assignment().rendezvous().nccl_unique_id(), id);
  EXPECT_EQ(back.assignment().rendezvous().nccl_unique_id().size(), 128u);
  EXPECT_EQ(back.assignment().plan().layers(0).groups(0).owner_rank(), 1);
  EXPECT_TRUE(MessageDifferencer::Equals(msg, back));
}

}  // namespace
}  // namespace dgptq
