#include <gtest/gtest.h>

#include "common/error.hpp"

TEST(Smoke, ErrorCarriesExitCode) {
  try {
    sparge::fail(sparge::ExitCode::kDataError, "x {}", 1);
    FAIL() << "fail() returned";
  } catch (const sparge::Error& e) {
    EXPECT_EQ(e.code(), sparge::ExitCode::kDataError);
    EXPECT_STREQ(e.what(), "x 1");
  }
}
