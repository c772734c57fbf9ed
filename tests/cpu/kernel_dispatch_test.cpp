// The attention dispatchers reject a parameter set no compiled instance can run before touching
// the GPU, naming the compiled set (kernels/instances/, scripts/gen_kernel_instances.py).
#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/attention_api.h"
#include "kernels/instances/attention_sm80_instances.h"

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

}  // namespace
}  // namespace sparge::kernels
