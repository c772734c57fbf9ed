// a / b rounded to nearest exactly as the IEEE division, for a divisor shared by many dividends:
// the V pass divides every value of a channel by that channel's scale (numerics contract), and a
// division per value cost ~10 instructions (reciprocal, refinement, range check, slow-path
// branch). Plain header, host and device, so the CPU tests check it against the division itself
// (tests/cpu/divide_rn_test.cpp).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define SPARGE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SPARGE_HOST_DEVICE inline
#endif

namespace sparge::kernels {

// y = RN(1 / b) once per divisor; per dividend q = RN(a y), which is within an ulp of a / b, the
// exact residual r = a - b q by an FMA, and RN(q + r y) = RN(a / b) (Markstein; Handbook of
// Floating-Point Arithmetic, section 4.9). The residual is kept as t = b q - a = -r, so that
// a = -0 gives q - t y = -0 - (+0) y = -0 (q + r y would give +0), and both negations are FFMA
// operand modifiers. Where the theorem's conditions fail (a subnormal dividend, whose residual is
// not exact; a divisor with an all-ones significand, where RN(1 / b) is not close enough) the
// result can be an ulp off. For the V pass's domain, b = RN(amax / 448) and |a| <= amax with a
// and amax fp16 or bf16 values, the e4m3 rounding of the result is the division's in every case
// (fp16: the fp32 quotient itself is): checked exhaustively, and in part by the CPU test. A b
// below 2^-100 (bf16 channels only) is scaled with its dividends by 2^64 first, which keeps the
// quotient exact and 1 / b and a y normal.
struct DivideRn {
  float b, y, sc;
  SPARGE_HOST_DEVICE explicit DivideRn(float divisor) {
    sc = divisor < 0x1p-100f ? 0x1p64f : 1.f;
    b = divisor * sc;
    y = 1.f / b;
  }
  SPARGE_HOST_DEVICE float operator()(float a) const {
    a *= sc;
    const float q = a * y;
    const float t = fmaf(q, b, -a);
    return fmaf(-t, y, q);
  }
};

}  // namespace sparge::kernels

#undef SPARGE_HOST_DEVICE
