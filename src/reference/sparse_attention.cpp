// CPU reference, part 2: the block-sparse attention exactly as the kernels schedule it.
//
// NUMERICS CONTRACT (continues reference.cpp; the kernels follow it):
//  * Q is INT8 per token row, K' = K - km per block (reference.cpp). Padded rows/tokens are zero.
//  * For a kept block pair (i, j) and a query row r / key column c of it:
//      x[r,c] = float(int32 Σ_d q8[r,d]·k8[c,d]) * ((q_scale[r] * k_scale[j]) * sm_scale_log2),
//    products left to right in fp32, sm_scale_log2 = float(s * log2(e)). x = -inf where
//    c >= Nk, r >= Nq (padded query rows take part in nothing) or tk > tq + (Nk - Nq) (causal).
//  * Per (b, h, Q block i) the kept K blocks (mask ∧ causal validity) are visited in ascending j;
//    rows are grouped by geometry.warp_rows. State per row: m (-inf), l (0), acc[D] (0).
//      m_local = max_c x;  m_new = max(m_old, m_local)
//      diff(group) = max over the group's rows of (m_local - m_new), -inf for rows with
//        m_local = -inf. Skip iff diff < λ_log2 with λ_log2 = λ * 1.44269504f (fp32); λ = -inf
//        never skips. A skipped group keeps acc and l unchanged (m still updates; it cannot move
//        when the group skips, because λ <= 0). A group whose rows are all masked in this block
//        has diff = -inf and, for finite λ, counts as skipped (it has nothing to add either way).
//      Otherwise alpha = exp2(m_old - m_new) (0 when m_old = -inf), l = l * alpha + Σ_c w,
//      acc = acc * alpha + Σ_c P(p)·V(v), with
//        FP8:  p = exp2((x - m_new) + 8.0f) in fp32 (p ∈ (0, 256]), P = e4m3(p), w = P (l sums
//              the rounded weights that multiply V, so a row's weights sum to exactly 1 and a
//              constant V comes out exact; the sm90 kernels get this sum from the P·V GEMM),
//              V = e4m3(v / v_scale) (quantize_v_fp8), o = (acc / l) * v_scale[d].
//        Half: p = exp2(x - m_new), P = p rounded to fp16 (bf16 for bf16 V), w = p (before
//              rounding; the sm80 kernel sums in fp32 registers), V = v in that dtype, o = acc / l.
//      Rows with m_new = -inf contribute p = 0. A row with l = 0 at the end outputs 0.
//  * Counts: valid_blocks = Σ_{b,h} causally valid pairs; kept_blocks = Σ mask ∧ valid;
//    pv_skipped_blocks = skipped groups / (block_q / warp_rows).
//  * Not bit-exact by nature (documented for the kernels' tolerance): exp2 (here Sleef, on the
//    GPU ex2.approx), fp32 sums over c of w and of the P·V products (order unspecified), and
//    the sm90 output as acc · (1 / l) · v_scale (one reciprocal per row).
//  * "fp32 accumulation" is per kept block, not only per row: Hopper's e4m3 wgmma keeps about 13
//    mantissa bits in its accumulator (truncating), so the sm90 kernel sums one block's 128
//    products there (P·V and Σ P alike) and adds that block sum to acc (l) in fp32. Accumulating a
//    whole row in the tensor core broke this contract by 3-5x on real-image tensors
//    (kernels/NOTES.md).
//
// Implementation: all (b, h, i) block rows advance together, one kept block per step (step t
// processes the t-th kept block of every row that has one), so each step is a few batched tensor
// ops ([rows, block_q, block_k] logits, bmm for P·V) instead of per-block loops.
#include <ATen/ATen.h>

#include <cmath>
#include <functional>

#include "common/error.hpp"
#include "reference/detail.hpp"
#include "reference/reference.hpp"

namespace sparge::ref {

using namespace detail;

namespace {

enum class Mode { kKernel, kFloat };

// Everything the online softmax needs, flattened over block rows r = (b * H + h) * nq + i and
// kv blocks kb = (b * Hkv + hk) * nk + j.
struct Problem {
  Shape shape;
  Geometry geometry;
  AttentionOptions options;
  Mode mode = Mode::kKernel;
  int64_t nq = 0, nk = 0;
  float sm_scale_log2 = 0.f;
  // Logits of block pair (r, j), [R, bq, bk] fp32, masked. Either gathered from a cache or
  // computed from the quantised blocks.
  std::function<at::Tensor(const at::Tensor& r, const at::Tensor& j)> logits;
  at::Tensor v_pv;     // [B * Hkv * nk, bk, D] fp32
  at::Tensor v_scale;  // [B, Hkv, D] fp32 or undefined (no final scaling)
  at::ScalarType half_dtype = at::kHalf;
};

// [B, H, N, D] -> [B * H * nblk, blk, D], zero padded.
at::Tensor to_blocks(const at::Tensor& x, int64_t block) {
  const int64_t N = x.size(2), nblk = ceil_div(N, block);
  return at::constant_pad_nd(x, {0, 0, 0, nblk * block - N})
      .reshape({x.size(0) * x.size(1) * nblk, block, x.size(3)});
}

at::ScalarType half_dtype_of(const at::Tensor& v) {
  return v.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kHalf;
}

// V operand of P·V, [B * Hkv * nk, bk, D], plus the FP8 channel scale.
void prepare_v(Problem& p, const at::Tensor& v) {
  if (p.mode == Mode::kKernel && p.geometry.pv == PvNumerics::kFp8) {
    VFp8 v8 = quantize_v_fp8(v);
    p.v_pv = to_blocks(v8.values, p.geometry.block_k);
    p.v_scale = v8.scale;
  } else if (p.mode == Mode::kKernel) {
    p.half_dtype = half_dtype_of(v);
    p.v_pv = to_blocks(v.to(p.half_dtype).to(at::kFloat), p.geometry.block_k);
  } else {
    p.v_pv = to_blocks(v.to(at::kFloat), p.geometry.block_k);
  }
}

// Block-row indices -> (b, h, i) pieces used for the kv mapping and the token masks.
struct RowIndex {
  at::Tensor i;        // [R] query block index
  at::Tensor kv_base;  // [R] (b * Hkv + h / group) * nk
};
RowIndex row_index(const Problem& p) {
  const Shape& s = p.shape;
  at::Tensor r = at::arange(s.batch * s.heads * p.nq, at::kLong);
  at::Tensor bh = at::div(r, p.nq, "floor");
  at::Tensor b = at::div(bh, s.heads, "floor"), h = bh - b * s.heads;
  return {r - bh * p.nq, (b * s.kv_heads + at::div(h, s.group(), "floor")) * p.nk};
}

// Logits computed on the fly from block tensors qb [R, bq, D], kb [B * Hkv * nk, bk, D] and the
// dequantisation factors qs [R, bq] (per query row) and ks [B * Hkv * nk] (per K block) (kernel
// mode: INT8 values as fp32 and their scales; float mode: raw values and unit scales). The INT8 dot
// products are exact in fp32 (|Σ| <= D * 127^2 < 2^24 for D <= 1040, checked), so this equals
// float(int32 accumulate).
void set_logits_from_blocks(Problem& p, at::Tensor qb, at::Tensor kb, at::Tensor qs, at::Tensor ks,
                            RowIndex idx) {
  const float sm = p.sm_scale_log2;
  const int64_t bq = p.geometry.block_q, bk = p.geometry.block_k;
  const int64_t nq_tokens = p.shape.nq_tokens, nk_tokens = p.shape.nk_tokens;
  const bool causal = p.options.causal;
  p.logits = [=](const at::Tensor& r, const at::Tensor& j) {
    at::Tensor kidx = idx.kv_base.index_select(0, r) + j;
    at::Tensor x = at::bmm(qb.index_select(0, r), kb.index_select(0, kidx).transpose(1, 2));
    at::Tensor factor = qs.index_select(0, r) * ks.index_select(0, kidx).view({-1, 1}) * sm;
    x = x * factor.unsqueeze(2);
    at::Tensor vis =
        token_visibility(idx.i.index_select(0, r), j, bq, bk, nq_tokens, nk_tokens, causal);
    return x.masked_fill_(vis.logical_not(), kNegInf);
  };
}

void check_mask(const at::Tensor& mask, const Shape& s, int64_t nq, int64_t nk) {
  if (mask.dim() != 4 || mask.size(0) != s.batch || mask.size(1) != s.heads || mask.size(2) != nq ||
      mask.size(3) != nk) {
    fail(ExitCode::kUsage, "block mask {}: expected [{}, {}, {}, {}]", fmt::join(mask.sizes(), "x"),
         s.batch, s.heads, nq, nk);
  }
}

std::vector<float> lambda_log2(const std::vector<float>& lambda, int64_t heads) {
  if (static_cast<int64_t>(lambda.size()) != heads) {
    fail(ExitCode::kUsage, "lambda has {} entries, expected {} (query heads)", lambda.size(),
         heads);
  }
  std::vector<float> out(lambda.size());
  for (size_t h = 0; h < lambda.size(); ++h) {
    if (!(lambda[h] <= 0.f)) {
      fail(ExitCode::kUsage, "lambda[{}] = {}: must be <= 0 (natural-log units; -inf disables)", h,
           lambda[h]);
    }
    out[h] = lambda[h] * kLog2e;
  }
  return out;
}

// The online softmax over kept blocks. mask: bool [B, H, nq, nk].
SparseResult run(const Problem& p, const at::Tensor& mask_in, const std::vector<float>& lambda) {
  const Shape& s = p.shape;
  const int64_t bq = p.geometry.block_q, D = s.head_dim;
  const int64_t wr = p.geometry.warp_rows, groups = bq / wr;
  const int64_t R = s.batch * s.heads * p.nq;
  check_mask(mask_in, s, p.nq, p.nk);
  const std::vector<float> lam = lambda_log2(lambda, s.heads);

  const at::Tensor valid =
      causal_block_mask(s.nq_tokens, s.nk_tokens, p.geometry, p.options.causal);
  at::Tensor mask = (mask_in.to(at::kBool) & valid.view({1, 1, p.nq, p.nk})).reshape({R, p.nk});
  SparseResult res;
  res.valid_blocks = valid.sum().item<int64_t>() * s.batch * s.heads;
  res.kept_blocks = mask.sum().item<int64_t>();

  // Kept block indices per row in ascending order: sorting (!mask, j) puts kept blocks first.
  at::Tensor key = mask.logical_not().to(at::kLong) * p.nk + at::arange(p.nk, at::kLong);
  at::Tensor lut = std::get<0>(key.sort(1)).remainder(p.nk);  // [R, nk]
  at::Tensor len = mask.sum(1);                               // [R]
  const int64_t steps = R ? len.max().item<int64_t>() : 0;

  at::Tensor lam_rows = at::tensor(lam, at::kFloat)
                            .view({1, s.heads, 1})
                            .expand({s.batch, s.heads, p.nq})
                            .reshape({R});

  const bool fp8 = p.mode == Mode::kKernel && p.geometry.pv == PvNumerics::kFp8;
  const float offset = fp8 ? 8.f : 0.f;
  const auto fopt = at::TensorOptions(at::kFloat);
  at::Tensor m = at::full({R, bq}, kNegInf, fopt);
  at::Tensor l = at::zeros({R, bq}, fopt);
  at::Tensor acc = at::zeros({R, bq, D}, fopt);
  at::Tensor zero = at::zeros({}, fopt), ninf = at::full({}, kNegInf, fopt);
  at::Tensor kv_base = row_index(p).kv_base;
  int64_t skipped_groups = 0, padding_groups = 0;
  // Groups whose every row is a padded query row (row >= Nq), per row of blocks: [R, groups].
  const at::Tensor group_start =
      at::arange(p.nq, at::kLong).view({p.nq, 1}) * bq + at::arange(groups, at::kLong) * wr;
  const at::Tensor padded_group = (group_start >= s.nq_tokens)
                                      .view({1, p.nq, groups})
                                      .expand({s.batch * s.heads, p.nq, groups})
                                      .reshape({R, groups});

  for (int64_t t = 0; t < steps; ++t) {
    at::Tensor r = (len > t).nonzero().view({-1});  // rows with a t-th kept block
    at::Tensor j = lut.index_select(0, r).select(1, t).contiguous();
    at::Tensor x = p.logits(r, j);  // [Ra, bq, bk]
    const int64_t Ra = r.size(0);

    at::Tensor m_local = x.amax(-1);  // [Ra, bq]
    at::Tensor m_old = m.index_select(0, r);
    at::Tensor m_new = at::maximum(m_old, m_local);
    at::Tensor row_masked = m_local == kNegInf;
    at::Tensor d = at::where(row_masked, ninf, m_local - m_new);
    at::Tensor diff = d.view({Ra, groups, wr}).amax(-1);                 // [Ra, groups]
    at::Tensor skip = diff < lam_rows.index_select(0, r).view({Ra, 1});  // [Ra, groups]
    skipped_groups += skip.sum().item<int64_t>();
    padding_groups += (skip & padded_group.index_select(0, r)).sum().item<int64_t>();
    at::Tensor run_rows = skip.logical_not().repeat_interleave(wr, 1);  // [Ra, bq]

    at::Tensor alpha = at::where(m_old == kNegInf, zero, at::exp2(m_old - m_new));
    at::Tensor dead = (m_new == kNegInf).unsqueeze(-1);
    at::Tensor pr = at::exp2(x - m_new.unsqueeze(-1) + offset);
    pr = at::where(dead, zero, pr);
    at::Tensor pq;
    if (fp8) {
      pq = round_e4m3(pr);
    } else if (p.mode == Mode::kKernel) {
      pq = pr.to(p.half_dtype).to(at::kFloat);
    } else {
      pq = pr;
    }
    at::Tensor vblk = p.v_pv.index_select(0, kv_base.index_select(0, r) + j);  // [Ra, bk, D]
    at::Tensor l_old = l.index_select(0, r), acc_old = acc.index_select(0, r);
    at::Tensor l_new = at::where(run_rows, l_old * alpha + (fp8 ? pq : pr).sum(-1), l_old);
    at::Tensor acc_new = at::where(run_rows.unsqueeze(-1),
                                   acc_old * alpha.unsqueeze(-1) + at::bmm(pq, vblk), acc_old);
    m.index_copy_(0, r, m_new);
    l.index_copy_(0, r, l_new);
    acc.index_copy_(0, r, acc_new);
  }
  res.pv_skipped_blocks = static_cast<double>(skipped_groups) / static_cast<double>(groups);
  res.pv_padding_blocks = static_cast<double>(padding_groups) / static_cast<double>(groups);

  at::Tensor o = at::where(l.unsqueeze(-1) > 0, acc / l.unsqueeze(-1), zero);  // [R, bq, D]
  o = o.view({s.batch, s.heads, p.nq * bq, D}).narrow(2, 0, s.nq_tokens);
  if (fp8) {
    at::Tensor vs = p.v_scale.repeat_interleave(s.group(), 1);  // [B, H, D]
    o = o * vs.unsqueeze(2);
  }
  res.o = o.contiguous();
  return res;
}

Problem make_problem(const at::Tensor& q, const at::Tensor& k, const Geometry& geometry,
                     const AttentionOptions& options, Mode mode, const at::Tensor& v) {
  check_geometry(geometry);
  Problem p;
  p.shape = check_qkv(q, k, v, options.causal);
  p.geometry = geometry;
  p.options = options;
  p.mode = mode;
  p.nq = ceil_div(p.shape.nq_tokens, geometry.block_q);
  p.nk = ceil_div(p.shape.nk_tokens, geometry.block_k);
  p.sm_scale_log2 = softmax_scale_log2(options, p.shape.head_dim);
  if (mode == Mode::kKernel && p.shape.head_dim > 1040) {
    fail(ExitCode::kUsage, "head dim {} > 1040: INT8 logits would not be exact in fp32",
         p.shape.head_dim);
  }
  return p;
}

}  // namespace

SparseResult sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& mask, const std::vector<float>& lambda,
                              const Geometry& geometry, const AttentionOptions& options) {
  Problem p = make_problem(q, k, geometry, options, Mode::kKernel, v);
  BlockData qd = block_data(q.to(at::kFloat).contiguous(), geometry.block_q, Int8Scale::kPerRow);
  BlockData kd = block_data(smooth_k(k).contiguous(), geometry.block_k, Int8Scale::kPerBlock);
  const int64_t D = p.shape.head_dim;
  RowIndex idx = row_index(p);
  set_logits_from_blocks(
      p, qd.padded.reshape({-1, geometry.block_q, D}), kd.padded.reshape({-1, geometry.block_k, D}),
      qd.stats.scale.reshape({-1, geometry.block_q}), kd.stats.scale.reshape({-1}), idx);
  prepare_v(p, v);
  return run(p, mask, lambda);
}

SparseResult sparse_attention_float(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& mask, const std::vector<float>& lambda,
                                    const Geometry& geometry, const AttentionOptions& options) {
  Problem p = make_problem(q, k, geometry, options, Mode::kFloat, v);
  RowIndex idx = row_index(p);
  at::Tensor qb = to_blocks(q.to(at::kFloat), geometry.block_q);
  at::Tensor kb = to_blocks(k.to(at::kFloat), geometry.block_k);
  set_logits_from_blocks(p, qb, kb, at::ones({qb.size(0), qb.size(1)}), at::ones({kb.size(0)}),
                         idx);
  prepare_v(p, v);
  return run(p, mask, lambda);
}

// ---------------------------------------------------------------------------------------------
// Cached evaluation

HeadCache make_head_cache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const Geometry& geometry, const AttentionOptions& options) {
  Problem p = make_problem(q, k, geometry, options, Mode::kKernel, v);
  const Shape& s = p.shape;
  const int64_t bq = geometry.block_q, bk = geometry.block_k, D = s.head_dim;
  BlockData qd = block_data(q.to(at::kFloat).contiguous(), bq, Int8Scale::kPerRow);
  BlockData kd = block_data(smooth_k(k).contiguous(), bk, Int8Scale::kPerBlock);

  HeadCache c;
  c.geometry = geometry;
  c.options = options;
  c.batch = s.batch;
  c.heads = s.heads;
  c.kv_heads = s.kv_heads;
  c.nq_tokens = s.nq_tokens;
  c.nk_tokens = s.nk_tokens;
  c.head_dim = D;
  c.q_stats = qd.stats;
  c.k_stats = kd.stats;

  // All block pairs at once, [B, H, nq, nk, bq, bk], through the same on-the-fly path (exact
  // integers in fp32 and the same factor products, hence bit-identical to the uncached call).
  RowIndex idx = row_index(p);
  set_logits_from_blocks(p, qd.padded.reshape({-1, bq, D}), kd.padded.reshape({-1, bk, D}),
                         qd.stats.scale.reshape({-1, bq}), kd.stats.scale.reshape({-1}), idx);
  const int64_t R = s.batch * s.heads * p.nq;
  c.logits = at::empty({s.batch, s.heads, p.nq, p.nk, bq, bk}, at::kFloat);
  at::Tensor flat = c.logits.view({R, p.nk, bq, bk});
  at::Tensor rows = at::arange(R, at::kLong);
  for (int64_t j = 0; j < p.nk; ++j) {
    flat.select(1, j).copy_(p.logits(rows, at::full({R}, j, at::kLong)));
  }
  prepare_v(p, v);
  c.v_pv = p.v_pv.view({s.batch, s.kv_heads, p.nk, bk, D});
  c.v_scale = p.v_scale.defined() ? p.v_scale : at::ones({s.batch, s.kv_heads, D}, at::kFloat);
  c.half_dtype = p.half_dtype;
  return c;
}

at::Tensor predict_block_mask(const HeadCache& cache, const Thresholds& thresholds) {
  return predict_block_mask(cache.q_stats, cache.k_stats, cache.nq_tokens, cache.nk_tokens,
                            cache.geometry, thresholds, cache.options);
}

SparseResult sparse_attention(const HeadCache& c, const at::Tensor& mask,
                              const std::vector<float>& lambda) {
  Problem p;
  p.shape = Shape{c.batch, c.heads, c.kv_heads, c.nq_tokens, c.nk_tokens, c.head_dim};
  p.geometry = c.geometry;
  p.options = c.options;
  p.mode = Mode::kKernel;
  p.nq = c.logits.size(2);
  p.nk = c.logits.size(3);
  p.sm_scale_log2 = softmax_scale_log2(c.options, c.head_dim);
  const int64_t bq = c.geometry.block_q, bk = c.geometry.block_k;
  at::Tensor flat = c.logits.view({-1, bq, bk});
  const int64_t nk = p.nk;
  p.logits = [flat, nk](const at::Tensor& r, const at::Tensor& j) {
    return flat.index_select(0, r * nk + j);
  };
  p.v_pv = c.v_pv.view({-1, bk, c.head_dim});
  if (c.geometry.pv == PvNumerics::kFp8) p.v_scale = c.v_scale;
  p.half_dtype = c.half_dtype;
  return run(p, mask, lambda);
}

}  // namespace sparge::ref
