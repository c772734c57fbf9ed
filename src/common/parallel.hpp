// A small fork-join loop for host work that is not libtorch's (heads of a tune, GPUs of a bench).
#pragma once

#include <functional>

namespace sparge {

// Runs fn(0), ..., fn(n - 1) on min(jobs, n) threads (at least 1; the calling thread is one of
// them), each index once, in no fixed order. The first exception stops the threads from taking
// further indices; calls already running finish, and then it is rethrown.
void parallel_for(int n, int jobs, const std::function<void(int)>& fn);

}  // namespace sparge
