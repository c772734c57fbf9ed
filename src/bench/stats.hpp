// Summary statistics of timing samples (milliseconds). Pure host code, unit-tested on the CPU.
#pragma once

#include <vector>

namespace sparge::bench {

struct SampleStats {
  int count = 0;
  double median = 0, mean = 0, min = 0, max = 0;
  double q1 = 0, q3 = 0;  // first and third quartiles (linear interpolation, like numpy)
  // IQR / median: robust relative spread, insensitive to the odd preempted sample that would
  // inflate a standard deviation. 0 when fewer than 2 samples.
  double rel_spread() const { return (count < 2 || median <= 0) ? 0.0 : (q3 - q1) / median; }
};

// Throws sparge::Error(kSoftware) on an empty input (a timer that collected nothing is a bug).
SampleStats summarize(std::vector<double> samples);

// Quantile p in [0, 1] of sorted values, linear interpolation between closest ranks.
double quantile_sorted(const std::vector<double>& sorted, double p);

}  // namespace sparge::bench
