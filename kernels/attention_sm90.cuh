// Hopper (sm_90a) block-sparse quantised attention, "i8f8": INT8 Q·Kᵀ with wgmma s8×s8→s32,
// FP8 e4m3 P·V with wgmma e4m3×e4m3→f32, TMA loads into an mbarrier ring, warp-specialised
// (one producer warpgroup, two consumer warpgroups of 64 query rows each).
//
// Geometry "sm90": block_q = 128 (two consumer warpgroups × 64 rows), block_k = 128,
// stage-2 group = 16 rows (one warp's rows of a wgmma m64 tile), D ∈ {64, 128}.
// Layouts: kernels/params.h (q8/k8 [B, H(kv), n*128, D] int8, v8 [B, Hkv, D, nk*128] e4m3).
#pragma once

#include <cstdint>

#include "kernels/params.h"

// True only in the device pass that targets sm_90a (wgmma/setmaxnreg exist there); the sm_80
// pass of the same file compiles the kernel to an empty stub.
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SPARGE_SM90A_DEVICE 1
#else
#define SPARGE_SM90A_DEVICE 0
#endif

namespace sparge::kernels::sm90 {

inline constexpr int kBlockQ = 128;
inline constexpr int kBlockK = 128;
inline constexpr int kWarpRows = 16;
inline constexpr int kConsumerWarpgroups = 2;
inline constexpr int kRowsPerWarpgroup = kBlockQ / kConsumerWarpgroups;  // 64 = wgmma M
// Warpgroup 0: TMA producer (setmaxnreg down to 24), warpgroups 1-2: consumers (up to 240).
// The register file is split per SM sub-partition, so 9 warps (288 threads, no setmaxnreg) would
// still cap every warp at 168 registers: the producer must be a warpgroup that gives its
// registers away (kernels/NOTES.md, resource report).
inline constexpr int kThreads = 128 * (1 + kConsumerWarpgroups);
inline constexpr int kGroupsPerBlock = kBlockQ / kWarpRows;  // stage2_kept entries per q block
// Rows of e4m3 1.0 after each stage's V8ᵀ tile (the wgmma N granularity): P·V then yields P's row
// sums (attention_sm90_device.cuh, issue_pv_block).
inline constexpr int kOnesRows = 8;

// The kernels (Sm90Kernel in kernels/params.h; kernels/NOTES.md "sm90 attention" has their
// measurements under their run numbers: pingpong = 9, warpgroup = 12, serial = 4, grid = 6):
//   pingpong (default at D = 128): warp-specialised, persistent. One CTA per SM claims 128-row
//      tiles from a counter; a producer warpgroup issues the TMA loads, two consumer warpgroups
//      of 64 rows take turns issuing their GEMMs (FA3's ping-pong: QKᵀ(j+1) and P·V(j)
//      together), so one's GEMMs run while the other is in its softmax.
//   warpgroup (default at D = 64): one warpgroup per CTA (attention_sm90_wg.cuh). A CTA owns 64
//      rows, issues its own loads and runs each block serially; four CTAs share an SM at D = 64,
//      so each SM sub-partition has four math warps instead of two. D = 64 has half the MMA work
//      per softmax element, and the extra warps hide more of the softmax's dependency waits than
//      the ping-pong gains there (+10-13 % over pingpong at D = 64 with three CTAs, run 21;
//      four: +3-5 % more, run 22; -6 % at D = 128, H100).
//   serial (experiment): one warpgroup's QKᵀ, wait, softmax, P·V, wait, in a 128-row CTA; under
//      stage 2 it skips the P·V wgmma when all 4 warps of a warpgroup skip.
//   grid (experiment): pingpong on a one-tile-per-CTA grid.
// grid, pingpong and warpgroup run the same per-row code in the same order: their outputs are
// bit-identical (PersistentGridIsExactForAnyCtaCount); serial sends another share of exp2 to the
// polynomial. Experiments are slower everywhere measured and compiled only with
// SPARGE_KERNEL_EXPERIMENTS=ON (kernels/CMakeLists.txt).
constexpr Sm90Kernel default_kernel(int head_dim) {
  return head_dim == 64 ? Sm90Kernel::kWarpgroup : Sm90Kernel::kPingPong;
}
constexpr int stages_of(Sm90Kernel k) { return k == Sm90Kernel::kSerial ? 2 : 4; }
constexpr bool is_persistent(Sm90Kernel k) { return k == Sm90Kernel::kPingPong; }
constexpr bool is_one_warpgroup(Sm90Kernel k) { return k == Sm90Kernel::kWarpgroup; }
// Share of exp2 on the FMA pipe (block_exp_int's kPolyEvery; 0 = none): each poly element trades
// one MUFU for ~8 issue slots. D = 128: every 16th element, the best share measured (NOTES runs
// 10-12). D = 64: none, the best for warpgroup's four math warps per SM sub-partition (run 22);
// pingpong and grid use the same share per head dim so that all three stay bit-identical. serial
// keeps the 1/8 it was measured with.
inline constexpr int kPolyEverySerial = 8;
constexpr int poly_every(int head_dim) { return head_dim == 64 ? 0 : 16; }
// Named barrier ids: 0 = __syncthreads, 1 + cw = consumer warpgroup cw's stage-2 vote (128
// threads), kSchedBarrier + cw = pingpong's (and grid's) turn of consumer cw (256 threads).
inline constexpr int kSchedBarrier = 3;

// Shared-memory plan of one CTA (byte offsets from a 1024-aligned base; every tile starts on a
// 1024-byte boundary because the 128-byte TMA/wgmma swizzle repeats every 8 rows × 128 B).
template <int kD, int kStages>
struct SmemPlan {
  static constexpr int kQBytes = kBlockQ * kD;      // int8 [128][D]
  static constexpr int kKBytes = kBlockK * kD;      // int8 [128][D]
  static constexpr int kVTileBytes = kD * kBlockK;  // e4m3 [D][128] (tokens contiguous), by TMA
  static constexpr int kVBytes = (kD + kOnesRows) * kBlockK;  // a stage: the tile, the ones rows
  static constexpr int kQSlots = 2;  // Q of the tile in flight and of the next one
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kQSlots * kQBytes;
  static constexpr int kV = kK + kStages * kKBytes;
  static constexpr int kBars = kV + kStages * kVBytes;
  // q_full[kQSlots], q_empty[kQSlots], k_full[S], v_full[S], empty[S]
  static constexpr int kNumBars = 2 * kQSlots + 3 * kStages;
  // Per stage, written by the producer before it arms k_full: the K block index j (int32) and
  // k_scale[j] (fp32), so the consumers read them from shared memory after their k_full wait
  // instead of two dependent global loads in the GEMM-issue path. Then the tile id of each Q
  // slot (int32, -1 = no more tiles).
  static constexpr int kInfo = kBars + kNumBars * 8;
  static constexpr int kBytes = kInfo + kStages * 8 + kQSlots * 4;
  static constexpr int kAlloc = kBytes + 1024;  // slack to align the dynamic base to 1024
  static_assert(kQBytes % 1024 == 0 && kKBytes % 1024 == 0 && kVBytes % 1024 == 0);
};

}  // namespace sparge::kernels::sm90
