// Internal to the runtime: the Hopper kernel a kernel name selects, shared by the choice
// (kernel_choice.cpp) and the launch (runtime.cpp).
#pragma once

#include <string>

#include "kernels/attention_api.h"

namespace sparge::runtime::detail {

// "sm90.NAME" -> the Hopper kernel NAME; Sm90Kernel::kDefault for a plain name ("sm90", "sm80",
// "auto"). An unknown NAME is Error(kUsage).
kernels::Sm90Kernel hopper_kernel(const std::string& kernel);

}  // namespace sparge::runtime::detail
