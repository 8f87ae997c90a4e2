// The kernel bodies, written once against a few vector primitives. Each isa_*.cpp defines a primitives struct
// P and includes this file: isa_portable.cpp with one float per "vector" (plain C++), isa_avx2.cpp with 8-lane
// __m256, isa_avx512.cpp with 16-lane __m512. P provides:
//   V, L (lanes), kBatchTile (activation rows per register tile of 2 compressed-weight rows when M > 1),
//   kDenseTile (float32 / bf16 weight rows x activation rows per register tile when M > 1),
//   zero(), set1(f), loadu(const float*), store(float*, V), store(uint16_t*, V) (bf16, round to nearest even),
//   add(a, b), mul(a, b), fmadd(a, b, c) = a * b + c, hsum(V), hsum4(a, b, c, d, float out[4]),
//   from_bf16(const uint16_t*), from_i8(const int8_t*), from_nibbles(const uint8_t*, bool hi) -> L floats,
//   prefetch(const void*) (a hint; may do nothing);
//   for INT8_A16: I (L int32 lanes), kA16 (int16 activations per step), izero(), load_i16(const int16_t*),
//   widen_i8(const int8_t*) (kA16 codes as int16), madd(w, x, acc) = acc + the pairwise sums of w * x,
//   to_float(I) -> V.
// Everything here has internal linkage (see kernels.h) and uses no standard library templates.

#pragma once

#include "kernels.h"

namespace rwkv7 {
namespace {

template <int64_t FMT>
constexpr int64_t kGroup = FMT == Q4 ? kGroupQ4 : kGroupInt8;  // INT8 / Q4 scale groups
template <int64_t FMT>
constexpr int64_t row_bytes(int64_t K) {
  return FMT == F32 ? 4 * K : FMT == BF16 ? 2 * K : FMT == INT8 || FMT == INT8_A16 ? K : K / 2;
}
// The activations' element type: float, or the int16 codes of INT8_A16.
template <int64_t FMT>
struct Act {
  using T = float;
};
template <>
struct Act<INT8_A16> {
  using T = int16_t;
};

// Lanes [k, k + L) of an F32 / BF16 row.
template <class P, int64_t FMT>
inline typename P::V dense_w(const void* row, int64_t k) {
  if constexpr (FMT == F32) {
    return P::loadu(static_cast<const float*>(row) + k);
  } else {
    return P::from_bf16(static_cast<const uint16_t*>(row) + k);
  }
}

// Lanes [j, j + L) of scale group g of an INT8 / Q4 row, as unscaled codes; j is a multiple of L.
template <class P, int64_t FMT>
inline typename P::V codes(const void* row, int64_t g, int64_t j) {
  if constexpr (FMT == INT8) {
    return P::from_i8(static_cast<const int8_t*>(row) + g * kGroupInt8 + j);
  } else {
    return P::from_nibbles(static_cast<const uint8_t*>(row) + g * (kGroupQ4 / 2) + (j & 15), j >= 16);
  }
}

// sum over groups g of minimum[g] * (sum of x over group g): the Q4 minimums' share of a dot product
template <class P>
inline float min_term(const uint16_t* mins, const float* xs, int64_t NG) {
  typename P::V acc = P::zero();
  int64_t g = 0;
  for (; g + P::L <= NG; g += P::L) acc = P::fmadd(P::from_bf16(mins + g), P::loadu(xs + g), acc);
  float t = P::hsum(acc);
  for (; g < NG; ++g) t += bf16_to_f32(mins[g]) * xs[g];
  return t;
}

// R output rows x MB activation rows with the accumulators in registers. The R rows are n, n + stride, ...:
// R far-apart sequential streams through the matrix (see rows_streams). INT8 / Q4: per scale group, the dot
// product of the codes with x is scaled once (w = q * s), and the Q4 minimums come from per-group sums of x.
// `pf` > 0: each row is also prefetched pf bytes ahead of where it is read (a candidate the measurement may pick
// where hardware prefetching alone falls short; 0 on most CPUs).
template <class P, int64_t FMT, int R, int MB>
void tile(const Packed& p, const typename Act<FMT>::T* x, const float* xs, float* y, int64_t N, int64_t n,
          int64_t stride, int64_t pf) {
  using V = typename P::V;
  constexpr int64_t L = P::L;
  const int64_t K = p.K;
  const char* row[R];
  for (int r = 0; r < R; ++r) row[r] = static_cast<const char*>(p.w) + (n + r * stride) * row_bytes<FMT>(K);
  V acc[R][MB];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m] = P::zero();
  if constexpr (FMT == F32 || FMT == BF16) {
    constexpr int64_t kBytes = FMT == F32 ? 4 : 2;
    for (int64_t k = 0; k < K; k += L) {
      if (pf)
        for (int r = 0; r < R; ++r) P::prefetch(row[r] + k * kBytes + pf);
      V xv[MB];
      for (int m = 0; m < MB; ++m) xv[m] = P::loadu(x + m * K + k);
      for (int r = 0; r < R; ++r) {
        const V w = dense_w<P, FMT>(row[r], k);
        for (int m = 0; m < MB; ++m) acc[r][m] = P::fmadd(w, xv[m], acc[r][m]);
      }
    }
  } else if constexpr (FMT == INT8_A16) {
    using I = typename P::I;
    constexpr int64_t G = kGroupInt8;
    const int64_t NG = K / G;
    for (int64_t g = 0; g < NG; ++g) {
      if (pf)
        for (int r = 0; r < R; ++r) P::prefetch(row[r] + g * G + pf);
      I part[R][MB];
      for (int r = 0; r < R; ++r)
        for (int m = 0; m < MB; ++m) part[r][m] = P::izero();
      for (int64_t j = 0; j < G; j += P::kA16) {
        I xv[MB];
        for (int m = 0; m < MB; ++m) xv[m] = P::load_i16(x + m * K + g * G + j);
        for (int r = 0; r < R; ++r) {
          const I w = P::widen_i8(reinterpret_cast<const int8_t*>(row[r]) + g * G + j);
          for (int m = 0; m < MB; ++m) part[r][m] = P::madd(w, xv[m], part[r][m]);
        }
      }
      for (int r = 0; r < R; ++r) {
        const float s = bf16_to_f32(p.scale[(n + r * stride) * NG + g]);
        for (int m = 0; m < MB; ++m) acc[r][m] = P::fmadd(P::to_float(part[r][m]), P::set1(s * xs[m * NG + g]), acc[r][m]);
      }
    }
  } else {
    constexpr int64_t G = kGroup<FMT>;
    const int64_t NG = K / G;
    for (int64_t g = 0; g < NG; ++g) {
      if (pf)
        for (int r = 0; r < R; ++r) P::prefetch(row[r] + g * row_bytes<FMT>(G) + pf);
      V part[R][MB];
      for (int r = 0; r < R; ++r)
        for (int m = 0; m < MB; ++m) part[r][m] = P::zero();
      for (int64_t j = 0; j < G; j += L) {
        V xv[MB];
        for (int m = 0; m < MB; ++m) xv[m] = P::loadu(x + m * K + g * G + j);
        for (int r = 0; r < R; ++r) {
          const V w = codes<P, FMT>(row[r], g, j);
          for (int m = 0; m < MB; ++m) part[r][m] = P::fmadd(w, xv[m], part[r][m]);
        }
      }
      for (int r = 0; r < R; ++r) {
        const V s = P::set1(bf16_to_f32(p.scale[(n + r * stride) * NG + g]));
        for (int m = 0; m < MB; ++m) acc[r][m] = P::fmadd(part[r][m], s, acc[r][m]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) {
      const int64_t o = n + r * stride;
      float out = P::hsum(acc[r][m]);
      if constexpr (FMT == Q4) out += min_term<P>(p.mins + o * (K / kGroupQ4), xs + m * (K / kGroupQ4), K / kGroupQ4);
      y[m * N + o] = out;
    }
}

// The last `rows` (< MB) activation rows in one tile of that height: a row at a time would read each weight
// from L1 once per row, at a quarter of the tile's FMAs per load.
template <class P, int64_t FMT, int R, int MB>
void tile_rest(int64_t rows, const Packed& p, const typename Act<FMT>::T* x, const float* xs, float* y, int64_t N,
               int64_t n, int64_t stride, int64_t pf) {
  if constexpr (MB > 1) {
    if (rows < MB) return tile_rest<P, FMT, R, MB - 1>(rows, p, x, xs, y, N, n, stride, pf);
  }
  tile<P, FMT, R, MB>(p, x, xs, y, N, n, stride, pf);
}

// Output rows [n0, n1) for all M activation rows, each weight read from memory once. The rows are split into
// R contiguous parts walked in lockstep: R long sequential streams keep more of the core's hardware
// prefetchers busy than one, which is what bounds a GEMV; how many streams is fastest differs between CPUs
// (model/kernel_choice.py measures it). Activation rows go MB at a time while the R weight rows are in L1.
template <class P, int64_t FMT, int R, int MB>
void rows_streams(const Packed& p, int64_t pf, const typename Act<FMT>::T* x, const float* xs, int64_t M, float* y,
                  int64_t N, int64_t n0, int64_t n1) {
  const int64_t K = p.K, NG = K / kGroup<FMT>, len = (n1 - n0) / R;  // xs: NG values per activation row
  for (int64_t i = 0; i < len; ++i) {
    int64_t m = 0;
    for (; m + MB <= M; m += MB) tile<P, FMT, R, MB>(p, x + m * K, xs + m * NG, y + m * N, N, n0 + i, len, pf);
    if (m < M) tile_rest<P, FMT, R, MB - 1>(M - m, p, x + m * K, xs + m * NG, y + m * N, N, n0 + i, len, pf);
  }
  for (int64_t n = n0 + R * len; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) tile<P, FMT, 1, 1>(p, x + m * K, xs + m * NG, y + m * N, N, n, 0, pf);
}

template <class P, int64_t FMT>
void gemv_rows_of(const Packed& p, int64_t streams, int64_t pf, const void* x_, const float* xs, int64_t M,
                  float* y, int64_t N, int64_t n0, int64_t n1) {
  const auto* x = static_cast<const typename Act<FMT>::T*>(x_);
  // Several activation rows (batched decode, scoring). Float32 / bf16: up to 4 rows reading the weights bounds
  // the product (2 streams x 4 rows); with more the FMAs do, and the larger dense tile does more of them per
  // load. A compressed format also keeps a partial sum per scale group: 2 streams x kBatchTile rows.
  if (M > 1) {
    if constexpr (FMT == F32 || FMT == BF16) {
      if (M > 4) return rows_streams<P, FMT, P::kDenseTile[0], P::kDenseTile[1]>(p, pf, x, xs, M, y, N, n0, n1);
      return rows_streams<P, FMT, 2, 4>(p, pf, x, xs, M, y, N, n0, n1);
    }
    return rows_streams<P, FMT, 2, P::kBatchTile>(p, pf, x, xs, M, y, N, n0, n1);
  }
  switch (streams) {
    case 1: return rows_streams<P, FMT, 1, 1>(p, pf, x, xs, M, y, N, n0, n1);
    case 2: return rows_streams<P, FMT, 2, 1>(p, pf, x, xs, M, y, N, n0, n1);
    case 8: return rows_streams<P, FMT, 8, 1>(p, pf, x, xs, M, y, N, n0, n1);
    default: return rows_streams<P, FMT, 4, 1>(p, pf, x, xs, M, y, N, n0, n1);
  }
}

template <class P>
void gemv_rows(const Packed& p, int64_t fmt, int64_t streams, int64_t pf, const void* x, const float* xs, int64_t M,
               float* y, int64_t N, int64_t n0, int64_t n1) {
  switch (fmt) {
    case F32: return gemv_rows_of<P, F32>(p, streams, pf, x, xs, M, y, N, n0, n1);
    case BF16: return gemv_rows_of<P, BF16>(p, streams, pf, x, xs, M, y, N, n0, n1);
    case INT8: return gemv_rows_of<P, INT8>(p, streams, pf, x, xs, M, y, N, n0, n1);
    case INT8_A16: return gemv_rows_of<P, INT8_A16>(p, streams, pf, x, xs, M, y, N, n0, n1);
    default: return gemv_rows_of<P, Q4>(p, streams, pf, x, xs, M, y, N, n0, n1);
  }
}

template <class P, int64_t FMT, typename Out>
void dequant_rows_of(const Packed& p, Out* out, int64_t base, int64_t n0, int64_t n1) {
  using V = typename P::V;
  const int64_t K = p.K;
  for (int64_t n = n0; n < n1; ++n) {
    const void* row = static_cast<const char*>(p.w) + n * row_bytes<FMT>(K);
    Out* dst = out + (n - base) * K;
    if constexpr (FMT == F32 || FMT == BF16) {
      for (int64_t k = 0; k < K; k += P::L) P::store(dst + k, dense_w<P, FMT>(row, k));
    } else {
      constexpr int64_t G = kGroup<FMT>;
      const int64_t NG = K / G;
      for (int64_t g = 0; g < NG; ++g) {
        const V s = P::set1(bf16_to_f32(p.scale[n * NG + g]));
        const V mn = FMT == Q4 ? P::set1(bf16_to_f32(p.mins[n * NG + g])) : P::zero();
        for (int64_t j = 0; j < G; j += P::L) P::store(dst + g * G + j, P::fmadd(codes<P, FMT>(row, g, j), s, mn));
      }
    }
  }
}

template <class P, typename Out>
void dequant_rows(const Packed& p, int64_t fmt, Out* out, int64_t base, int64_t n0, int64_t n1) {
  switch (fmt) {
    case F32: return dequant_rows_of<P, F32>(p, out, base, n0, n1);
    case BF16: return dequant_rows_of<P, BF16>(p, out, base, n0, n1);
    case INT8: return dequant_rows_of<P, INT8>(p, out, base, n0, n1);
    default: return dequant_rows_of<P, Q4>(p, out, base, n0, n1);
  }
}

// The Q sums of v[0..Q) into out (Q = 1 or 4: four at once share the shuffles).
template <class P, int Q>
inline void hsums(const typename P::V* v, float* out) {
  if constexpr (Q == 4)
    P::hsum4(v[0], v[1], v[2], v[3], out);
  else
    for (int q = 0; q < Q; ++q) out[q] = P::hsum(v[q]);
}

// Rows [i, i + Q) of one WKV head's state update and read-out (see IsaKernels::wkv_rows). Rows are independent:
// Q of them interleaved keep the core busy while each waits on its two reductions. NC: the head size when known
// at compile time (64, every released model's), so the loops unroll; 0: N.
template <class P, int Q, int64_t NC>
void wkv_row_group(float* S, const float* kk, const float* decay, const float* b, const float* kmod, const float* r,
                   const float* v, float* y, int64_t n_, int64_t i) {
  using V = typename P::V;
  const int64_t N = NC ? NC : n_, body = N - N % P::L;
  float* row[Q];
  V dot[Q], acc[Q];
  for (int q = 0; q < Q; ++q) {
    row[q] = S + (i + q) * N;
    dot[q] = acc[q] = P::zero();
  }
  for (int64_t j = 0; j < body; j += P::L) {
    const V kj = P::loadu(kk + j);
    for (int q = 0; q < Q; ++q) dot[q] = P::fmadd(P::loadu(row[q] + j), kj, dot[q]);
  }
  float sa[Q], out[Q];
  hsums<P, Q>(dot, sa);
  V vsa[Q], vi[Q];
  for (int q = 0; q < Q; ++q) {
    sa[q] = -sa[q];
    for (int64_t j = body; j < N; ++j) sa[q] -= row[q][j] * kk[j];
    vsa[q] = P::set1(sa[q]);
    vi[q] = P::set1(v[i + q]);
  }
  for (int64_t j = 0; j < body; j += P::L) {
    const V dj = P::loadu(decay + j), bj = P::loadu(b + j), kj = P::loadu(kmod + j), rj = P::loadu(r + j);
    for (int q = 0; q < Q; ++q) {
      const V s = P::fmadd(P::loadu(row[q] + j), dj, P::fmadd(vsa[q], bj, P::mul(vi[q], kj)));
      P::store(row[q] + j, s);
      acc[q] = P::fmadd(s, rj, acc[q]);
    }
  }
  hsums<P, Q>(acc, out);
  for (int q = 0; q < Q; ++q) {
    for (int64_t j = body; j < N; ++j) {
      row[q][j] = row[q][j] * decay[j] + (sa[q] * b[j] + v[i + q] * kmod[j]);
      out[q] += row[q][j] * r[j];
    }
    y[i + q] = out[q];
  }
}

// The state update and read-out of one WKV head (see IsaKernels::wkv_rows).
template <class P>
void wkv_rows(float* S, const float* kk, const float* decay, const float* b, const float* kmod, const float* r,
              const float* v, float* y, int64_t N) {
  if (N == 64) {
    for (int64_t i = 0; i < N; i += 4) wkv_row_group<P, 4, 64>(S, kk, decay, b, kmod, r, v, y, N, i);
    return;
  }
  int64_t i = 0;
  for (; i + 4 <= N; i += 4) wkv_row_group<P, 4, 0>(S, kk, decay, b, kmod, r, v, y, N, i);
  for (; i < N; ++i) wkv_row_group<P, 1, 0>(S, kk, decay, b, kmod, r, v, y, N, i);
}

// One token of one TimeMix head after its projections (see IsaKernels::wkv_token).
template <class P>
void wkv_token(float* S, const float* r, const float* decay, const float* k, const float* v, const float* iclr,
               const float* g, const float* k_k, const float* k_a, const float* r_k, const float* ln_w,
               const float* ln_b, float eps, float* y, int64_t N) {
  using V = typename P::V;
  const int64_t body = N - N % P::L;
  const V one = P::set1(1.f), minus_one = P::set1(-1.f);
  float kk[64], kmod[64], b[64];
  V acc = P::zero();
  for (int64_t j = 0; j < body; j += P::L) {
    const V t = P::mul(P::loadu(k + j), P::loadu(k_k + j));
    P::store(kk + j, t);
    acc = P::fmadd(t, t, acc);
  }
  float norm = P::hsum(acc);
  for (int64_t j = body; j < N; ++j) {
    kk[j] = k[j] * k_k[j];
    norm += kk[j] * kk[j];
  }
  const float len = __builtin_sqrtf(norm);  // a builtin, not <cmath>: see the top of kernels.h
  const float inv = 1.f / (len > 1e-12f ? len : 1e-12f);  // F.normalize's eps
  const V vinv = P::set1(inv);
  acc = P::zero();
  for (int64_t j = 0; j < body; j += P::L) {  // kmod = k * (1 + (iclr - 1) * k_a) = k * (iclr * k_a + 1 - k_a)
    const V kn = P::mul(P::loadu(kk + j), vinv), ic = P::loadu(iclr + j), ka = P::loadu(k_a + j);
    const V km = P::mul(P::loadu(k + j), P::fmadd(ic, ka, P::fmadd(ka, minus_one, one)));
    P::store(kk + j, kn);
    P::store(kmod + j, km);
    P::store(b + j, P::mul(kn, ic));
    acc = P::fmadd(P::mul(P::loadu(r + j), km), P::loadu(r_k + j), acc);
  }
  float bonus = P::hsum(acc);
  for (int64_t j = body; j < N; ++j) {
    kk[j] *= inv;
    kmod[j] = k[j] * (1.f + (iclr[j] - 1.f) * k_a[j]);
    b[j] = kk[j] * iclr[j];
    bonus += r[j] * kmod[j] * r_k[j];
  }
  wkv_rows<P>(S, kk, decay, b, kmod, r, v, y, N);
  acc = P::zero();  // GroupNorm of y over the head's N channels
  for (int64_t i = 0; i < body; i += P::L) acc = P::add(acc, P::loadu(y + i));
  float mean = P::hsum(acc);
  for (int64_t i = body; i < N; ++i) mean += y[i];
  mean /= float(N);
  const V vmean = P::set1(-mean);
  acc = P::zero();
  for (int64_t i = 0; i < body; i += P::L) {
    const V c = P::add(P::loadu(y + i), vmean);
    acc = P::fmadd(c, c, acc);
  }
  float var = P::hsum(acc);
  for (int64_t i = body; i < N; ++i) var += (y[i] - mean) * (y[i] - mean);
  const float rstd = 1.f / __builtin_sqrtf(var / float(N) + eps);
  const V vrstd = P::set1(rstd), vbonus = P::set1(bonus);
  for (int64_t i = 0; i < body; i += P::L) {  // ((y - mean) * rstd * ln_w + ln_b + bonus * v) * g
    const V c = P::mul(P::add(P::loadu(y + i), vmean), vrstd);
    const V o = P::fmadd(vbonus, P::loadu(v + i), P::fmadd(c, P::loadu(ln_w + i), P::loadu(ln_b + i)));
    P::store(y + i, P::mul(o, P::loadu(g + i)));
  }
  for (int64_t i = body; i < N; ++i) y[i] = ((y[i] - mean) * rstd * ln_w[i] + ln_b[i] + bonus * v[i]) * g[i];
}

// y [N] = x [K] @ W [K, N], W float32 or bf16 (FMT), rows of W `ld` elements apart: one pass over W, y
// accumulated in place (in L1).
template <class P, int64_t FMT>
void vecmat_of(const float* x, const void* W, int64_t K, int64_t N, int64_t ld, float* y) {
  const int64_t body = N - N % P::L;
  for (int64_t n = 0; n < N; ++n) y[n] = 0.f;
  for (int64_t k = 0; k < K; ++k) {
    const typename P::V xk = P::set1(x[k]);
    const char* w = static_cast<const char*>(W) + k * row_bytes<FMT>(ld);
    for (int64_t n = 0; n < body; n += P::L) P::store(y + n, P::fmadd(xk, dense_w<P, FMT>(w, n), P::loadu(y + n)));
    for (int64_t n = body; n < N; ++n) {
      const float wn = FMT == F32 ? reinterpret_cast<const float*>(w)[n] : bf16_to_f32(reinterpret_cast<const uint16_t*>(w)[n]);
      y[n] += x[k] * wn;
    }
  }
}

template <class P>
void vecmat(const float* x, const void* W, int64_t fmt, int64_t K, int64_t N, int64_t ld, float* y) {
  if (fmt == BF16) return vecmat_of<P, BF16>(x, W, K, N, ld, y);
  vecmat_of<P, F32>(x, W, K, N, ld, y);
}

// The table an isa_*.cpp exports: `extern const IsaKernels kAvx2Kernels = kernels_of<Avx2>();`
template <class P>
constexpr IsaKernels kernels_of() {
  return {&gemv_rows<P>, &dequant_rows<P, float>, &dequant_rows<P, uint16_t>, &wkv_rows<P>, &wkv_token<P>, &vecmat<P>};
}

}  // namespace
}  // namespace rwkv7
