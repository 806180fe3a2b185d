// Conversion of the planner's Plan into the dgptq.v1 messages an Assignment carries.
#pragma once

#include "coordinator/planner.h"
#include "dgptq/v1/worker.pb.h"

namespace dgptq::coordinator {

// Every layer's groups with their modules, owner_rank and estimated_cost, and
// total_samples = the end of the last shard.
v1::Plan ToProto(const Plan& plan);
v1::SampleShard ToProto(const SampleShard& shard);

}  // namespace dgptq::coordinator
