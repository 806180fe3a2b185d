// The pipeline as rank r of N: ranks as threads over the real host (TCP) communicator,
// compared with the one-process run; and the wire form of a module's result.
#include <gtest/gtest.h>

#include "common/safetensors_writer.h"

#include <filesystem>
#include <thread>

#include "absl/strings/str_format.h"
#include "tests/test_util.h"
#include "tests/worker/pipeline_test_util.h"
#include "worker/comm/host_comm.h"
#include "worker/output/model_reader.h"
#include "worker/quant/pipeline.h"

namespace dgptq::worker {
namespace {

using dgptq::testing::TempDir;

TEST(WireForm, RoundTripsEveryBitWidthAndGrouping) {
  for (int bits : {2, 3, 4, 8}) {
    for (int gs : {-1, 16, 24}) {
      for (bool act : {false, true}) {
        const QuantConfig c = Config(bits, gs, bits != 3, act, false);
        const QuantizedWeight q = MakeQ(13, 48, c, 7u + bits);
        const std::string wire = SerializeQuantized(q);
        ASSERT_EQ(wire.size(), SerializedQuantizedBytes(13, 48, c));
        auto back = DeserializeQuantized(wire, 13, 48, c);
        ASSERT_TRUE(back.ok()) << back.status();
        EXPECT_EQ(back->codes, q.codes);
        EXPECT_EQ(back->scales, q.scales);
        EXPECT_EQ(back->zeros, q.zeros);
        EXPECT_EQ(back->g_idx, q.g_idx);
      }
    }
  }
}

TEST(WireForm, RefusesWrongShapeAndSize) {
  const QuantConfig c = Config(4, 16, true, false, false);
  const std::string wire = SerializeQuantized(MakeQ(8, 32, c, 1));
  EXPECT_EQ(DeserializeQuantized(wire, 8, 48, c).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DeserializeQuantized(wire.substr(1), 8, 32, c).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string flipped = wire;
  flipped[0] ^= 1;  // rows in the header
  EXPECT_EQ(DeserializeQuantized(flipped, 8, 32, c).status().code(),
            absl::StatusCode::kInvalidArgument);
}

class RankPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = tmp_ / "model";
    calib_ = tmp_ / "calib.txt";
    auto r = MakeSmallModel(model_, 3, calib_, 300);
    ASSERT_EQ(r.code, 0) << r.output;
  }
  QuantizeOptions Options(const std::string& out) const {
    QuantizeOptions o;
    o.model_dir = model_;
    o.out_dir = tmp_ / out;
    o.calib_path = calib_;
    o.samples = 10;
    o.seq_len = 64;
    o.quant.group_size = 32;
    o.quant.act_order = true;
    // Ranks share this process here: LAPACK's thread count is process-wide, so each rank
    // keeps to one thread to stay deterministic (the daemons are separate processes).
    o.cpu_threads = 1;
    return o;
  }
  // Runs `world` ranks as threads; group g of layer l is owned by rank (l + g) % world;
  // shards as the planner makes them (the last rank takes the remainder).
  // With stop_rank >= 0, that rank is cancelled once it wrote `stop_after` layers.
  std::vector<absl::StatusOr<QuantizeReport>> RunRanks(const QuantizeOptions& o, int world,
                                                       std::vector<ProgressEvent>* events,
                                                       int stop_rank = -1, int stop_after = 0) {
    auto listener = HostListener::Bind("127.0.0.1:0");
    EXPECT_TRUE(listener.ok()) << listener.status();
    const std::string address = (*listener)->address();
    std::vector<absl::StatusOr<QuantizeReport>> out(world, absl::UnknownError("not run"));
    std::mutex mu;
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      std::unique_ptr<HostListener> mine = r == 0 ? std::move(*listener) : nullptr;
      threads.emplace_back([&, r, l = std::move(mine)]() mutable {
        auto comm = CreateHostCommunicator({r, world, address, absl::Seconds(60)}, std::move(l));
        if (!comm.ok()) {
          out[r] = comm.status();
          return;
        }
        const int64_t base = o.samples / world;
        RankContext ctx;
        ctx.rank = r;
        ctx.world = world;
        ctx.comm = comm->get();
        // Group index by its first module: q/k/v 0, o 1, gate/up 2, down 3.
        ctx.owner = [world](int layer, const std::string& m) {
          const int g = m == "self_attn.q_proj" ? 0 : m == "self_attn.o_proj" ? 1
                        : m == "mlp.gate_proj"  ? 2 : 3;
          return (layer + g) % world;
        };
        ctx.window_begin = r * base;
        ctx.window_end = r + 1 == world ? o.samples : (r + 1) * base;
        int writes = 0;
        ctx.cancelled = [&writes, r, stop_rank, stop_after] {
          return r == stop_rank && writes >= stop_after;
        };
        out[r] = QuantizeRank(o, ctx, [&](const ProgressEvent& e) {
          std::lock_guard<std::mutex> lock(mu);
          if (e.phase == "write" && e.layer >= 0) ++writes;
          if (events) events->push_back(e);
        });
        comm->reset();  // closing the connections is what the peers notice
      });
    }
    for (auto& t : threads) t.join();
    return out;
  }
  TempDir tmp_;
  std::string model_, calib_;
};

// Three ranks give the one-process result (shards of 3, 3 and 4 windows); the run is
// deterministic; every module is quantized by exactly one rank.
TEST_F(RankPipeline, ThreeRanksMatchOneProcess) {
  const QuantizeOptions one = Options("one");
  ASSERT_TRUE(Quantize(one, nullptr).ok());
  QuantizeOptions dist = Options("dist");
  std::vector<ProgressEvent> events;
  auto reports = RunRanks(dist, 3, &events);
  size_t modules = 0;
  for (auto& r : reports) {
    ASSERT_TRUE(r.ok()) << r.status();
    modules += r->modules.size();
    EXPECT_GT(r->modules.size(), 0u);  // (l + g) % 3 gives every rank some groups
  }
  EXPECT_EQ(modules, 3u * 7u);
  const auto a = LoadQuantizedModules(one.out_dir);
  const auto b = LoadQuantizedModules(dist.out_dir);
  ASSERT_EQ(a.size(), 21u);
  ASSERT_EQ(b.size(), a.size());
  int64_t same = 0, total = 0;
  for (const auto& [name, q] : a) {
    const auto& p = b.at(name);
    ASSERT_EQ(p.codes.size(), q.codes.size()) << name;
    for (size_t i = 0; i < q.codes.size(); ++i) same += p.codes[i] == q.codes[i];
    total += static_cast<int64_t>(q.codes.size());
  }
  // Per-window products summed in fp64 make the sharded Hessians round like the
  // one-process ones: the codes are identical.
  EXPECT_EQ(same, total);
  // Reduce and broadcast phases report bytes; every rank marks every layer written.
  int64_t reduce_bytes = 0, broadcast_bytes = 0;
  int writes = 0;
  for (const auto& e : events) {
    if (e.phase == "reduce") reduce_bytes += e.bytes;
    if (e.phase == "broadcast") broadcast_bytes += e.bytes;
    if (e.phase == "write" && e.layer >= 0) ++writes;
  }
  EXPECT_GT(reduce_bytes, 0);
  EXPECT_GT(broadcast_bytes, 0);
  EXPECT_EQ(writes, 3 * 3);

  QuantizeOptions again = Options("again");
  for (auto& r : RunRanks(again, 3, nullptr)) ASSERT_TRUE(r.ok()) << r.status();
  const auto c = LoadQuantizedModules(again.out_dir);
  for (const auto& [name, q] : b) {
    EXPECT_EQ(c.at(name).codes, q.codes) << name;
    EXPECT_EQ(c.at(name).scales, q.scales) << name;
  }
  // Every rank wrote its parts into the one partial output, which rank 0 published.
  EXPECT_FALSE(HasStaging(tmp_.path()));
}

// A job stopped after some layers (a rank cancelled, its peers failing) leaves its finished
// layers in <out>.partial; a run on another number of ranks goes on from there, and the
// codes and scales are those of an uninterrupted one-process run.
TEST_F(RankPipeline, ResumesOnOtherRanksWithTheSameCodes) {
  const QuantizeOptions one = Options("one");
  ASSERT_TRUE(Quantize(one, nullptr).ok());
  QuantizeOptions o = Options("resumed");
  auto stopped = RunRanks(o, 3, nullptr, /*stop_rank=*/1, /*stop_after=*/2);
  EXPECT_EQ(stopped[1].status().code(), absl::StatusCode::kCancelled) << stopped[1].status();
  EXPECT_FALSE(std::filesystem::exists(o.out_dir));
  auto parts = ListParts(PartialDir(o.out_dir));
  ASSERT_TRUE(parts.ok()) << parts.status();
  // Layer 0 is surely complete: every rank wrote it before layer 1's collectives.
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(parts->count(absl::StrFormat("layer-00000.rank-%03d", r))) << r;
  }

  o.resume = ResumeMode::kIfMatching;
  auto resumed = RunRanks(o, 2, nullptr);
  for (auto& r : resumed) ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(resumed[0]->resumed_layers, 1);
  EXPECT_EQ(resumed[1]->resumed_layers, resumed[0]->resumed_layers);
  const auto a = LoadQuantizedModules(one.out_dir);
  const auto b = LoadQuantizedModules(o.out_dir);
  ASSERT_EQ(b.size(), a.size());
  for (const auto& [name, q] : a) {
    EXPECT_EQ(b.at(name).codes, q.codes) << name;
    EXPECT_EQ(b.at(name).scales, q.scales) << name;
  }
  EXPECT_FALSE(HasStaging(tmp_.path()));
}

TEST_F(RankPipeline, TrueSequentialAndRtnRunDistributed) {
  QuantizeOptions ts = Options("ts");
  ts.true_sequential = true;
  for (auto& r : RunRanks(ts, 2, nullptr)) ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(LoadQuantizedModules(ts.out_dir).size(), 21u);
  QuantizeOptions rtn = Options("rtn");
  rtn.rtn = true;
  QuantizeOptions rtn1 = Options("rtn1");
  rtn1.rtn = true;
  for (auto& r : RunRanks(rtn, 2, nullptr)) ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(Quantize(rtn1, nullptr).ok());
  const auto a = LoadQuantizedModules(rtn.out_dir), b = LoadQuantizedModules(rtn1.out_dir);
  ASSERT_EQ(a.size(), 21u);
  for (const auto& [name, q] : b) EXPECT_EQ(a.at(name).codes, q.codes) << name;  // RTN is exact
}

TEST_F(RankPipeline, BadContextIsRefused) {
  const QuantizeOptions o = Options("bad");
  RankContext ctx;
  ctx.rank = 1;
  ctx.world = 2;  // no communicator
  EXPECT_EQ(QuantizeRank(o, ctx, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  ctx = RankContext{};
  ctx.owner = [](int, const std::string&) { return 3; };  // outside a world of 1
  auto s = QuantizeRank(o, ctx, nullptr).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rank 3"), std::string::npos) << s;
  ctx = RankContext{};
  ctx.window_begin = 10;  // empty shard of 10 samples
  s = QuantizeRank(o, ctx, nullptr).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("shard"), std::string::npos) << s;
  EXPECT_FALSE(std::filesystem::exists(o.out_dir));
}

// A rank that is cancelled mid-job stops with Cancelled; its peer sees the broken
// connection instead of hanging, and no output appears.
TEST_F(RankPipeline, CancelledRankStopsItsPeers) {
  const QuantizeOptions o = Options("cancelled");
  auto listener = HostListener::Bind("127.0.0.1:0");
  ASSERT_TRUE(listener.ok());
  const std::string address = (*listener)->address();
  std::vector<absl::Status> st(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    std::unique_ptr<HostListener> mine = r == 0 ? std::move(*listener) : nullptr;
    threads.emplace_back([&, r, l = std::move(mine)]() mutable {
      auto comm = CreateHostCommunicator({r, 2, address, absl::Seconds(30)}, std::move(l));
      if (!comm.ok()) {
        st[r] = comm.status();
        return;
      }
      RankContext ctx;
      ctx.rank = r;
      ctx.world = 2;
      ctx.comm = comm->get();
      ctx.window_begin = r * 5;
      ctx.window_end = r * 5 + 5;
      int writes = 0;
      ctx.cancelled = [&writes, r] { return r == 1 && writes >= 1; };
      st[r] = QuantizeRank(o, ctx, [&writes](const ProgressEvent& e) {
                if (e.phase == "write" && e.layer >= 0) ++writes;
              }).status();
      comm->reset();  // closing the connections is what the peer notices
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(st[1].code(), absl::StatusCode::kCancelled) << st[1];
  EXPECT_FALSE(st[0].ok());
  EXPECT_FALSE(std::filesystem::exists(o.out_dir));
  // The finished layer stays in the partial output, for a later run to resume.
  auto parts = ListParts(PartialDir(o.out_dir));
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_TRUE(parts->count("layer-00000.rank-000"));
}

}  // namespace
}  // namespace dgptq::worker
