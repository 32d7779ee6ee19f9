// The in-process communicator (backend/communicator.h): all-reduce sums in rank order with the same
// bits on every rank, all-gather in rank order with uneven slices, many collectives back to back
// from concurrent threads, and a failing rank (abort, mismatched shapes) ends the collective of
// every other rank with an error instead of a hang.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "macserve/backend/communicator.h"
#include "macserve/core/error.h"

namespace macserve::backend {
namespace {

// Runs fn(rank, comm) on one thread per rank; returns each rank's error message ("" = none).
std::vector<std::string> on_ranks(int n, const std::function<void(int, Communicator&)>& fn) {
  auto comms = make_cpu_communicators(n);
  std::vector<std::string> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r, *comms[static_cast<std::size_t>(r)]);
      } catch (const Error& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  return errors;
}

// Values of very different magnitudes, so that the order of the additions shows in the bits.
std::vector<float> values(int rank, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed * 131 + static_cast<uint32_t>(rank));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = u(rng) * (rng() % 3 == 0 ? 1e7f : 1.0f);
  return v;
}

class CpuGroup : public ::testing::TestWithParam<int> {};

TEST_P(CpuGroup, AllReduceSumsInRankOrderWithTheSameBitsEverywhere) {
  const int n = GetParam();
  const int64_t len = 1000;
  std::vector<float> expected = values(0, len, 1), reversed = values(n - 1, len, 1);
  for (int r = 1; r < n; ++r) {
    const std::vector<float> v = values(r, len, 1), w = values(n - 1 - r, len, 1);
    for (int64_t i = 0; i < len; ++i) {
      expected[static_cast<std::size_t>(i)] += v[static_cast<std::size_t>(i)];
      reversed[static_cast<std::size_t>(i)] += w[static_cast<std::size_t>(i)];
    }
  }
  if (n > 2) {  // the data tells the orders apart (two summands commute exactly)
    EXPECT_NE(std::memcmp(expected.data(), reversed.data(), expected.size() * 4), 0);
  }
  std::vector<std::vector<float>> got(static_cast<std::size_t>(n));
  const auto errors = on_ranks(n, [&](int r, Communicator& c) {
    EXPECT_EQ(c.rank(), r);
    EXPECT_EQ(c.size(), n);
    got[static_cast<std::size_t>(r)] = values(r, len, 1);
    c.all_reduce_sum(Tensor(got[static_cast<std::size_t>(r)].data(), DType::kF32, {10, 100}));
  });
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(errors[static_cast<std::size_t>(r)], "");
    EXPECT_EQ(std::memcmp(got[static_cast<std::size_t>(r)].data(), expected.data(), len * 4), 0)
        << "rank " << r;
  }
}

TEST_P(CpuGroup, AllGatherPutsUnevenSlicesInRankOrder) {
  const int n = GetParam();
  const int64_t rows = 3;
  int64_t total = 0;
  for (int r = 0; r < n; ++r) total += r + 1;  // rank r contributes r + 1 columns
  std::vector<std::vector<float>> out(static_cast<std::size_t>(n),
                                      std::vector<float>(static_cast<std::size_t>(rows * total)));
  const auto errors = on_ranks(n, [&](int r, Communicator& c) {
    std::vector<float> local(static_cast<std::size_t>(rows * (r + 1)));
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j <= r; ++j)
        local[static_cast<std::size_t>(i * (r + 1) + j)] = 100.0f * r + 10.0f * i + j;
    c.all_gather_cols(Tensor(local.data(), DType::kF32, {rows, r + 1}),
                      Tensor(out[static_cast<std::size_t>(r)].data(), DType::kF32, {rows, total}));
  });
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(errors[static_cast<std::size_t>(r)], "");
    int64_t col = 0;
    for (int src = 0; src < n; ++src)
      for (int64_t j = 0; j <= src; ++j, ++col)
        for (int64_t i = 0; i < rows; ++i)
          EXPECT_EQ(out[static_cast<std::size_t>(r)][static_cast<std::size_t>(i * total + col)],
                    100.0f * src + 10.0f * i + j)
              << "rank " << r << " row " << i << " column " << col;
  }
}

// Many collectives of changing sizes back to back: no rank may overtake another's use of the
// shared exchange (a race shows up as a wrong sum).
TEST_P(CpuGroup, ManyCollectivesInARowStayExact) {
  const int n = GetParam();
  const auto errors = on_ranks(n, [&](int r, Communicator& c) {
    for (uint32_t round = 0; round < 300; ++round) {
      const int64_t len = 1 + (round * 37) % 257;
      std::vector<float> x = values(r, len, round);
      c.all_reduce_sum(Tensor(x.data(), DType::kF32, {len}));
      std::vector<float> want = values(0, len, round);
      for (int s = 1; s < n; ++s) {
        const std::vector<float> v = values(s, len, round);
        for (int64_t i = 0; i < len; ++i)
          want[static_cast<std::size_t>(i)] += v[static_cast<std::size_t>(i)];
      }
      ASSERT_EQ(std::memcmp(x.data(), want.data(), static_cast<std::size_t>(len) * 4), 0)
          << "rank " << r << " round " << round;
      float mine = static_cast<float>(r + round);
      std::vector<float> all(static_cast<std::size_t>(n));
      c.all_gather_cols(Tensor(&mine, DType::kF32, {1, 1}),
                        Tensor(all.data(), DType::kF32, {1, n}));
      for (int s = 0; s < n; ++s)
        ASSERT_EQ(all[static_cast<std::size_t>(s)], static_cast<float>(s + round));
    }
  });
  for (const std::string& e : errors) EXPECT_EQ(e, "");
}

// A rank that fails before its collective aborts the group: the ranks already waiting and those
// arriving later get an error naming the failure; later collectives fail too.
TEST_P(CpuGroup, AFailingRankEndsEveryRanksCollective) {
  const int n = GetParam();
  const int failing = n - 1;
  const auto errors = on_ranks(n, [&](int r, Communicator& c) {
    std::vector<float> x(16, 1.0f);
    c.all_reduce_sum(Tensor(x.data(), DType::kF32, {16}));  // one that works
    EXPECT_EQ(x[0], static_cast<float>(n));
    if (r == failing) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the others wait by now
      c.abort("rank " + std::to_string(r) + " ran out of memory");
      throw Error(ErrorCode::kResourceExhausted, "out of memory");
    }
    c.all_reduce_sum(Tensor(x.data(), DType::kF32, {16}));
  });
  for (int r = 0; r < n; ++r) {
    if (r == failing) {
      EXPECT_EQ(errors[static_cast<std::size_t>(r)], "out of memory");
      continue;
    }
    EXPECT_NE(errors[static_cast<std::size_t>(r)].find("tensor-parallel group aborted"),
              std::string::npos)
        << errors[static_cast<std::size_t>(r)];
    EXPECT_NE(errors[static_cast<std::size_t>(r)].find("ran out of memory"), std::string::npos)
        << errors[static_cast<std::size_t>(r)];
  }
}

TEST_P(CpuGroup, MismatchedShapesAbortTheGroup) {
  const int n = GetParam();
  const auto errors = on_ranks(n, [&](int r, Communicator& c) {
    std::vector<float> x(static_cast<std::size_t>(r == 1 ? 9 : 8), 1.0f);
    c.all_reduce_sum(Tensor(x.data(), DType::kF32, {static_cast<int64_t>(x.size())}));
  });
  for (const std::string& e : errors)
    EXPECT_NE(e.find("all_reduce_sum: ranks pass"), std::string::npos) << e;
}

INSTANTIATE_TEST_SUITE_P(Ranks, CpuGroup, ::testing::Values(2, 4, 8),
                         [](const auto& info) { return "tp" + std::to_string(info.param); });

TEST(CommunicatorGroup, OneRankIsTheIdentity) {
  auto comms = make_cpu_communicators(1);
  std::vector<float> x{1.5f, -2.0f};
  comms[0]->all_reduce_sum(Tensor(x.data(), DType::kF32, {2}));
  EXPECT_EQ(x, (std::vector<float>{1.5f, -2.0f}));
  EXPECT_THROW(make_cpu_communicators(0), Error);
}

}  // namespace
}  // namespace macserve::backend
