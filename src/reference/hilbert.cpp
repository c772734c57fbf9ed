// Generalised 3-D Hilbert curve (see hilbert.hpp).
//
// A sub-cuboid is described by its start corner p and three edge vectors a (the "major" axis the
// curve must end along: it starts at p and ends at the corner p + a - unit(a)), b and c (the two
// other axes). The recursion halves the long axes, rounding the halves to even lengths where the
// axis is longer than 2 (even-sized pieces keep the curve's parity so pieces join by unit steps),
// and chooses one of three splits:
//   * a is much longer than b and c: two halves along a;
//   * b much longer than c: three pieces (b-half, the rest with a full, b-half back);
//   * c much longer than b: the same with the roles of b and c swapped;
//   * otherwise: five pieces splitting a, b and c (the 3-D Hilbert octant pattern, merged).
// Each piece is traversed with rotated axes so that it ends next to where the following piece
// starts. Degenerate pieces (a line) are walked directly.
#include "reference/hilbert.hpp"

#include <cstdlib>

#include "common/error.hpp"

namespace sparge::ref {
namespace {

struct V3 {
  int x = 0, y = 0, z = 0;
  V3 operator+(const V3& o) const { return {x + o.x, y + o.y, z + o.z}; }
  V3 operator-(const V3& o) const { return {x - o.x, y - o.y, z - o.z}; }
  V3 operator-() const { return {-x, -y, -z}; }
  V3 half() const { return {x / 2, y / 2, z / 2}; }   // truncation toward zero, per component
  int length() const { return std::abs(x + y + z); }  // axis vectors have one non-zero entry
  V3 unit() const { return {(x > 0) - (x < 0), (y > 0) - (y < 0), (z > 0) - (z < 0)}; }
};

class Walker {
 public:
  explicit Walker(std::vector<std::array<int, 3>>& out) : out_(out) {}

  void walk(V3 p, V3 a, V3 b, V3 c) {
    const int w = a.length(), h = b.length(), d = c.length();
    const V3 da = a.unit(), db = b.unit(), dc = c.unit();
    if (h == 1 && d == 1) return line(p, da, w);
    if (w == 1 && d == 1) return line(p, db, h);
    if (w == 1 && h == 1) return line(p, dc, d);

    V3 a2 = a.half(), b2 = b.half(), c2 = c.half();
    if (a2.length() % 2 != 0 && w > 2) a2 = a2 + da;
    if (b2.length() % 2 != 0 && h > 2) b2 = b2 + db;
    if (c2.length() % 2 != 0 && d > 2) c2 = c2 + dc;

    if (2 * w > 3 * h && 2 * w > 3 * d) {
      // Long along a: two halves, each ending along a.
      walk(p, a2, b, c);
      walk(p + a2, a - a2, b, c);
    } else if (3 * h > 4 * d) {
      // Long along b, flat in c: up b (first half), across a, back down b.
      walk(p, b2, c, a2);
      walk(p + b2, a, b - b2, c);
      walk(p + (a - da) + (b2 - db), -b2, c, -(a - a2));
    } else if (3 * d > 4 * h) {
      // Long along c, flat in b: the same with b and c exchanged.
      walk(p, c2, a2, b);
      walk(p + c2, a, b, c - c2);
      walk(p + (a - da) + (c2 - dc), -c2, -(a - a2), b);
    } else {
      // Comparable sizes: five pieces covering the split of all three axes.
      walk(p, b2, c2, a2);
      walk(p + b2, c, a2, b - b2);
      walk(p + (b2 - db) + (c - dc), a, -b2, -(c - c2));
      walk(p + (a - da) + b2 + (c - dc), -c, -(a - a2), b - b2);
      walk(p + (a - da) + (b2 - db), -b2, c2, -(a - a2));
    }
  }

 private:
  void line(V3 p, V3 step, int n) {
    for (int i = 0; i < n; ++i, p = p + step) out_.push_back({p.z, p.y, p.x});
  }
  std::vector<std::array<int, 3>>& out_;
};

}  // namespace

std::vector<std::array<int, 3>> hilbert_curve(int T, int H, int W) {
  if (T < 1 || H < 1 || W < 1) {
    fail(ExitCode::kUsage, "hilbert curve: grid {}x{}x{} (T x H x W) needs every size >= 1", T, H,
         W);
  }
  std::vector<std::array<int, 3>> out;
  out.reserve(static_cast<size_t>(T) * H * W);
  Walker walker(out);
  // x = w (width W), y = h (height H), z = t (depth T); the major axis is the longest one.
  const V3 origin{0, 0, 0}, ax{W, 0, 0}, ay{0, H, 0}, az{0, 0, T};
  if (W >= H && W >= T) {
    walker.walk(origin, ax, ay, az);
  } else if (H >= W && H >= T) {
    walker.walk(origin, ay, ax, az);
  } else {
    walker.walk(origin, az, ax, ay);
  }
  SPARGE_ASSERT(out.size() == static_cast<size_t>(T) * H * W, "hilbert curve {}x{}x{}: {} points",
                T, H, W, out.size());
  return out;
}

std::vector<int64_t> hilbert_permutation(int T, int H, int W, int text_prefix, int text_suffix) {
  if (text_prefix < 0 || text_suffix < 0) {
    fail(ExitCode::kUsage, "hilbert permutation: text prefix {} / suffix {} must be >= 0",
         text_prefix, text_suffix);
  }
  const auto curve = hilbert_curve(T, H, W);
  std::vector<int64_t> perm;
  perm.reserve(text_prefix + curve.size() + text_suffix);
  for (int64_t i = 0; i < text_prefix; ++i) perm.push_back(i);
  for (const auto& [t, h, w] : curve) {
    perm.push_back(text_prefix + (static_cast<int64_t>(t) * H + h) * W + w);
  }
  const int64_t visual_end = text_prefix + static_cast<int64_t>(curve.size());
  for (int64_t i = 0; i < text_suffix; ++i) perm.push_back(visual_end + i);
  return perm;
}

std::vector<int64_t> inverse_permutation(const std::vector<int64_t>& perm) {
  const int64_t n = static_cast<int64_t>(perm.size());
  std::vector<int64_t> inv(perm.size(), -1);
  for (int64_t k = 0; k < n; ++k) {
    if (perm[k] < 0 || perm[k] >= n || inv[perm[k]] != -1) {
      fail(ExitCode::kUsage, "permutation of {} tokens: entry {} = {} is out of range or repeated",
           n, k, perm[k]);
    }
    inv[perm[k]] = k;
  }
  return inv;
}

namespace {
void check_sequence(const at::Tensor& x, const std::vector<int64_t>& perm) {
  if (x.dim() != 4 || x.size(2) != static_cast<int64_t>(perm.size())) {
    fail(ExitCode::kUsage, "token permutation of {} tokens applied to a tensor of shape {}",
         perm.size(), fmt::join(x.sizes(), "x"));
  }
}
}  // namespace

at::Tensor apply_permutation(const at::Tensor& x, const std::vector<int64_t>& perm) {
  check_sequence(x, perm);
  return x.index_select(2, at::tensor(perm, at::TensorOptions(at::kLong).device(x.device())));
}

at::Tensor invert_permutation(const at::Tensor& o_perm, const std::vector<int64_t>& perm) {
  check_sequence(o_perm, perm);
  return o_perm.index_select(2, at::tensor(inverse_permutation(perm),
                                           at::TensorOptions(at::kLong).device(o_perm.device())));
}

}  // namespace sparge::ref
