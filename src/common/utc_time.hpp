// Wall-clock time for the records sparge writes (bench environment, tuned provenance).
#pragma once

#include <string>

namespace sparge {

// The current time in UTC, ISO 8601 to the second: "2026-01-31T12:34:56Z".
std::string utc_now();

}  // namespace sparge
