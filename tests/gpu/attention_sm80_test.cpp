// GPU tests of the portable sm_80+ sparse attention kernel ("sm80" geometry, i8f16 numerics)
// against the CPU reference: ref::sparse_attention with PvNumerics::kHalf (same quantisation,
// mask and stage-2 rule) and fp64 dense attention. Inputs are quantised on the host with
// ref::q_block_stats / k_block_stats and padded to the layouts of kernels/params.h. Every test
// draws fresh random inputs and prints its seed on failure (SCOPED_TRACE).
//
// Also: AttentionSm80Bench.DISABLED_Throughput, run explicitly
// (--gtest_also_run_disabled_tests --gtest_filter='AttentionSm80Bench.*'), times the kernel at
// the shapes of kernels/NOTES.md.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/api.h"
#include "kernels/attention_api.h"
#include "kernels/params.h"
#include "reference/reference.hpp"
#include "support/gpu.hpp"

namespace {

using sparge::kernels::AttentionParams;
using sparge::kernels::DType;
namespace ref = sparge::ref;

constexpr int kBlockQ = 128, kBlockK = 64, kGroups = 8;  // geometry "sm80": 8 groups of 16 rows
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr double kLog2e = 1.4426950408889634;

bool have_gpu() { return sparge::kernels::device_count() > 0; }

using sparge::test::cuda_check;

// Owning device allocation.
class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(size_t bytes) : bytes_(bytes) {
    cuda_check(cudaMalloc(&ptr_, bytes), "cudaMalloc");
  }
  DevBuf(DevBuf&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DevBuf() {
    if (ptr_) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

DevBuf upload(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  DevBuf d(std::max<size_t>(c.nbytes(), 16));
  cuda_check(cudaMemcpy(d.get(), c.data_ptr(), c.nbytes(), cudaMemcpyHostToDevice), "upload");
  return d;
}

uint64_t fresh_seed() { return (uint64_t{std::random_device{}()} << 32) | std::random_device{}(); }

// ---- problem description and inputs ------------------------------------------------------------

struct Case {
  int B = 1, H = 2, Hkv = 2, Nq = 256, Nk = 256, D = 128;
  bool causal = false;
  at::ScalarType dtype = at::kHalf;
  bool nhd = false;         // output strides: NHD ([B, N, H, D] memory) instead of HND
  bool structured = false;  // positional (local-attention) structure instead of N(0, 1)
  double density = 0.5;     // random block mask density among causally valid blocks
  float lambda = kNegInf;   // stage-2 threshold, natural-log units
  std::string str() const {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "B%d H%d Hkv%d Nq%d Nk%d D%d causal%d %s %s %s density%.2f lambda%g", B, H, Hkv,
                  Nq, Nk, D, causal, dtype == at::kHalf ? "fp16" : "bf16", nhd ? "NHD" : "HND",
                  structured ? "structured" : "randn", density, lambda);
    return buf;
  }
};

// q [B, H, N, D] etc. in the case's dtype. "Structured": sinusoidal positional features of
// amplitude a on both q and k make logits peak near the diagonal (q·k ≈ a² Σ cos(w (i − j))),
// plus N(0, 1) noise; the peak logit is ≈ 15 nats, so far K blocks fall far below the running max
// and stage 2 has work to do.
at::Tensor make_input(const Case& c, int heads, int n, at::Generator& gen, bool is_v) {
  at::Tensor x = at::randn({c.B, heads, n, c.D}, gen, at::kFloat);
  if (c.structured && !is_v) {
    const double amp = std::sqrt(30.0 / std::sqrt(static_cast<double>(c.D)));
    at::Tensor pos = at::arange(n, at::kFloat).unsqueeze(1);      // [n, 1]
    at::Tensor j = at::arange(c.D / 2, at::kFloat).unsqueeze(0);  // [1, D/2]
    at::Tensor w = 2.0 * M_PI / (64.0 * at::pow(64.0, j / static_cast<double>(c.D / 2)));
    at::Tensor ang = pos * w;  // [n, D/2]
    at::Tensor emb = at::stack({at::cos(ang), at::sin(ang)}, -1).reshape({n, c.D});
    x = x + amp * emb;
  }
  return x.to(c.dtype);
}

// Random block mask [B, H, nq, nk] of the given density among causally valid blocks; a row left
// empty keeps a random valid block (every LUT row has >= 1 entry).
at::Tensor random_mask(const Case& c, at::Generator& gen) {
  const int nq = (c.Nq + kBlockQ - 1) / kBlockQ, nk = (c.Nk + kBlockK - 1) / kBlockK;
  at::Tensor valid = ref::causal_block_mask(c.Nq, c.Nk, ref::portable_geometry(), c.causal);
  at::Tensor mask =
      at::rand({c.B, c.H, nq, nk}, gen, at::kFloat).lt(c.density).logical_and(valid).contiguous();
  at::Tensor pick = at::rand({c.B, c.H, nq}, gen, at::kFloat);
  auto m = mask.accessor<bool, 4>();
  auto v = valid.accessor<bool, 2>();
  auto pk = pick.accessor<float, 3>();
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h)
      for (int i = 0; i < nq; ++i) {
        bool any = false;
        for (int j = 0; j < nk; ++j) any |= m[b][h][i][j];
        if (any) continue;
        std::vector<int> cand;
        for (int j = 0; j < nk; ++j)
          if (v[i][j]) cand.push_back(j);
        m[b][h][i][cand[static_cast<size_t>(pk[b][h][i] * cand.size()) % cand.size()]] = true;
      }
  return mask;
}

// Host inputs, their quantisation, and the kernel's device-side copies.
struct Problem {
  Case c;
  int nq = 0, nk = 0;
  at::Tensor q, k, v, mask;  // CPU, [B,H,Nq,D], [B,Hkv,Nk,D] x2, bool [B,H,nq,nk]
  at::Tensor lut_len;        // int32 [B, H, nq]
  DevBuf q8, k8, vh, q_scale, k_scale, lut, lut_len_d, lambda_log2;
};

Problem make_problem(const Case& c, uint64_t seed, const at::Tensor& mask_in = {}) {
  Problem p;
  p.c = c;
  p.nq = (c.Nq + kBlockQ - 1) / kBlockQ;
  p.nk = (c.Nk + kBlockK - 1) / kBlockK;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  p.q = make_input(c, c.H, c.Nq, gen, false);
  p.k = make_input(c, c.Hkv, c.Nk, gen, false);
  p.v = make_input(c, c.Hkv, c.Nk, gen, true);
  p.mask = mask_in.defined() ? mask_in : random_mask(c, gen);

  const ref::BlockStats qs = ref::q_block_stats(p.q, kBlockQ);
  const ref::BlockStats ks = ref::k_block_stats(p.k, kBlockK);
  // Zero padding to whole blocks (params.h layouts).
  at::Tensor q8 = at::zeros({c.B, c.H, p.nq * kBlockQ, c.D}, at::kChar);
  q8.narrow(2, 0, c.Nq).copy_(qs.values);
  at::Tensor k8 = at::zeros({c.B, c.Hkv, p.nk * kBlockK, c.D}, at::kChar);
  k8.narrow(2, 0, c.Nk).copy_(ks.values);
  at::Tensor vh = at::zeros({c.B, c.Hkv, p.nk * kBlockK, c.D}, c.dtype);
  vh.narrow(2, 0, c.Nk).copy_(p.v);
  // LUT: kept blocks ascending, zero after lut_len.
  at::Tensor lut = at::zeros({c.B, c.H, p.nq, p.nk}, at::kInt);
  p.lut_len = at::zeros({c.B, c.H, p.nq}, at::kInt);
  auto m = p.mask.accessor<bool, 4>();
  auto l = lut.accessor<int32_t, 4>();
  auto ll = p.lut_len.accessor<int32_t, 3>();
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h)
      for (int i = 0; i < p.nq; ++i) {
        int n = 0;
        for (int j = 0; j < p.nk; ++j)
          if (m[b][h][i][j]) l[b][h][i][n++] = j;
        ll[b][h][i] = n;
      }
  // log2 units as the reference converts them: an fp32 product with log2(e) rounded to fp32.
  std::vector<float> lam(c.H, c.lambda * 1.44269504f);
  p.q8 = upload(q8);
  p.k8 = upload(k8);
  p.vh = upload(vh);
  p.q_scale = upload(qs.scale.to(at::kFloat));
  p.k_scale = upload(ks.scale.to(at::kFloat));
  p.lut = upload(lut);
  p.lut_len_d = upload(p.lut_len);
  p.lambda_log2 = upload(at::tensor(lam));
  return p;
}

struct RunOptions {
  DType o_dtype = DType::kFloat32;
  bool use_lut = true;     // false: dense mode (lut = nullptr)
  bool use_lambda = true;  // false: lambda_log2 = nullptr (stage 2 off)
};

struct KernelResult {
  at::Tensor o;            // [B, H, Nq, D] fp32
  at::Tensor stage2_kept;  // int32 [B, H, nq, 8]
  at::Tensor raw;          // the output buffer as written (bytes), for bitwise comparisons
};

constexpr int64_t kGuardElems = 4096;  // poisoned elements after the output: must stay untouched

KernelResult run_kernel(const Problem& p, const RunOptions& ro) {
  const Case& c = p.c;
  const at::ScalarType odt = ro.o_dtype == DType::kFloat32   ? at::kFloat
                             : ro.o_dtype == DType::kFloat16 ? at::kHalf
                                                             : at::kBFloat16;
  const int64_t elems = int64_t{c.B} * c.H * c.Nq * c.D;
  const size_t esize = at::elementSize(odt);
  DevBuf o((elems + kGuardElems) * esize);
  // 0xFF bytes are NaN in fp16, bf16 and fp32: any element the kernel does not write stays NaN.
  cuda_check(cudaMemset(o.get(), 0xFF, o.bytes()), "memset");
  DevBuf pv(int64_t{c.B} * c.H * p.nq * kGroups * sizeof(int32_t));
  cuda_check(cudaMemset(pv.get(), 0xFF, pv.bytes()), "memset");

  AttentionParams a;
  a.q8 = static_cast<const int8_t*>(p.q8.get());
  a.k8 = static_cast<const int8_t*>(p.k8.get());
  a.v = p.vh.get();
  a.q_scale = static_cast<const float*>(p.q_scale.get());
  a.k_scale = static_cast<const float*>(p.k_scale.get());
  a.lut = ro.use_lut ? static_cast<const int32_t*>(p.lut.get()) : nullptr;
  a.lut_len = ro.use_lut ? static_cast<const int32_t*>(p.lut_len_d.get()) : nullptr;
  a.lambda_log2 = ro.use_lambda ? static_cast<const float*>(p.lambda_log2.get()) : nullptr;
  a.o = o.get();
  if (c.nhd) {  // memory [B, Nq, H, D]
    a.o_stride_b = int64_t{c.Nq} * c.H * c.D, a.o_stride_h = c.D, a.o_stride_n = int64_t{c.H} * c.D;
  } else {  // memory [B, H, Nq, D]
    a.o_stride_b = int64_t{c.H} * c.Nq * c.D, a.o_stride_h = int64_t{c.Nq} * c.D,
    a.o_stride_n = c.D;
  }
  a.o_dtype = ro.o_dtype;
  a.v_dtype = c.dtype == at::kHalf ? DType::kFloat16 : DType::kBFloat16;
  a.stage2_kept = static_cast<int32_t*>(pv.get());
  a.batch = c.B, a.heads = c.H, a.kv_heads = c.Hkv, a.seq_q = c.Nq, a.seq_k = c.Nk;
  a.head_dim = c.D, a.num_q_blocks = p.nq, a.num_k_blocks = p.nk;
  a.sm_scale_log2 = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.D)) * kLog2e);
  a.causal = c.causal;
  a.causal_offset = c.causal ? c.Nk - c.Nq : 0;
  sparge::kernels::launch_attention_sm80(a, nullptr);
  cuda_check(cudaGetLastError(), "launch");
  cuda_check(cudaDeviceSynchronize(), "kernel");

  KernelResult r;
  r.raw = at::empty({static_cast<int64_t>(o.bytes())}, at::kByte);
  cuda_check(cudaMemcpy(r.raw.data_ptr(), o.get(), o.bytes(), cudaMemcpyDeviceToHost), "download");
  at::Tensor typed = r.raw.view(odt);
  at::Tensor main = typed.narrow(0, 0, elems);
  r.o = c.nhd ? main.view({c.B, c.Nq, c.H, c.D}).permute({0, 2, 1, 3}).to(at::kFloat).contiguous()
              : main.view({c.B, c.H, c.Nq, c.D}).to(at::kFloat);
  // The guard after the output must be untouched (rows >= Nq are never written).
  at::Tensor guard = r.raw.narrow(0, elems * esize, kGuardElems * esize);
  if (!guard.eq(0xFF).all().item<bool>()) throw std::runtime_error("kernel wrote past the output");
  r.stage2_kept = at::empty({c.B, c.H, p.nq, kGroups}, at::kInt);
  cuda_check(cudaMemcpy(r.stage2_kept.data_ptr(), pv.get(), pv.bytes(), cudaMemcpyDeviceToHost),
             "download");
  return r;
}

// P·V products skipped by the kernel, in block units (a group is 1/8 of a block product). Groups
// made only of padding rows (>= Nq) count as skipped for a finite lambda, as in the reference.
double kernel_pv_skipped(const Problem& p, const at::Tensor& stage2_kept) {
  auto e = stage2_kept.accessor<int32_t, 4>();
  auto ll = p.lut_len.accessor<int32_t, 3>();
  double skipped = 0;
  for (int b = 0; b < p.c.B; ++b)
    for (int h = 0; h < p.c.H; ++h)
      for (int i = 0; i < p.nq; ++i)
        for (int g = 0; g < kGroups; ++g)
          skipped += (ll[b][h][i] - e[b][h][i][g]) / static_cast<double>(kGroups);
  return skipped;
}

double rel_l1(const at::Tensor& o, const at::Tensor& r) {
  return ref::compare(o.to(at::kDouble), r.to(at::kDouble)).rel_l1;
}

ref::AttentionOptions options_of(const Case& c) {
  ref::AttentionOptions o;
  o.causal = c.causal;
  return o;
}

// The cases: every feature at least once, small enough for the CPU reference.
std::vector<Case> coverage_cases() {
  std::vector<Case> cs;
  auto add = [&](auto f) {
    Case c;
    f(c);
    cs.push_back(c);
  };
  add([](Case& c) {});  // D128 fp16 HND
  add([](Case& c) {
    c.D = 64;
    c.Nq = c.Nk = 300;
  });  // D64, partial blocks
  add([](Case& c) {
    c.Nq = 200;
    c.Nk = 333;
    c.dtype = at::kBFloat16;
  });  // Lq != Lk, bf16
  add([](Case& c) {
    c.causal = true;
    c.Nq = c.Nk = 390;
    c.nhd = true;
  });  // causal square, NHD
  add([](Case& c) {
    c.causal = true;
    c.Nq = 150;
    c.Nk = 420;
    c.D = 64;
  });  // causal Nq < Nk
  add([](Case& c) {
    c.B = 2;
    c.H = 4;
    c.Hkv = 1;
    c.Nq = 260;
    c.Nk = 190;
  });                // GQA (MQA), B 2
  add([](Case& c) {  // stage 2, structured
    c.structured = true;
    c.Nq = c.Nk = 700;
    c.density = 0.7;
    c.lambda = -6.f;
    c.H = 4;
    c.Hkv = 2;
  });
  add([](Case& c) {  // stage 2, structured, causal, bf16, D64, NHD
    c.structured = true;
    c.causal = true;
    c.Nq = c.Nk = 640;
    c.density = 1.0;
    c.lambda = -4.f;
    c.D = 64;
    c.dtype = at::kBFloat16;
    c.nhd = true;
  });
  add([](Case& c) {  // stage 2 on N(0,1) with a mild lambda, GQA, Nq > Nk
    c.H = 4;
    c.Hkv = 2;
    c.Nq = 333;
    c.Nk = 130;
    c.density = 1.0;
    c.lambda = -1.f;
    c.B = 2;
  });
  return cs;
}

// ---- tests -------------------------------------------------------------------------------------

TEST(AttentionSm80, RejectsBadParams) {
  // Host-side checks run before any CUDA call: no device needed.
  AttentionParams a;
  a.head_dim = 96;
  EXPECT_THROW(sparge::kernels::launch_attention_sm80(a, nullptr), std::invalid_argument);
  a.head_dim = 64, a.batch = 1, a.heads = 3, a.kv_heads = 2, a.seq_q = a.seq_k = 10;
  EXPECT_THROW(sparge::kernels::launch_attention_sm80(a, nullptr), std::invalid_argument);
  a.heads = 2, a.num_q_blocks = 1, a.num_k_blocks = 2;  // 10 keys are one 64-key block
  EXPECT_THROW(sparge::kernels::launch_attention_sm80(a, nullptr), std::invalid_argument);
}

// Output vs the CPU emulation of the same numerics on the same mask and lambda, plus the
// stage-2 skip counts; fp16/bf16 outputs equal the fp32 output rounded (same registers).
TEST(AttentionSm80, MatchesReferenceEmulation) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : coverage_cases()) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("case " + c.str() + " seed " + std::to_string(seed));
    const Problem p = make_problem(c, seed);
    const KernelResult k = run_kernel(p, {});
    ASSERT_FALSE(k.o.isnan().any().item<bool>()) << "unwritten or NaN output elements";

    const ref::SparseResult r =
        ref::sparse_attention(p.q, p.k, p.v, p.mask, std::vector<float>(c.H, c.lambda),
                              ref::portable_geometry(), options_of(c));
    const double err = rel_l1(k.o, r.o);
    // Same int32 logits and fp32 dequantisation; what differs: exp2 (ex2.approx, <= 2 ulp),
    // hence P rounded to fp16/bf16 at values a few fp32 ulp apart (a rare 1-ulp flip of one P),
    // and the fp32 accumulation order of the MMAs. Expected ~1e-6..1e-5; 1e-3 leaves margin
    // while a wrong fragment, mask or rescale gives > 1e-2.
    EXPECT_LT(err, 1e-3);
    std::printf("[sm80] %-80s rel-L1 vs emulation %.2e\n", c.str().c_str(), err);

    const double skipped = kernel_pv_skipped(p, k.stage2_kept);
    const double total = p.lut_len.sum().item<int64_t>() * 1.0;
    // Identical fp32 logits make the decisions identical except at exact ties of
    // m_local - m_new against lambda (float vs reference arithmetic): allow 0.5% of them.
    EXPECT_NEAR(skipped, r.pv_skipped_blocks, std::max(1.0 / kGroups, 0.005 * total))
        << "kernel skipped " << skipped << " of " << total << " block P·V products";
    if (std::isinf(c.lambda)) {
      EXPECT_EQ(skipped, 0.0);
    }
    std::printf("[sm80]   P·V skipped: kernel %.3f, reference %.3f of %.0f blocks\n", skipped,
                r.pv_skipped_blocks, total);

    // The input-dtype output is the fp32 result rounded once (bitwise).
    const DType half = c.dtype == at::kHalf ? DType::kFloat16 : DType::kBFloat16;
    const KernelResult kh = run_kernel(p, {half, true, true});
    EXPECT_TRUE(at::equal(kh.o, k.o.to(c.dtype).to(at::kFloat)))
        << "fp16/bf16 output differs from the rounded fp32 output";
  }
}

// Dense mask, stage 2 off: the quantised kernel vs exact fp64 attention. The error is the
// quantisation floor (INT8 Q/K per block, fp16/bf16 P): it must match the CPU emulation's own
// error vs fp64 and stay under 0.02 on N(0, 1) inputs.
TEST(AttentionSm80, DenseMatchesFp64) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (int variant = 0; variant < 4; ++variant) {
    Case c;
    c.density = 1.0;
    c.D = variant % 2 ? 64 : 128;
    c.causal = variant >= 2;
    c.Nq = c.causal ? 500 : 384;
    c.Nk = c.causal ? 500 : 700;
    c.dtype = variant == 3 ? at::kBFloat16 : at::kHalf;
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("case " + c.str() + " seed " + std::to_string(seed));
    const Problem p = make_problem(c, seed);
    const KernelResult k = run_kernel(p, {DType::kFloat32, false, false});
    const at::Tensor exact = ref::dense_attention(p.q, p.k, p.v, options_of(c), at::kDouble);
    const ref::SparseResult emu =
        ref::sparse_attention(p.q, p.k, p.v, p.mask, std::vector<float>(c.H, kNegInf),
                              ref::portable_geometry(), options_of(c));
    const double err = rel_l1(k.o, exact), emu_err = rel_l1(emu.o, exact);
    std::printf("[sm80] %-80s rel-L1 vs fp64 %.4f (emulation %.4f)\n", c.str().c_str(), err,
                emu_err);
    // INT8 per-block Q/K on N(0,1): ~1e-2 (the quantisation floor, docs/design.md).
    EXPECT_LT(err, 0.02);
    // Kernel and emulation differ by ~1e-5 (see MatchesReferenceEmulation), far below the
    // quantisation error, so their distances to fp64 agree to a few percent.
    EXPECT_NEAR(err, emu_err, 0.05 * emu_err + 1e-4);
  }
}

// Dense mode (lut = nullptr) visits every causally valid block in order: bitwise the same as a
// full LUT. lambda = -inf is bitwise the same as stage 2 off and executes every P·V.
TEST(AttentionSm80, DenseModeAndLambdaOffAreExact) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (bool causal : {false, true}) {
    Case c;
    c.causal = causal;
    c.Nq = causal ? 330 : 260;
    c.Nk = causal ? 400 : 330;
    c.D = causal ? 64 : 128;
    c.density = 1.0;
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("case " + c.str() + " seed " + std::to_string(seed));
    const Problem p = make_problem(c, seed);  // density 1: the mask is every valid block
    const KernelResult full = run_kernel(p, {DType::kFloat32, true, true});
    const KernelResult dense = run_kernel(p, {DType::kFloat32, false, true});
    const KernelResult off = run_kernel(p, {DType::kFloat32, true, false});
    EXPECT_TRUE(at::equal(full.raw, dense.raw)) << "dense mode != full LUT";
    EXPECT_TRUE(at::equal(full.raw, off.raw)) << "lambda = -inf != stage 2 off";
    EXPECT_EQ(kernel_pv_skipped(p, full.stage2_kept), 0.0);
    EXPECT_TRUE(at::equal(full.stage2_kept, dense.stage2_kept));
  }
}

// Stage 2 with a finite lambda on structured inputs: it skips something, the result stays close
// to stage-1-only (the skipped blocks carry < 2^(lambda·log2e) of each row's weight), and
// lambda -> 0- skips at least as much as a more negative lambda.
TEST(AttentionSm80, Stage2SkipsAndStaysClose) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  Case c;
  c.structured = true;
  c.Nq = c.Nk = 1024;
  c.density = 1.0;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("case " + c.str() + " seed " + std::to_string(seed));
  c.lambda = -8.f;
  const Problem p8 = make_problem(c, seed);
  c.lambda = -3.f;
  const Problem p3 = make_problem(c, seed);  // same seed: same inputs and mask
  const KernelResult base = run_kernel(p8, {DType::kFloat32, true, false});
  const KernelResult k8 = run_kernel(p8, {});
  const KernelResult k3 = run_kernel(p3, {});
  const double s8 = kernel_pv_skipped(p8, k8.stage2_kept);
  const double s3 = kernel_pv_skipped(p3, k3.stage2_kept);
  std::printf("[sm80] structured N=1024: skipped %.2f (lambda -8) %.2f (lambda -3) of %lld\n", s8,
              s3, static_cast<long long>(p8.lut_len.sum().item<int64_t>()));
  EXPECT_GT(s8, 0.0);
  EXPECT_GE(s3, s8);
  // Each skipped block holds probabilities <= e^lambda relative to the row max, 64 keys each;
  // the bound on the relative change is loose, the observed change is far smaller.
  EXPECT_LT(rel_l1(k8.o, base.o), 1e-2);
}

// A small shape for compute-sanitizer (memcheck, racecheck): causal, partial blocks, both head
// dims, stage 2 on.
TEST(AttentionSm80, SmallForSanitizer) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (int D : {64, 128}) {
    Case c;
    c.D = D;
    c.causal = true;
    c.Nq = 130;
    c.Nk = 200;
    c.H = 2;
    c.Hkv = 1;
    c.density = 0.8;
    c.lambda = -2.f;
    c.structured = true;
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("case " + c.str() + " seed " + std::to_string(seed));
    const Problem p = make_problem(c, seed);
    const KernelResult k = run_kernel(p, {DType::kFloat16, true, true});
    EXPECT_FALSE(k.o.isnan().any().item<bool>());
    const KernelResult d = run_kernel(p, {DType::kBFloat16, false, false});
    EXPECT_FALSE(d.o.isnan().any().item<bool>());
  }
}

// ---- throughput (disabled by default) ----------------------------------------------------------

// Fast host PRNG for filling hundreds of MB (values only need to be non-degenerate).
struct XorShift {
  uint64_t s;
  uint64_t next() {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return s;
  }
};

TEST(AttentionSm80Bench, DISABLED_Throughput) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  struct Shape {
    int B, H, N, D;
  };
  const Shape shapes[] = {{1, 32, 8192, 128}, {1, 32, 32768, 64}, {1, 32, 32768, 128}};
  const double densities[] = {1.0, 0.5, 0.25};
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, 0), "props");
  std::printf("[bench] device %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::printf("[bench] %-18s %7s %10s %10s %9s %9s\n", "B,H,N,D", "density", "median_ms",
              "spread_ms", "eff_TOPS", "act_TOPS");
  XorShift rng{fresh_seed() | 1};
  for (const Shape& s : shapes) {
    const int nq = s.N / kBlockQ, nk = s.N / kBlockK;
    const int64_t qn = int64_t{s.B} * s.H * s.N * s.D;
    std::vector<int8_t> h8(qn);
    for (int64_t i = 0; i < qn; i += 8) {
      uint64_t r = rng.next();
      for (int j = 0; j < 8; ++j)
        h8[i + j] = static_cast<int8_t>(int((r >> (8 * j)) & 0xFF) % 255 - 127);
    }
    DevBuf q8(qn), k8(qn), vh(qn * 2),
        qsc(int64_t{s.B} * s.H * nq * kBlockQ * 4),  // a scale per Q row
        ksc(int64_t{s.B} * s.H * nk * 4), o(qn * 2);
    cuda_check(cudaMemcpy(q8.get(), h8.data(), qn, cudaMemcpyHostToDevice), "h2d");
    std::reverse(h8.begin(), h8.end());
    cuda_check(cudaMemcpy(k8.get(), h8.data(), qn, cudaMemcpyHostToDevice), "h2d");
    {
      std::vector<__half> hv(qn);
      for (int64_t i = 0; i < qn; ++i)
        hv[i] =
            __float2half(static_cast<float>(static_cast<int>(rng.next() % 2001) - 1000) / 1000.f);
      cuda_check(cudaMemcpy(vh.get(), hv.data(), qn * 2, cudaMemcpyHostToDevice), "h2d");
      std::vector<float> sc(std::max(nq * kBlockQ, nk) * int64_t{s.B} * s.H, 0.02f);
      cuda_check(cudaMemcpy(qsc.get(), sc.data(), qsc.bytes(), cudaMemcpyHostToDevice), "h2d");
      cuda_check(cudaMemcpy(ksc.get(), sc.data(), ksc.bytes(), cudaMemcpyHostToDevice), "h2d");
    }
    for (double density : densities) {
      // Random LUT rows with round(density * nk) blocks (>= 1), ascending.
      const int64_t rows = int64_t{s.B} * s.H * nq;
      std::vector<int32_t> lut(rows * nk, 0), len(rows);
      std::vector<int32_t> idx(nk);
      int64_t kept = 0;
      for (int64_t r = 0; r < rows; ++r) {
        for (int j = 0; j < nk; ++j) idx[j] = j;
        const int n = std::max(1, static_cast<int>(std::lround(density * nk)));
        for (int j = 0; j < n; ++j) std::swap(idx[j], idx[j + rng.next() % (nk - j)]);
        std::sort(idx.begin(), idx.begin() + n);
        std::copy(idx.begin(), idx.begin() + n, lut.begin() + r * nk);
        len[r] = n;
        kept += n;
      }
      DevBuf lut_d(lut.size() * 4), len_d(len.size() * 4);
      cuda_check(cudaMemcpy(lut_d.get(), lut.data(), lut_d.bytes(), cudaMemcpyHostToDevice), "h2d");
      cuda_check(cudaMemcpy(len_d.get(), len.data(), len_d.bytes(), cudaMemcpyHostToDevice), "h2d");
      AttentionParams a;
      a.q8 = static_cast<const int8_t*>(q8.get());
      a.k8 = static_cast<const int8_t*>(k8.get());
      a.v = vh.get();
      a.q_scale = static_cast<const float*>(qsc.get());
      a.k_scale = static_cast<const float*>(ksc.get());
      a.lut = static_cast<const int32_t*>(lut_d.get());
      a.lut_len = static_cast<const int32_t*>(len_d.get());
      a.o = o.get();
      a.o_stride_b = int64_t{s.H} * s.N * s.D, a.o_stride_h = int64_t{s.N} * s.D;
      a.o_stride_n = s.D;
      a.batch = s.B, a.heads = s.H, a.kv_heads = s.H, a.seq_q = a.seq_k = s.N;
      a.head_dim = s.D, a.num_q_blocks = nq, a.num_k_blocks = nk;
      a.sm_scale_log2 = static_cast<float>(kLog2e / std::sqrt(static_cast<double>(s.D)));
      const std::vector<float> ms =
          sparge::test::time_launches([&] { sparge::kernels::launch_attention_sm80(a, nullptr); },
                                      /*warmup=*/5, /*reps=*/30);
      const double med = ms[ms.size() / 2];
      const double flops = 4.0 * s.B * s.H * double(s.N) * s.N * s.D;
      const double frac = double(kept) / double(rows * nk);
      char shape[64];
      std::snprintf(shape, sizeof shape, "%d,%d,%d,%d", s.B, s.H, s.N, s.D);
      std::printf("[bench] %-18s %7.2f %10.3f %10.3f %9.1f %9.1f\n", shape, density, med,
                  ms[ms.size() * 9 / 10] - ms[ms.size() / 10], flops / med * 1e-9,
                  flops * frac / med * 1e-9);
    }
  }
}

}  // namespace
