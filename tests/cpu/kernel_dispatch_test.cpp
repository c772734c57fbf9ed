// The attention dispatchers reject a parameter set no compiled instance can run before touching
// the GPU, naming the compiled set (kernels/instances/, scripts/gen_kernel_instances.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention_api.h"
#include "kernels/instances/attention_sm80_instances.h"
#include "kernels/params.h"

namespace sparge::kernels {
namespace {

// A consistent sm80 problem (128 x 64 blocks) with dummy, never dereferenced pointers.
AttentionParams valid_sm80(int head_dim) {
  static int8_t dummy[16];
  static float fdummy[4];
  AttentionParams p;
  p.q8 = p.k8 = dummy;
  p.v = dummy;
  p.q_scale = p.k_scale = fdummy;
  p.o = dummy;
  p.batch = p.heads = p.kv_heads = 1;
  p.seq_q = 200;
  p.seq_k = 300;
  p.num_q_blocks = 2;  // ceil(200 / 128)
  p.num_k_blocks = 5;  // ceil(300 / 64)
  p.head_dim = head_dim;
  return p;
}

std::string error_of(const AttentionParams& p) {
  try {
    launch_attention_sm80(p, nullptr);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(KernelDispatch, UncompiledHeadDimNamesTheCompiledSet) {
  const std::string what = error_of(valid_sm80(96));
  EXPECT_NE(what.find("attention_sm80: head_dim 96 with V fp16 is not compiled"), std::string::npos)
      << what;
  for (const sm80::Instance& inst : sm80::kInstances)
    EXPECT_NE(what.find(inst.name), std::string::npos) << inst.name << " missing from: " << what;
}

TEST(KernelDispatch, TableCoversBothHeadDimsAndVDtypes) {
  for (int d : {64, 128}) {
    for (DType t : {DType::kFloat16, DType::kBFloat16}) {
      int found = 0;
      for (const sm80::Instance& inst : sm80::kInstances)
        found += inst.head_dim == d && inst.v_dtype == t && inst.launch != nullptr;
      EXPECT_EQ(found, 1) << "d" << d << " dtype " << static_cast<int>(t);
    }
  }
}

TEST(KernelDispatch, InconsistentBlocksRejectedFirst) {
  AttentionParams p = valid_sm80(64);
  p.num_k_blocks = 3;  // 300 keys need 5 blocks of 64
  EXPECT_NE(error_of(p).find("do not match the 128x64 geometry"), std::string::npos) << error_of(p);
}

// The Hopper kernels by name: each head dim's default, names that round-trip, and a kernel this
// build did not compile refused before any device is touched (so on any machine), naming the
// compiled set and the option that compiles experiments.
TEST(KernelDispatch, Sm90KernelsByName) {
  EXPECT_EQ(sm90_default_kernel(64), Sm90Kernel::kWarpgroup);
  EXPECT_EQ(sm90_default_kernel(128), Sm90Kernel::kPingPong);
  const std::vector<Sm90Kernel> compiled = sm90_kernels_compiled();
  auto has = [&](Sm90Kernel k) {
    return std::find(compiled.begin(), compiled.end(), k) != compiled.end();
  };
  EXPECT_TRUE(has(Sm90Kernel::kPingPong));
  EXPECT_TRUE(has(Sm90Kernel::kWarpgroup));
  EXPECT_FALSE(has(Sm90Kernel::kDefault));
  for (Sm90Kernel k : {Sm90Kernel::kDefault, Sm90Kernel::kPingPong, Sm90Kernel::kWarpgroup,
                       Sm90Kernel::kSerial, Sm90Kernel::kGrid}) {
    Sm90Kernel back = Sm90Kernel::kDefault;
    ASSERT_TRUE(parse_sm90_kernel(sm90_kernel_name(k), &back)) << sm90_kernel_name(k);
    EXPECT_EQ(back, k);
  }
  Sm90Kernel k = Sm90Kernel::kGrid;
  EXPECT_FALSE(parse_sm90_kernel("v9", &k));
  EXPECT_FALSE(parse_sm90_kernel("", &k));
  EXPECT_EQ(k, Sm90Kernel::kGrid) << "a failed parse leaves the output alone";

  for (Sm90Kernel exp : {Sm90Kernel::kSerial, Sm90Kernel::kGrid}) {
    if (has(exp)) continue;  // a build with SPARGE_KERNEL_EXPERIMENTS=ON
    alignas(16) static int8_t dummy[64];
    static float fdummy[4];
    AttentionParams p;  // consistent 128 x 128 geometry, never dereferenced
    p.q8 = p.k8 = dummy;
    p.v = dummy;
    p.q_scale = p.k_scale = p.v_scale = fdummy;
    p.o = dummy;
    p.batch = p.heads = p.kv_heads = 1;
    p.seq_q = 200;
    p.seq_k = 300;
    p.num_q_blocks = 2;
    p.num_k_blocks = 3;
    p.head_dim = 64;
    p.sm90_kernel = exp;
    try {
      launch_attention_sm90(p, nullptr);
      ADD_FAILURE() << sm90_kernel_name(exp) << " launched in a build without it";
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(std::string("kernel ") + sm90_kernel_name(exp) + " is not compiled"),
                std::string::npos)
          << what;
      EXPECT_NE(what.find("SPARGE_KERNEL_EXPERIMENTS=ON"), std::string::npos) << what;
      EXPECT_NE(what.find("d64/warpgroup"), std::string::npos) << what;
    }
  }
}

// v8's token order must be a permutation of each 32-token group (a repeated slot would drop a
// token from P·V) and must put the pair a thread holds in chunk c at its A-fragment bytes.
TEST(V8Layout, SlotIsABijectionMatchingTheAFragment) {
  bool seen[32] = {};
  for (int x = 0; x < 32; ++x) {
    const int y = v8_slot(x);
    ASSERT_GE(y, 0);
    ASSERT_LT(y, 32);
    EXPECT_FALSE(seen[y]) << "slot " << y << " taken twice";
    seen[y] = true;
  }
  for (int t = 0; t < 4; ++t) {  // thread t's bytes 4t..4t+3: chunks 0, 1; 16 + 4t..: chunks 2, 3
    EXPECT_EQ(v8_slot(2 * t), 4 * t);
    EXPECT_EQ(v8_slot(8 + 2 * t + 1), 4 * t + 3);
    EXPECT_EQ(v8_slot(16 + 2 * t), 16 + 4 * t);
    EXPECT_EQ(v8_slot(24 + 2 * t + 1), 16 + 4 * t + 3);
  }
}

}  // namespace
}  // namespace sparge::kernels
