// CPU reference, part 1: geometry, block statistics, stage-1 mask prediction, dense attention,
// metrics and the quantisation primitives. Part 2 (the online-softmax emulation of the kernels)
// is sparse_attention.cpp.
//
// NUMERICS CONTRACT (summarised in docs/design.md, Numerics contract; the CUDA kernels follow it,
// bit-for-bit where the operation is exactly defined: everything below except fp32 sums/dot
// products of unspecified order, exp/exp2):
//  * Shapes: q [B, H, Nq, D], k/v [B, Hkv, Nk, D], H % Hkv == 0, query head h uses kv head
//    h / (H / Hkv) for the map and the attention. Inputs of any float dtype are read as fp32.
//  * Softmax scale s = options.scale or 1/sqrt(D) (double); log2-domain factor
//    sm_scale_log2 = float(s * log2(e)).
//  * K smoothing: km = mean over tokens 0, 16, 32, ... < Nk of K (every kernels::kKMeanStride-th
//    token) in fp32 per (b, kv head); K' = K - km.
//    Q is not smoothed.
//  * Per block (BQ rows of Q, BK rows of K'), over its n valid rows only:
//      pooled = (sum of rows, fp32) / n;
//      sim = ||sum_i x_i / ||x_i|| ||^2 / n^2 (fp32; a zero row stays zero); similar iff sim > θ.
//      INT8 (K: per block; Q: per token row, the same rule over the row's D values):
//      amax = max |x| (fp32); scale = amax / 127 (1 if amax == 0); inv = 127.f / amax;
//      q = clamp(round_half_to_even(x * inv), -127, 127) (0 if amax == 0); padded rows are 0.
//      Q per row because a block's largest query row sets the step of all 128: on real-image
//      tensors the dense-mask error fell from 0.036 to 0.021 (worst head, a photograph of
//      galaxies on black). The kernels scale each accumulator row anyway; the cost measured is
//      in kernels/NOTES.md (prediction/quantisation run 12).
//  * Compressed map per (b, h): Ŝ[i,j] = (pooled_q[i] · pooled_k'[j]) * float(s) (fp32);
//    candidate columns = causally valid and similar K blocks, others -inf;
//    P̂ = softmax over the row in fp32: e_j = expf(Ŝ_j - max), sum in ascending j, p_j = e_j/sum.
//  * TopCdf(τ): candidates sorted by p descending, ties to the lower block index (stable);
//    cumulative fp32 sum in that order; keep the shortest prefix whose cumsum >= τ, all
//    candidates if it never reaches τ; at least one block when the row has a candidate.
//    Top-k: keep min(#candidates, max(1, ceilf(k * float(n_valid)))) in the same order, where
//    n_valid = number of causally valid K blocks of the row (fp32 product, then ceilf).
//  * Mask = selection | non-similar K columns (all rows) | non-similar Q rows (whole row);
//    then & causal validity; then column 0 on if options.sink (always causally valid).
//    A row left with no block (only when all of its candidates were excluded, i.e. it had none
//    and nothing was forced) keeps its last causally valid block, so every row has >= 1.
//  * Sparsity cap c (optional, per head, per (b, h)): while the mask skips more than
//    floor(c * valid) of the head's causally valid blocks, add the next candidate of a row whose
//    Q block is similar, in ascending order of the cumsum before it (ties: lower row, then the
//    earlier candidate); a candidate already on (sink) counts nothing.
//  * Causal: query token tq sees key tk iff tk <= tq + (Nk - Nq) (top-left when Nq == Nk,
//    bottom-right when Nq < Nk; Nq > Nk with causal is a usage error). Block (i, j) is valid
//    iff some pair in it is visible: j * BK <= min((i + 1) * BQ, Nq) - 1 + (Nk - Nq).
//  * Attention numerics: see sparse_attention.cpp.
//  * dense_attention: softmax(q kᵀ s) v in fp64 (or fp32) with the token mask; compare in fp64.
#include "reference/reference.hpp"

#include <ATen/Parallel.h>
#include <c10/util/Float8_e4m3fn.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.hpp"
#include "kernels/params.h"
#include "reference/detail.hpp"

namespace sparge::ref {

// ---------------------------------------------------------------------------------------------
// Geometry and thresholds

Geometry hopper_geometry() { return Geometry{128, 128, 16, PvNumerics::kFp8, "sm90"}; }
Geometry portable_geometry() { return Geometry{128, 64, 16, PvNumerics::kHalf, "sm80"}; }

Geometry geometry_by_name(const std::string& name) {
  if (name == "sm90") return hopper_geometry();
  if (name == "sm80") return portable_geometry();
  fail(ExitCode::kUsage, "unknown kernel geometry '{}' (known: sm90, sm80)", name);
}

Thresholds Thresholds::uniform(int heads, float tau, float theta, float lambda) {
  Thresholds t;
  t.tau.assign(heads, tau);
  t.theta.assign(heads, theta);
  t.lambda.assign(heads, lambda);
  return t;
}

double SparseResult::sparsity_stage1() const {
  return valid_blocks == 0 ? 0.0 : 1.0 - static_cast<double>(kept_blocks) / valid_blocks;
}

double SparseResult::sparsity_stage12() const {
  if (valid_blocks == 0) return 0.0;
  // Stage 1's figure plus stage 2's share, so that it is never an ulp below stage 1 (the one
  // fraction (2 (v - k) + ...) / (2 v) rounds below 1 - k / v at v = 3, k = 1).
  return sparsity_stage1() +
         (pv_skipped_blocks - pv_padding_blocks) / (2.0 * static_cast<double>(valid_blocks));
}

namespace detail {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_geometry(const Geometry& g) {
  if (g.block_q <= 0 || g.block_k <= 0 || g.warp_rows <= 0 || g.block_q % g.warp_rows != 0) {
    fail(ExitCode::kUsage,
         "geometry {}: block {}x{} with warp rows {} (warp rows must divide block_q)", g.name,
         g.block_q, g.block_k, g.warp_rows);
  }
}

Shape check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal) {
  auto shape_str = [](const at::Tensor& t) { return fmt::format("{}", fmt::join(t.sizes(), "x")); };
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) {
    fail(ExitCode::kDataError, "attention inputs: q {}, k {}, v {}: expected rank 4 [B, H, N, D]",
         shape_str(q), shape_str(k), shape_str(v));
  }
  if (k.sizes() != v.sizes() || q.size(0) != k.size(0) || q.size(3) != k.size(3)) {
    fail(ExitCode::kDataError,
         "attention inputs: q {}, k {}, v {}: B and D must agree and k, v have equal shapes",
         shape_str(q), shape_str(k), shape_str(v));
  }
  Shape s{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)};
  if (s.batch < 1 || s.kv_heads < 1 || s.heads % s.kv_heads != 0 || s.nq_tokens < 1 ||
      s.nk_tokens < 1 || s.head_dim < 1) {
    fail(ExitCode::kDataError,
         "attention inputs: q {}, k {}: need B, N, D >= 1 and query heads a multiple of kv heads",
         shape_str(q), shape_str(k));
  }
  if (causal && s.nq_tokens > s.nk_tokens) {
    fail(ExitCode::kUsage, "causal attention with Nq = {} > Nk = {} is not supported", s.nq_tokens,
         s.nk_tokens);
  }
  return s;
}

double softmax_scale(const AttentionOptions& options, int64_t head_dim) {
  return options.scale > 0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

float softmax_scale_log2(const AttentionOptions& options, int64_t head_dim) {
  return static_cast<float>(softmax_scale(options, head_dim) * 1.4426950408889634);
}

// x [B, H, N, D] fp32 -> pooled/sim per block of `block` rows, INT8 with a scale per block or per
// row. Padded rows (beyond N in the last block) are zero, so they add nothing to sums, norms or
// amax; divisions use the valid count.
BlockData block_data(const at::Tensor& x, int64_t block, Int8Scale granularity) {
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), D = x.size(3);
  const int64_t nblk = ceil_div(N, block);
  at::Tensor xp = at::constant_pad_nd(x, {0, 0, 0, nblk * block - N}).view({B, H, nblk, block, D});
  // Valid rows per block, [nblk] fp32 (exact small integers).
  at::Tensor count = at::clamp_max(N - at::arange(nblk, at::kLong) * block, block).to(at::kFloat);

  BlockData out;
  out.stats.pooled = xp.sum(3) / count.view({1, 1, nblk, 1});
  at::Tensor norm = xp.norm(2, {4}, /*keepdim=*/true);
  at::Tensor unit = at::where(norm > 0, xp / norm, at::zeros({}, x.options()));
  at::Tensor s = unit.sum(3);  // [B, H, nblk, D]
  out.stats.sim = (s * s).sum(-1) / (count * count).view({1, 1, nblk});

  // amax [B, H, nblk, 1, 1] per block or [B, H, nblk, block, 1] per row.
  const bool per_row = granularity == Int8Scale::kPerRow;
  at::Tensor amax =
      per_row ? xp.abs().amax({4}, /*keepdim=*/true) : xp.abs().amax({3, 4}, /*keepdim=*/true);
  at::Tensor nonzero = amax > 0;
  at::Tensor inv = at::full({}, 127.f, x.options()) / amax;  // fp32 division, inf where amax == 0
  at::Tensor qv = at::clamp(at::round(xp * inv), -127, 127);
  qv = at::where(nonzero, qv, at::zeros({}, x.options()));
  out.padded = qv;
  out.stats.scale = at::where(nonzero, amax / 127.f, at::ones({}, x.options()))
                        .reshape({B, H, per_row ? nblk * block : nblk});
  out.stats.values = qv.view({B, H, nblk * block, D}).narrow(2, 0, N).to(at::kChar).contiguous();
  return out;
}

at::Tensor smooth_k(const at::Tensor& k) {
  at::Tensor kf = k.to(at::kFloat);
  const int64_t n = kf.size(2);
  return kf - kf.slice(2, 0, n, kernels::kKMeanStride).mean({2}, /*keepdim=*/true);
}

at::Tensor token_visibility(const at::Tensor& qi, const at::Tensor& kj, int64_t bq, int64_t bk,
                            int64_t nq_tokens, int64_t nk_tokens, bool causal) {
  at::Tensor tq = (qi * bq).view({-1, 1, 1}) + at::arange(bq, at::kLong).view({1, bq, 1});
  at::Tensor tk = (kj * bk).view({-1, 1, 1}) + at::arange(bk, at::kLong).view({1, 1, bk});
  at::Tensor vis = (tq < nq_tokens) & (tk < nk_tokens);
  if (causal) vis = vis & (tk <= tq + (nk_tokens - nq_tokens));
  return vis;
}

}  // namespace detail

using namespace detail;

// ---------------------------------------------------------------------------------------------
// Block statistics

BlockStats q_block_stats(const at::Tensor& q, int block_q) {
  SPARGE_ASSERT(q.dim() == 4 && block_q > 0, "q_block_stats: q rank {}, block {}", q.dim(),
                block_q);
  return block_data(q.to(at::kFloat).contiguous(), block_q, Int8Scale::kPerRow).stats;
}

BlockStats k_block_stats(const at::Tensor& k, int block_k) {
  SPARGE_ASSERT(k.dim() == 4 && block_k > 0, "k_block_stats: k rank {}, block {}", k.dim(),
                block_k);
  return block_data(smooth_k(k).contiguous(), block_k, Int8Scale::kPerBlock).stats;
}

// ---------------------------------------------------------------------------------------------
// Causal block validity

at::Tensor causal_block_mask(int64_t nq_tokens, int64_t nk_tokens, const Geometry& geometry,
                             bool causal) {
  check_geometry(geometry);
  const int64_t nq = ceil_div(nq_tokens, geometry.block_q);
  const int64_t nk = ceil_div(nk_tokens, geometry.block_k);
  if (!causal) return at::ones({nq, nk}, at::kBool);
  if (nq_tokens > nk_tokens) {
    fail(ExitCode::kUsage, "causal attention with Nq = {} > Nk = {} is not supported", nq_tokens,
         nk_tokens);
  }
  // Last query token of block i sees keys up to last_tq + offset; block j starts at j * BK.
  at::Tensor last_tq =
      at::clamp_max((at::arange(nq, at::kLong) + 1) * geometry.block_q, nq_tokens) - 1;
  at::Tensor first_tk = at::arange(nk, at::kLong) * geometry.block_k;
  return first_tk.view({1, nk}) <= (last_tq + (nk_tokens - nq_tokens)).view({nq, 1});
}

// ---------------------------------------------------------------------------------------------
// Stage 1: mask prediction

namespace {

void check_thresholds(const Thresholds& t, int64_t heads) {
  auto check = [&](const std::vector<float>& v, const char* name) {
    if (static_cast<int64_t>(v.size()) != heads) {
      fail(ExitCode::kUsage, "thresholds: {} has {} entries, expected {} (query heads)", name,
           v.size(), heads);
    }
  };
  check(t.theta, "theta");
  if (!t.sparsity_cap.empty()) check(t.sparsity_cap, "sparsity_cap");
  if (t.topk.empty()) {
    check(t.tau, "tau");
  } else {
    check(t.topk, "topk");
  }
}

// One row of the compressed map: selects blocks into `row` (nk bools, pre-zeroed).
// s: Ŝ row (fp32), cand: candidate flags, n_valid: causally valid blocks of the row.
// Returns how many of `order` (the candidates by descending p, ties to the lower index) it kept;
// cum[t] = fp32 sum of p over order[0..t], in that order (what the per-head cap extends by).
size_t select_row(const float* s, const std::vector<char>& cand, int64_t nk, int64_t n_valid,
                  bool topk_mode, float tau, float topk, std::vector<int64_t>& order,
                  std::vector<float>& p, std::vector<float>& cum, bool* row) {
  order.clear();
  cum.clear();
  float mx = kNegInf;
  for (int64_t j = 0; j < nk; ++j) {
    if (cand[j]) {
      order.push_back(j);
      mx = std::max(mx, s[j]);
    }
  }
  if (order.empty()) return 0;
  // Softmax in fp32 over the candidates (non-candidates are -inf: probability 0).
  float sum = 0.f;
  for (int64_t j : order) {
    p[j] = std::exp(s[j] - mx);
    sum += p[j];
  }
  for (int64_t j : order) p[j] = p[j] / sum;
  // Descending probability, ties to the lower block index (order is ascending before the sort).
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  float c = 0.f;
  for (int64_t j : order) {
    c += p[j];
    cum.push_back(c);
  }
  size_t keep = order.size();
  if (topk_mode) {
    const float want = std::ceil(topk * static_cast<float>(n_valid));
    keep = std::min<size_t>(order.size(), static_cast<size_t>(std::max(1.f, want)));
  } else {
    for (size_t t = 0; t < order.size(); ++t) {
      if (cum[t] >= tau) {
        keep = t + 1;
        break;
      }
    }
  }
  for (size_t t = 0; t < keep; ++t) row[order[t]] = true;
  return keep;
}

// The per-head sparsity cap on one (b, h) mask [nq, nk]: while more than floor(cap * valid)
// causally valid blocks are skipped, add the next candidate of some row, taking the additions
// in ascending order of the cumulative p before them (cum of the row's last kept candidate),
// ties to the lower row, then the earlier candidate. So every row still keeps a prefix of its
// candidate order, and the head keeps the blocks TopCdf would keep at the smallest larger tau
// that meets the cap. Rows whose Q block is not similar already keep everything.
struct RowSelection {
  std::vector<int64_t> order;  // the row's candidates, descending p
  std::vector<float> cum;      // cumulative p in that order
  size_t keep = 0;             // how many of them TopCdf / top-k kept
  bool open = false;           // the row may take more (Q block similar)
};
void apply_sparsity_cap(float cap, int64_t valid, int64_t kept, int64_t nk,
                        const std::vector<RowSelection>& rows, bool* mask) {
  const int64_t allowed_skips = static_cast<int64_t>(std::floor(static_cast<double>(cap) * valid));
  const int64_t target = valid - allowed_skips;
  if (kept >= target) return;
  struct Event {
    float value;
    int64_t row;
    size_t next;  // index into the row's order of the candidate it adds
  };
  std::vector<Event> events;
  for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i) {
    const RowSelection& r = rows[i];
    if (!r.open) continue;
    for (size_t t = std::max<size_t>(r.keep, 1); t < r.order.size(); ++t)
      events.push_back({r.cum[t - 1], i, t});
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    if (a.value != b.value) return a.value < b.value;
    if (a.row != b.row) return a.row < b.row;
    return a.next < b.next;
  });
  for (const Event& e : events) {
    if (kept >= target) break;
    bool& cell = mask[e.row * nk + rows[e.row].order[e.next]];
    if (!cell) {
      cell = true;
      ++kept;
    }
  }
}

}  // namespace

at::Tensor predict_block_mask(const BlockStats& q_stats, const BlockStats& k_stats,
                              int64_t nq_tokens, int64_t nk_tokens, const Geometry& geometry,
                              const Thresholds& thresholds, const AttentionOptions& options) {
  check_geometry(geometry);
  const int64_t B = q_stats.pooled.size(0), H = q_stats.pooled.size(1);
  const int64_t nq = q_stats.pooled.size(2), D = q_stats.pooled.size(3);
  const int64_t Hkv = k_stats.pooled.size(1), nk = k_stats.pooled.size(2);
  SPARGE_ASSERT(nq == ceil_div(nq_tokens, geometry.block_q) &&
                    nk == ceil_div(nk_tokens, geometry.block_k) && H % Hkv == 0 &&
                    k_stats.pooled.size(0) == B,
                "block stats [{}, {}, {}], [{}, {}, {}] do not match Nq = {}, Nk = {}, geometry {}",
                B, H, nq, k_stats.pooled.size(0), Hkv, nk, nq_tokens, nk_tokens, geometry.name);
  check_thresholds(thresholds, H);
  const bool topk_mode = !thresholds.topk.empty();
  const int64_t group = H / Hkv;

  const at::Tensor valid = causal_block_mask(nq_tokens, nk_tokens, geometry, options.causal);
  // Ŝ = (pooled_q · pooled_k') * s, [B, H, nq, nk] fp32; kv head of query head h is h / group.
  at::Tensor pk = k_stats.pooled.to(at::kFloat).repeat_interleave(group, 1);
  at::Tensor shat = at::matmul(q_stats.pooled.to(at::kFloat), pk.transpose(2, 3)) *
                    static_cast<float>(softmax_scale(options, D));
  shat = shat.contiguous();
  at::Tensor qsim = q_stats.sim.to(at::kFloat).contiguous();
  at::Tensor ksim = k_stats.sim.to(at::kFloat).contiguous();
  at::Tensor mask = at::zeros({B, H, nq, nk}, at::kBool);

  const bool* vp = valid.data_ptr<bool>();
  const float* sp = shat.data_ptr<float>();
  const float* qsp = qsim.data_ptr<float>();
  const float* ksp = ksim.data_ptr<float>();
  bool* mp = mask.data_ptr<bool>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<char> cand(nk), ksimilar(nk);
    std::vector<float> p(nk);
    std::vector<RowSelection> sel(nq);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H, hk = h / group;
      const float theta = thresholds.theta[h];
      const float tau = topk_mode ? 0.f : thresholds.tau[h];
      const float topk = topk_mode ? thresholds.topk[h] : 0.f;
      int64_t valid = 0, kept = 0;
      for (int64_t j = 0; j < nk; ++j) ksimilar[j] = ksp[(b * Hkv + hk) * nk + j] > theta;
      for (int64_t i = 0; i < nq; ++i) {
        bool* row = mp + (bh * nq + i) * nk;
        const bool* vrow = vp + i * nk;
        int64_t n_valid = 0;
        for (int64_t j = 0; j < nk; ++j) {
          cand[j] = vrow[j] && ksimilar[j];
          n_valid += vrow[j];
        }
        RowSelection& r = sel[i];
        r.keep = select_row(sp + (bh * nq + i) * nk, cand, nk, n_valid, topk_mode, tau, topk,
                            r.order, p, r.cum, row);
        const bool q_similar = qsp[bh * nq + i] > theta;
        r.open = q_similar;
        int64_t last_valid = -1;
        bool any = false;
        for (int64_t j = 0; j < nk; ++j) {
          row[j] = (row[j] || !ksimilar[j] || !q_similar) && vrow[j];
          if (j == 0 && options.sink) row[j] = true;
          if (vrow[j]) last_valid = j;
          any = any || row[j];
          kept += row[j];
        }
        if (!any && last_valid >= 0) {
          row[last_valid] = true;
          ++kept;
        }
        valid += n_valid;
      }
      if (!thresholds.sparsity_cap.empty())
        apply_sparsity_cap(thresholds.sparsity_cap[h], valid, kept, nk, sel, mp + bh * nq * nk);
    }
  });
  return mask;
}

at::Tensor predict_block_mask(const at::Tensor& q, const at::Tensor& k, const Geometry& geometry,
                              const Thresholds& thresholds, const AttentionOptions& options) {
  check_geometry(geometry);
  const Shape s = check_qkv(q, k, k, options.causal);
  return predict_block_mask(q_block_stats(q, geometry.block_q), k_block_stats(k, geometry.block_k),
                            s.nq_tokens, s.nk_tokens, geometry, thresholds, options);
}

// ---------------------------------------------------------------------------------------------
// Quantisation primitives

at::Tensor round_e4m3(const at::Tensor& x) {
  // Float8_e4m3fn has no infinity (out of range becomes NaN): saturate first; the cast itself
  // rounds to nearest even, subnormals included.
  return at::clamp(x.to(at::kFloat), -448.f, 448.f).to(at::kFloat8_e4m3fn).to(at::kFloat);
}

VFp8 quantize_v_fp8(const at::Tensor& v) {
  SPARGE_ASSERT(v.dim() == 4, "quantize_v_fp8: v rank {}", v.dim());
  at::Tensor vf = v.to(at::kFloat);
  at::Tensor amax = vf.abs().amax({2});  // [B, Hkv, D]
  VFp8 out;
  out.scale = at::where(amax > 0, amax / 448.f, at::ones({}, vf.options()));
  out.values = round_e4m3(vf / out.scale.unsqueeze(2));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dense attention and metrics

at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const AttentionOptions& options, at::ScalarType dtype) {
  const Shape s = check_qkv(q, k, v, options.causal);
  if (dtype != at::kDouble && dtype != at::kFloat) {
    fail(ExitCode::kUsage, "dense_attention: dtype must be fp64 or fp32");
  }
  const double scale = softmax_scale(options, s.head_dim);
  at::Tensor o = at::empty({s.batch, s.heads, s.nq_tokens, s.head_dim}, at::TensorOptions(dtype));
  at::Tensor visible;
  if (options.causal) {
    at::Tensor tq = at::arange(s.nq_tokens, at::kLong).view({-1, 1});
    at::Tensor tk = at::arange(s.nk_tokens, at::kLong).view({1, -1});
    visible = tk <= tq + (s.nk_tokens - s.nq_tokens);
  }
  // One (b, h) at a time keeps the [Nq, Nk] score matrix the only large temporary.
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t hk = h / s.group();
      at::Tensor qh = q[b][h].to(dtype), kh = k[b][hk].to(dtype), vh = v[b][hk].to(dtype);
      at::Tensor logits = at::matmul(qh, kh.t()) * scale;
      if (visible.defined()) logits.masked_fill_(visible.logical_not(), -INFINITY);
      o[b][h].copy_(at::matmul(at::softmax(logits, -1), vh));
    }
  }
  return o;
}

Metrics compare(const at::Tensor& o, const at::Tensor& ref) {
  if (o.sizes() != ref.sizes()) {
    fail(ExitCode::kUsage, "compare: output {} and reference {} differ in shape",
         fmt::join(o.sizes(), "x"), fmt::join(ref.sizes(), "x"));
  }
  at::Tensor a = o.to(at::kDouble).flatten(), r = ref.to(at::kDouble).flatten();
  Metrics m;
  const double ref_l1 = r.abs().sum().item<double>();
  const double diff_l1 = (a - r).abs().sum().item<double>();
  m.rel_l1 = ref_l1 > 0 ? diff_l1 / ref_l1 : (diff_l1 > 0 ? INFINITY : 0.0);
  const double na = a.norm().item<double>(), nr = r.norm().item<double>();
  m.cosine = (na > 0 && nr > 0) ? a.dot(r).item<double>() / (na * nr) : (na == nr ? 1.0 : 0.0);
  m.rmse = a.numel() ? std::sqrt((a - r).pow(2).mean().item<double>()) : 0.0;
  return m;
}

}  // namespace sparge::ref
