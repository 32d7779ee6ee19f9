#include <gtest/gtest.h>

#include "macserve/request/stop_matcher.h"

using macserve::engine::StopMatcher;

TEST(StopMatcher, MatchesAcrossPushesAndExcludesTheStop) {
  StopMatcher m({"END"});
  std::string out;
  for (const char* d : {"hello E", "N", "D tail"}) out += m.push(d);
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "hello ");
}

TEST(StopMatcher, HoldsBackOnlyPossiblePrefixes) {
  StopMatcher m({"\n\nUser:"});
  EXPECT_EQ(m.push("abc\n"), "abc");
  EXPECT_EQ(m.push("\nUs"), "");
  EXPECT_EQ(m.push("a"), "\n\nUsa");  // diverged: everything held is released
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, FirstOfSeveralStopsWinsAndFlushReleasesTail) {
  StopMatcher m({"xyz", "b"});
  EXPECT_EQ(m.push("aaxy"), "aa");
  EXPECT_EQ(m.flush(), "xy");
  StopMatcher m2({"xyz", "b"});
  EXPECT_EQ(m2.push("a b xyz"), "a ");
  EXPECT_TRUE(m2.stopped());
  EXPECT_EQ(m2.push("more"), "");
}

TEST(StopMatcher, NoStopsPassesEverything) {
  StopMatcher m({});
  EXPECT_EQ(m.push("abc"), "abc");
  EXPECT_EQ(m.flush(), "");
}
