// Communicator tests: the host backend with ranks as threads (and as processes) over
// loopback, with data f(rank, seed) checked against closed forms; failure injection (a peer
// that dies, hangs, or issues a different collective); NCCL id and a 1-rank NCCL
// communicator (skipped without a GPU).
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <functional>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "worker/comm/host_comm.h"
#ifdef DGPTQ_HAVE_NCCL
#include <cuda_runtime.h>

#include "worker/comm/nccl_comm.h"
#endif

namespace dgptq::worker {
namespace {

// Small integers: every order of summation is exact, so closed forms compare with ==.
float F(int rank, size_t i, int seed) {
  return static_cast<float>((rank + 1) * static_cast<int>((i * 7 + seed) % 13) - 5);
}
float SumF(int world, size_t i, int seed) {
  float s = 0;
  for (int r = 0; r < world; ++r) s += F(r, i, seed);
  return s;
}
std::vector<float> Fill(int rank, size_t n, int seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = F(rank, i, seed);
  return v;
}

using RankFn = std::function<void(Communicator&)>;

// Runs `fn` on `world` ranks, one thread each, over a fresh loopback mesh.
void RunRanks(int world, absl::Duration timeout, const RankFn& fn) {
  absl::StatusOr<std::unique_ptr<HostListener>> listener = HostListener::Bind("127.0.0.1:0");
  ASSERT_TRUE(listener.ok()) << listener.status();
  const std::string address = (*listener)->address();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    std::unique_ptr<HostListener> mine = r == 0 ? std::move(*listener) : nullptr;
    threads.emplace_back([&, r, l = std::move(mine)]() mutable {
      auto comm = CreateHostCommunicator({r, world, address, timeout}, std::move(l));
      ASSERT_TRUE(comm.ok()) << "rank " << r << ": " << comm.status();
      EXPECT_EQ((*comm)->rank(), r);
      EXPECT_EQ((*comm)->backend(), "host");
      fn(**comm);
    });
  }
  for (auto& t : threads) t.join();
}

class HostCommWorldTest : public testing::TestWithParam<int> {};

TEST_P(HostCommWorldTest, CollectivesMatchClosedForms) {
  const int world = GetParam();
  const size_t n = 1000 + 3;
  RunRanks(world, absl::Seconds(30), [&](Communicator& c) {
    const int r = c.rank();
    for (int root : {0, world - 1, world / 2}) {
      std::vector<float> send = Fill(r, n, root), recv(n, -1.0f);
      ASSERT_TRUE(c.Reduce(send.data(), recv.data(), n, root).ok());
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(recv[i], r == root ? SumF(world, i, root) : -1.0f) << i;
      }
    }
    std::vector<float> b = Fill(r, n, 7);
    ASSERT_TRUE(c.Broadcast(b.data(), n * sizeof(float), world - 1).ok());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(b[i], F(world - 1, i, 7));
    std::vector<float> a = Fill(r, n, 3);
    ASSERT_TRUE(c.AllReduce(a.data(), n).ok());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(a[i], SumF(world, i, 3));
    ASSERT_TRUE(c.Barrier().ok());
    if (world > 1) {
      EXPECT_GT(c.bytes_sent(), 0u);
      EXPECT_GT(c.bytes_received(), 0u);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Worlds, HostCommWorldTest, testing::Values(1, 2, 3, 5));

TEST(HostCommTest, ReduceSumsInRankOrderInPlace) {
  const int world = 4;
  const size_t n = 4099;
  auto g = [](int r, size_t i) -> float {
    return std::sin(0.37f * i + r) * static_cast<float>(std::pow(10.0, r % 3 * 3));
  };
  RunRanks(world, absl::Seconds(30), [&](Communicator& c) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = g(c.rank(), i);
    ASSERT_TRUE(c.Reduce(v.data(), v.data(), n, 2).ok());  // in place on the root
    if (c.rank() != 2) return;
    for (size_t i = 0; i < n; ++i) {
      float want = 0;
      for (int r = 0; r < world; ++r) want = r == 0 ? g(0, i) : want + g(r, i);
      ASSERT_EQ(v[i], want) << i;  // bit-exact: fixed order 0, 1, 2, 3
    }
  });
}

TEST(HostCommTest, ReduceF64SumsDoublesInRankOrder) {
  const int world = 3;
  const size_t n = 300001;  // more than one reduction step
  auto g = [](int r, size_t i) { return std::cos(0.11 * i + r) * (1.0 + 1e-12 * r); };
  RunRanks(world, absl::Seconds(30), [&](Communicator& c) {
    std::vector<double> v(n), out(n);
    for (size_t i = 0; i < n; ++i) v[i] = g(c.rank(), i);
    ASSERT_TRUE(c.ReduceF64(v.data(), out.data(), n, 1).ok());
    if (c.rank() != 1) return;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(out[i], (g(0, i) + g(1, i)) + g(2, i)) << i;
    }
  });
}

TEST(HostCommTest, GroupedReducesAndBroadcast) {
  const int world = 3;
  const size_t n = 513;
  RunRanks(world, absl::Seconds(30), [&](Communicator& c) {
    const int r = c.rank();
    std::vector<float> h1 = Fill(r, n, 1), h2 = Fill(r, n, 2), o1(n), o2(n);
    std::vector<float> packed = Fill(r, 77, 9);
    ASSERT_TRUE(c.GroupStart().ok());
    ASSERT_TRUE(c.Reduce(h1.data(), o1.data(), n, 1).ok());
    ASSERT_TRUE(c.Reduce(h2.data(), o2.data(), n, 2).ok());
    ASSERT_TRUE(c.Broadcast(packed.data(), packed.size() * sizeof(float), 2).ok());
    EXPECT_EQ(c.Barrier().code(), absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE(c.GroupEnd().ok());
    for (size_t i = 0; i < n; ++i) {
      if (r == 1) {
        ASSERT_EQ(o1[i], SumF(world, i, 1));
      }
      if (r == 2) {
        ASSERT_EQ(o2[i], SumF(world, i, 2));
      }
    }
    for (size_t i = 0; i < packed.size(); ++i) ASSERT_EQ(packed[i], F(2, i, 9));
  });
}

TEST(HostCommTest, LargeBuffers64MB) {
  const int world = 4;
  const size_t n = (size_t{64} << 20) / sizeof(float) / world;  // 64 MB over all ranks
  RunRanks(world, absl::Seconds(120), [&](Communicator& c) {
    std::vector<float> v = Fill(c.rank(), n, 5);
    ASSERT_TRUE(c.AllReduce(v.data(), n).ok());
    for (size_t i = 0; i < n; i += 997) ASSERT_EQ(v[i], SumF(world, i, 5)) << i;
    ASSERT_EQ(v[n - 1], SumF(world, n - 1, 5));
  });
}

TEST(HostCommTest, DeadPeerIsUnavailableNamingIt) {
  RunRanks(3, absl::Seconds(2), [&](Communicator& c) {
    if (c.rank() == 2) return;  // returning destroys its communicator: its sockets close
    std::vector<float> v(1 << 16, 1.0f), out(v.size());
    const absl::Time start = absl::Now();
    const absl::Status s = c.Reduce(v.data(), out.data(), v.size(), 0);
    if (c.rank() != 0) return;  // rank 1 only sends; it may or may not notice
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_NE(s.message().find("rank 2"), std::string::npos) << s;
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
    EXPECT_EQ(c.Barrier().code(), absl::StatusCode::kFailedPrecondition);
  });
}

TEST(HostCommTest, HungPeerIsDeadlineExceededNamingIt) {
  RunRanks(3, absl::Seconds(2), [&](Communicator& c) {
    if (c.rank() == 2) {  // never sends; holds its connections open
      absl::SleepFor(absl::Seconds(3));
      return;
    }
    std::vector<float> v(100, 1.0f);
    const absl::Time start = absl::Now();
    const absl::Status s = c.Broadcast(v.data(), v.size() * sizeof(float), 2);
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_NE(s.message().find("rank 2"), std::string::npos) << s;
    EXPECT_GE(took, absl::Milliseconds(1900));
    EXPECT_LT(took, absl::Seconds(3));
    EXPECT_EQ(c.AllReduce(v.data(), v.size()).code(), absl::StatusCode::kFailedPrecondition);
  });
}

TEST(HostCommTest, MismatchedCollectivesAreDataLoss) {
  RunRanks(2, absl::Seconds(5), [&](Communicator& c) {
    std::vector<float> v(10, 1.0f), out(10);
    if (c.rank() == 1) {
      (void)c.Broadcast(v.data(), 40, 1);  // rank 0 runs a Reduce instead
      return;
    }
    const absl::Status s = c.Reduce(v.data(), out.data(), v.size(), 0);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s;
  });
}

TEST(HostCommTest, BadRendezvousGivesClearErrors) {
  auto create = [](int rank, const std::string& address) {
    return CreateHostCommunicator({rank, 2, address, absl::Milliseconds(500)}).status();
  };
  EXPECT_EQ(create(1, "127.0.0.1").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(1, "127.0.0.1:99999").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(1, ":80").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(3, "127.0.0.1:1").code(), absl::StatusCode::kInvalidArgument);
  const absl::Status refused = create(1, "127.0.0.1:1");
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_NE(refused.message().find("127.0.0.1:1"), std::string::npos) << refused;
  const absl::Status alone = create(0, "127.0.0.1:0");  // nobody joins rank 0
  EXPECT_EQ(alone.code(), absl::StatusCode::kDeadlineExceeded) << alone;
  EXPECT_NE(alone.message().find("ranks not connected: 1"), std::string::npos) << alone;
}

// One rank as a child process: exit code 0 when every check passed.
int ChildRank(int rank, const std::string& address, std::unique_ptr<HostListener> listener,
              bool die_after_init) {
  auto comm = CreateHostCommunicator({rank, 3, address, absl::Seconds(10)}, std::move(listener));
  if (!comm.ok()) return 10;
  Communicator& c = **comm;
  if (die_after_init) _exit(0);  // a worker that dies: its sockets close with the process
  const size_t n = 1 << 20;
  std::vector<float> v = Fill(rank, n, 4), out(n);
  const absl::Status s = c.Reduce(v.data(), out.data(), n, 0);
  if (!s.ok()) {
    const bool names = s.message().find("rank 1") != std::string::npos;
    return s.code() == absl::StatusCode::kUnavailable && names ? 20 : 21;
  }
  if (rank == 0 && out[12345] != SumF(3, 12345, 4)) return 12;
  if (!c.AllReduce(v.data(), n).ok() || v[n - 1] != SumF(3, n - 1, 4)) return 13;
  return c.Barrier().ok() ? 0 : 14;
}

// Forks 3 ranks; returns their exit codes (-1: killed after the time limit).
std::vector<int> ForkRanks(int dying_rank) {
  auto listener = HostListener::Bind("127.0.0.1:0");
  if (!listener.ok()) return {};
  const std::string address = (*listener)->address();
  std::vector<pid_t> pids;
  for (int r = 0; r < 3; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      std::unique_ptr<HostListener> mine = r == 0 ? std::move(*listener) : nullptr;
      _exit(ChildRank(r, address, std::move(mine), r == dying_rank));
    }
    pids.push_back(pid);
  }
  listener->reset();
  std::vector<int> codes(3, -1);
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  for (int r = 0; r < 3; ++r) {
    int status = 0;
    while (waitpid(pids[r], &status, WNOHANG) == 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (absl::Now() >= deadline) {
      kill(pids[r], SIGKILL);
      waitpid(pids[r], &status, 0);
      continue;
    }
    if (WIFEXITED(status)) codes[r] = WEXITSTATUS(status);
  }
  return codes;
}

TEST(HostCommProcessTest, ThreeProcessesAgree) {
  EXPECT_EQ(ForkRanks(-1), (std::vector<int>{0, 0, 0}));
}

TEST(HostCommProcessTest, ProcessDyingMidJobIsUnavailableNamingIt) {
  const std::vector<int> codes = ForkRanks(1);
  ASSERT_EQ(codes.size(), 3u);
  EXPECT_EQ(codes[0], 20);  // root: Unavailable naming rank 1
  EXPECT_EQ(codes[1], 0);
}

#ifdef DGPTQ_HAVE_NCCL
TEST(NcclCommTest, UniqueIdIs128RawBytes) {
  absl::StatusOr<std::string> a = NewNcclUniqueId(), b = NewNcclUniqueId();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->size(), 128u);
  EXPECT_NE(*a, *b);
  NcclCommOptions bad;
  bad.unique_id = "short";
  EXPECT_EQ(CreateNcclCommunicator(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NcclCommTest, OneRankCollectives) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no GPU";
  absl::StatusOr<std::string> id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  NcclCommOptions o;
  o.unique_id = *id;
  o.timeout = absl::Seconds(60);
  auto comm = CreateNcclCommunicator(o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  Communicator& c = **comm;
  EXPECT_EQ(c.backend(), "nccl");
  const size_t n = 4097;
  std::vector<float> h = Fill(0, n, 1), back(n);
  float *d = nullptr, *out = nullptr;
  ASSERT_EQ(cudaMalloc(&d, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d, h.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE(c.GroupStart().ok());
  ASSERT_TRUE(c.Reduce(d, out, n, 0).ok());
  ASSERT_TRUE(c.Broadcast(d, n * sizeof(float), 0).ok());
  ASSERT_TRUE(c.GroupEnd().ok());
  ASSERT_TRUE(c.AllReduce(d, n).ok());
  ASSERT_TRUE(c.Barrier().ok());
  ASSERT_EQ(cudaMemcpy(back.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, h);
  ASSERT_EQ(cudaMemcpy(back.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, h);
  EXPECT_EQ(c.Reduce(d, out, n, 1).code(), absl::StatusCode::kInvalidArgument);
  cudaFree(d);
  cudaFree(out);
}
#endif

}  // namespace
}  // namespace dgptq::worker
