#include "coordinator/plan_proto.h"

namespace dgptq::coordinator {

v1::Plan ToProto(const Plan& plan) {
  v1::Plan out;
  for (const LayerPlan& layer : plan.layers) {
    v1::LayerPlan* l = out.add_layers();
    l->set_layer(layer.layer);
    for (const ModuleGroupPlan& g : layer.groups) {
      v1::ModuleGroup* mg = l->add_groups();
      for (const std::string& m : g.modules) mg->add_modules(m);
      mg->set_owner_rank(g.owner_rank);
      mg->set_estimated_cost(g.cost);
    }
  }
  out.set_total_samples(plan.shards.empty() ? 0 : static_cast<int32_t>(plan.shards.back().end));
  for (const FileStamp& f : plan.model_files) {
    v1::ModelFile* m = out.add_model_files();
    m->set_name(f.name);
    m->set_size_bytes(f.size);
    m->set_mtime_ns(f.mtime_ns);
  }
  return out;
}

v1::SampleShard ToProto(const SampleShard& shard) {
  v1::SampleShard out;
  out.set_begin(shard.begin);
  out.set_end(shard.end);
  return out;
}

}  // namespace dgptq::coordinator
