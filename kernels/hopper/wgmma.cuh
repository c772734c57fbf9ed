// wgmma instruction wrappers (sm_90a), one per shape the sm90 attention kernels issue.
//
// Accumulator layout (per warp w of the warpgroup, lane = 4 * g + t): d[4i + e] holds row
// 16 w + g + 8 * (e / 2), column 8 i + 2 t + (e % 2).
#pragma once

#include <cstdint>

// Inline asm needs its operands spelled out; these macros spell the accumulator fragment once:
// the asm placeholders of its N registers ("%0, ..., %N-1") and its N "+r"/"+f" operands.
#define SPARGE_WGMMA_ACC32                                                                     \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define SPARGE_WGMMA_ACC64                                                                  \
  SPARGE_WGMMA_ACC32                                                                        \
  ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, " \
  "%49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define SPARGE_WGMMA_D8(C, i)                                                         \
  C(d[i]), C(d[(i) + 1]), C(d[(i) + 2]), C(d[(i) + 3]), C(d[(i) + 4]), C(d[(i) + 5]), \
      C(d[(i) + 6]), C(d[(i) + 7])
#define SPARGE_WGMMA_D4(C, i) C(d[i]), C(d[(i) + 1]), C(d[(i) + 2]), C(d[(i) + 3])
#define SPARGE_WGMMA_D32(C) \
  SPARGE_WGMMA_D8(C, 0), SPARGE_WGMMA_D8(C, 8), SPARGE_WGMMA_D8(C, 16), SPARGE_WGMMA_D8(C, 24)
#define SPARGE_WGMMA_D64(C)                                                                    \
  SPARGE_WGMMA_D32(C), SPARGE_WGMMA_D8(C, 32), SPARGE_WGMMA_D8(C, 40), SPARGE_WGMMA_D8(C, 48), \
      SPARGE_WGMMA_D8(C, 56)
#define SPARGE_WGMMA_S32(x) "+r"(x)
#define SPARGE_WGMMA_F32(x) "+f"(x)

namespace sparge::kernels::hopper {

// D[64x128] (+)= A[64x32] * B[128x32]^T, s8 x s8 -> s32; A and B from shared memory (K-major).
__device__ __forceinline__ void wgmma_m64n128k32_s32_s8_s8_ss(int32_t (&d)[64], uint64_t desc_a,
                                                              uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {" SPARGE_WGMMA_ACC64
      "}, %64, %65, p;\n}\n"
      : SPARGE_WGMMA_D64(SPARGE_WGMMA_S32)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// D[64 x (D+8)] (+)= A[64x32] * B[(D+8)x32]^T, e4m3 x e4m3 -> f32, for D = 128 / 64: P·V with
// 8 more B rows than V has channels (all 1.0), so the last 8 accumulator columns are P's row sums
// (issue_pv_block). A from registers (4 x b32 per thread, the mma.m16n8k32 8-bit A layout per
// warp), B from shared memory (K-major).
__device__ __forceinline__ void wgmma_m64n136k32_f32_e4m3_rs(float (&d)[68], const uint32_t (&a)[4],
                                                             uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %73, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n136k32.f32.e4m3.e4m3 {" SPARGE_WGMMA_ACC64
      ", %64, %65, %66, %67}, {%68, %69, %70, %71}, %72, p, 1, 1;\n}\n"
      : SPARGE_WGMMA_D64(SPARGE_WGMMA_F32), SPARGE_WGMMA_D4(SPARGE_WGMMA_F32, 64)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}
__device__ __forceinline__ void wgmma_m64n72k32_f32_e4m3_rs(float (&d)[36], const uint32_t (&a)[4],
                                                            uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k32.f32.e4m3.e4m3 {" SPARGE_WGMMA_ACC32
      ", %32, %33, %34, %35}, {%36, %37, %38, %39}, %40, p, 1, 1;\n}\n"
      : SPARGE_WGMMA_D32(SPARGE_WGMMA_F32), SPARGE_WGMMA_D4(SPARGE_WGMMA_F32, 32)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

}  // namespace sparge::kernels::hopper
