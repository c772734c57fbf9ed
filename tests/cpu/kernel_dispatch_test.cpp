// The attention dispatchers reject a parameter set no compiled instance can run before touching
// the GPU, naming the compiled set (kernels/instances/, scripts/gen_kernel_instances.py).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/attention_api.h"
#include "kernels/attention_sm90.cuh"
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

// SPARGE_SM90_VARIANT picks the Hopper variant (what `sparge bench` records); unset means the
// default, every compiled variant is accepted, anything else is refused with the compiled list.
TEST(KernelDispatch, Sm90VariantFromEnvironment) {
  struct Restore {
    ~Restore() { unsetenv("SPARGE_SM90_VARIANT"); }
  } restore;
  unsetenv("SPARGE_SM90_VARIANT");
  EXPECT_EQ(attention_sm90_variant(), 0);  // each head dim runs its default
  EXPECT_EQ(sm90::default_variant(64), 12);
  EXPECT_EQ(sm90::default_variant(128), 9);
  for (int v : sm90::kVariants) {
    setenv("SPARGE_SM90_VARIANT", std::to_string(v).c_str(), 1);
    EXPECT_EQ(attention_sm90_variant(), v);
  }
  setenv("SPARGE_SM90_VARIANT", "7", 1);  // removed after run 6: not compiled any more
  try {
    attention_sm90_variant();
    ADD_FAILURE() << "variant 7 accepted";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("SPARGE_SM90_VARIANT=7"), std::string::npos) << what;
    for (int v : sm90::kVariants)
      EXPECT_NE(what.find(std::to_string(v)), std::string::npos) << what;
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
