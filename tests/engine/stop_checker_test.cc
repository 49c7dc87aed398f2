// Stop strings: the text before the first stop string is emitted, never any part of it.
#include "runtime/engine/stop_checker.h"

#include "gtest/gtest.h"

namespace tessera {
namespace {

std::string Feed(StopStringChecker& c, const std::vector<std::string>& deltas, bool* stopped) {
  std::string out;
  *stopped = false;
  for (const auto& d : deltas) {
    auto r = c.Add(d);
    out += r.emit;
    if (r.stopped) {
      *stopped = true;
      return out;
    }
  }
  return out + c.Flush();
}

TEST(StopStringCheckerTest, StopsBeforeAStopStringSplitAcrossDeltas) {
  StopStringChecker c({"The End"});
  bool stopped;
  EXPECT_EQ(Feed(c, {"and so", " it was. Th", "e E", "nd of it"}, &stopped), "and so it was. ");
  EXPECT_TRUE(stopped);
}

TEST(StopStringCheckerTest, HoldsBackOnlyWhatCouldStartAStopString) {
  StopStringChecker c({"###"});
  auto r = c.Add("abc#");
  EXPECT_EQ(r.emit, "abc");
  r = c.Add("x");
  EXPECT_EQ(r.emit, "#x");
  EXPECT_FALSE(r.stopped);
}

TEST(StopStringCheckerTest, EarliestOfSeveralStopStringsWins) {
  StopStringChecker c({"world", "lo"});
  bool stopped;
  EXPECT_EQ(Feed(c, {"hello world"}, &stopped), "hel");
  EXPECT_TRUE(stopped);
}

TEST(StopStringCheckerTest, FlushReleasesAHeldTailWhenNoStopCame) {
  StopStringChecker c({"STOP"});
  bool stopped;
  EXPECT_EQ(Feed(c, {"go ST"}, &stopped), "go ST");
  EXPECT_FALSE(stopped);
}

TEST(StopStringCheckerTest, NoStopStringsPassEverythingThrough) {
  StopStringChecker c({});
  EXPECT_EQ(c.Add("anything").emit, "anything");
}

}  // namespace
}  // namespace tessera
