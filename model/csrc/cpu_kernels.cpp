// CPU kernels for RWKV-7 token-by-token decoding (see model/cpu_kernels.py for why they exist).
//
//   gemv(x [M, K] f32, weight, scales, mins, fmt) -> [M, N] f32    y = x @ W^T, W stored compressed
//   dequantize(weight, scales, mins, fmt, K, dtype) -> [N, K]      W itself, float32 or bfloat16
//   linear(x [M, K], weight, scales, mins, fmt, block) -> [M, N]   x @ W^T for prefill, a block of W at a time
//   shift_mix_(x, x_prev, ln_w, ln_b, eps, mixes) -> [n, B, C]     LayerNorm + token-shift interpolations
//   time_mix_(state, mixed, r, k, v, v_first, params, eps) -> [B, C]   TimeMix after r/k/v, WKV state in place
//
// Weight formats (fmt): 0 f32 [N, K]; 1 bf16 [N, K]; 2 int8 [N, K] with one bf16 scale per 64 weights of a
// row (w = q * s); 3 q4 [N, K / 2] bytes with a bf16 scale and minimum per 32 weights (w = q * s + m, q in
// 0..15; byte j of a group holds weight j in its low nibble and weight j + 16 in its high nibble).
// Decoding reads every weight once per token, so it is memory-bound: these formats move 2x, ~3.9x and ~6.4x
// fewer bytes than f32. Activations and accumulation stay f32.
//
// One source, three code paths chosen at run time: AVX-512, AVX2 (+FMA, F16C) and portable C++.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define RWKV7_X86 1
#define RWKV7_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RWKV7_CLONES
#endif

namespace {

enum Format : int64_t { F32 = 0, BF16 = 1, INT8 = 2, Q4 = 3 };
constexpr int64_t kGroupInt8 = 64;
constexpr int64_t kGroupQ4 = 32;
// The SIMD loops walk rows in groups: the scale groups of int8 / q4, 64 weights for f32 / bf16.
template <int64_t FMT>
constexpr int64_t kGroup = FMT == Q4 ? kGroupQ4 : kGroupInt8;
template <int64_t FMT>
constexpr int64_t row_bytes(int64_t K) {
  return FMT == F32 ? 4 * K : FMT == BF16 ? 2 * K : FMT == INT8 ? K : K / 2;
}

// One compressed weight matrix as raw pointers: row n, columns [0, K).
struct Packed {
  const void* w;
  const uint16_t* scale;  // bf16 bits
  const uint16_t* mins;   // bf16 bits (q4)
  int64_t K;
};

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ------------------------------------------------------------------ portable reference path

template <int64_t FMT>
inline float weight_at(const Packed& p, int64_t n, int64_t k) {
  if constexpr (FMT == F32) {
    return static_cast<const float*>(p.w)[n * p.K + k];
  } else if constexpr (FMT == BF16) {
    return bf16_to_f32(static_cast<const uint16_t*>(p.w)[n * p.K + k]);
  } else if constexpr (FMT == INT8) {
    const float s = bf16_to_f32(p.scale[n * (p.K / kGroupInt8) + k / kGroupInt8]);
    return float(static_cast<const int8_t*>(p.w)[n * p.K + k]) * s;
  } else {
    const int64_t g = n * (p.K / kGroupQ4) + k / kGroupQ4, j = k % kGroupQ4;
    const uint8_t byte = static_cast<const uint8_t*>(p.w)[g * (kGroupQ4 / 2) + (j & 15)];
    const int q = j < 16 ? (byte & 15) : (byte >> 4);
    return float(q) * bf16_to_f32(p.scale[g]) + bf16_to_f32(p.mins[g]);
  }
}

template <int64_t FMT>
void rows_scalar(const Packed& p, const float* x, const float*, int64_t M, float* y, int64_t N, int64_t n0,
                 int64_t n1) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0.f;
      for (int64_t k = 0; k < p.K; ++k) acc += x[m * p.K + k] * weight_at<FMT>(p, n, k);
      y[m * N + n] = acc;
    }
}

// sum over groups of minimum[g] * (sum of x over group g): the q4 offsets' share of a dot product
inline float min_term(const uint16_t* mins, const float* xs, int64_t NG) {
  float t = 0.f;
  for (int64_t g = 0; g < NG; ++g) t += bf16_to_f32(mins[g]) * xs[g];
  return t;
}

// f32 -> bf16 bits, rounded to nearest even like torch's conversion (finite values)
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline void store_scalar(float* out, float v) { *out = v; }
inline void store_scalar(uint16_t* out, float v) { *out = f32_to_bf16(v); }

// Rows [n0, n1) of W, row n written at out + (n - base) * K (Out: float, or uint16_t for bf16 bits).
template <int64_t FMT, typename Out>
void dequant_scalar(const Packed& p, Out* out, int64_t base, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t k = 0; k < p.K; ++k) store_scalar(out + (n - base) * p.K + k, weight_at<FMT>(p, n, k));
}

#ifdef RWKV7_X86
// ------------------------------------------------------------------ SIMD paths
// The kernel body is written once against a few vector primitives; AVX512 and AVX2 define them (each inside
// its own target attribute, so no instruction of one leaks into the other).

#define RWKV7_SIMD_KERNELS(NS, TARGET)                                                                          \
  namespace NS {                                                                                                 \
  /* lanes [j, j + L) of one group of a row, unscaled (int8 / q4 codes as floats); j is a multiple of L */        \
  template <int64_t FMT>                                                                                         \
  TARGET inline V raw_w(const void* row, int64_t g, int64_t j) {                                                \
    if constexpr (FMT == F32) {                                                                                  \
      return loadu(static_cast<const float*>(row) + g * kGroup<FMT> + j);                                        \
    } else if constexpr (FMT == BF16) {                                                                          \
      return from_bf16(static_cast<const uint16_t*>(row) + g * kGroup<FMT> + j);                                 \
    } else if constexpr (FMT == INT8) {                                                                          \
      return from_i8(static_cast<const int8_t*>(row) + g * kGroup<FMT> + j);                                     \
    } else {                                                                                                     \
      return from_nibbles(static_cast<const uint8_t*>(row) + g * (kGroup<FMT> / 2) + (j & 15), j >= 16);         \
    }                                                                                                            \
  }                                                                                                              \
  TARGET inline float min_term_simd(const uint16_t* mins, const float* xs, int64_t NG) {                       \
    V acc = zero();                                                                                              \
    int64_t g = 0;                                                                                               \
    for (; g + L <= NG; g += L) acc = fmadd(from_bf16(mins + g), loadu(xs + g), acc);                            \
    return hsum(acc) + min_term(mins + g, xs + g, NG - g);                                                       \
  }                                                                                                              \
  /* R output rows x MB activation rows, accumulators in registers; per group, the dot product of the codes */  \
  /* with x is scaled once (w = q * s), and the q4 minimums are added from per-group sums of x (xs). The R   */  \
  /* rows are n, n + stride, ...: R far-apart sequential streams through the matrix (see rows() below).     */  \
  template <int64_t FMT, int R, int MB>                                                                          \
  TARGET void tile(const Packed& p, const float* x, const float* xs, float* y, int64_t N, int64_t n,            \
                   int64_t stride) {                                                                             \
    constexpr int64_t G = kGroup<FMT>;                                                                           \
    const int64_t K = p.K, NG = K / G;                                                                           \
    const void* row[R];                                                                                          \
    for (int r = 0; r < R; ++r) row[r] = static_cast<const char*>(p.w) + (n + r * stride) * row_bytes<FMT>(K);   \
    V acc[R][MB];                                                                                                \
    for (int r = 0; r < R; ++r)                                                                                  \
      for (int m = 0; m < MB; ++m) acc[r][m] = zero();                                                           \
    for (int64_t g = 0; g < NG; ++g) {                                                                           \
      V part[R][MB];                                                                                             \
      for (int r = 0; r < R; ++r)                                                                                \
        for (int m = 0; m < MB; ++m) part[r][m] = zero();                                                        \
      for (int64_t j = 0; j < G; j += L) {                                                                       \
        V xv[MB];                                                                                                \
        for (int m = 0; m < MB; ++m) xv[m] = loadu(x + m * K + g * G + j);                                       \
        for (int r = 0; r < R; ++r) {                                                                            \
          const V w = raw_w<FMT>(row[r], g, j);                                                                  \
          for (int m = 0; m < MB; ++m) part[r][m] = fmadd(w, xv[m], part[r][m]);                                 \
        }                                                                                                        \
      }                                                                                                          \
      for (int r = 0; r < R; ++r) {                                                                              \
        if constexpr (FMT == INT8 || FMT == Q4) {                                                                \
          const V s = set1(bf16_to_f32(p.scale[(n + r * stride) * NG + g]));                                     \
          for (int m = 0; m < MB; ++m) acc[r][m] = fmadd(part[r][m], s, acc[r][m]);                              \
        } else {                                                                                                 \
          for (int m = 0; m < MB; ++m) acc[r][m] = add(part[r][m], acc[r][m]);                                   \
        }                                                                                                        \
      }                                                                                                          \
    }                                                                                                            \
    for (int r = 0; r < R; ++r)                                                                                  \
      for (int m = 0; m < MB; ++m) {                                                                             \
        const int64_t o = n + r * stride;                                                                        \
        float out = hsum(acc[r][m]);                                                                             \
        if constexpr (FMT == Q4) out += min_term_simd(p.mins + o * NG, xs + m * NG, NG);                         \
        y[m * N + o] = out;                                                                                      \
      }                                                                                                          \
  }                                                                                                              \
  /* Output rows [n0, n1) for all M activation rows, each weight read from memory once. The rows are split */   \
  /* into R contiguous parts walked in lockstep: R long sequential streams keep more of the core's hardware */   \
  /* prefetchers busy than one, which is what bounds a GEMV (1.5x faster than one stream or R adjacent rows */   \
  /* at M = 1 on Zen 4). Activation rows go MB at a time while the R weight rows are still in L1.           */   \
  template <int64_t FMT, int R, int MB>                                                                          \
  TARGET void rows_rm(const Packed& p, const float* x, const float* xs, int64_t M, float* y, int64_t N,          \
                      int64_t n0, int64_t n1) {                                                                  \
    const int64_t K = p.K, NG = K / kGroup<FMT>, len = (n1 - n0) / R;                                            \
    for (int64_t i = 0; i < len; ++i) {                                                                          \
      int64_t m = 0;                                                                                             \
      for (; m + MB <= M; m += MB) tile<FMT, R, MB>(p, x + m * K, xs + m * NG, y + m * N, N, n0 + i, len);       \
      for (; m < M; ++m) tile<FMT, R, 1>(p, x + m * K, xs + m * NG, y + m * N, N, n0 + i, len);                  \
    }                                                                                                            \
    for (int64_t n = n0 + R * len; n < n1; ++n)                                                                  \
      for (int64_t m = 0; m < M; ++m) tile<FMT, 1, 1>(p, x + m * K, xs + m * NG, y + m * N, N, n, 0);            \
  }                                                                                                              \
  template <int64_t FMT>                                                                                         \
  TARGET void rows(const Packed& p, const float* x, const float* xs, int64_t M, float* y, int64_t N, int64_t n0, \
                   int64_t n1) {                                                                                 \
    /* R * MB accumulators plus as many partial sums fit the register file (32 AVX-512, 16 AVX2 registers) */    \
    if (M == 1) return rows_rm<FMT, 4, 1>(p, x, xs, M, y, N, n0, n1);                                            \
    rows_rm<FMT, 2, kBatchTile>(p, x, xs, M, y, N, n0, n1);                                                      \
  }                                                                                                              \
  template <int64_t FMT, typename Out>                                                                           \
  TARGET void dequant(const Packed& p, Out* out, int64_t base, int64_t n0, int64_t n1) {                        \
    constexpr int64_t G = kGroup<FMT>;                                                                           \
    const int64_t NG = p.K / G;                                                                                  \
    for (int64_t n = n0; n < n1; ++n) {                                                                          \
      const void* row = static_cast<const char*>(p.w) + n * row_bytes<FMT>(p.K);                                 \
      Out* dst = out + (n - base) * p.K;                                                                         \
      for (int64_t g = 0; g < NG; ++g) {                                                                         \
        V s = set1(1.f), mn = zero();                                                                            \
        if constexpr (FMT == INT8 || FMT == Q4) s = set1(bf16_to_f32(p.scale[n * NG + g]));                      \
        if constexpr (FMT == Q4) mn = set1(bf16_to_f32(p.mins[n * NG + g]));                                     \
        for (int64_t j = 0; j < G; j += L) store(dst + g * G + j, fmadd(raw_w<FMT>(row, g, j), s, mn));          \
      }                                                                                                          \
    }                                                                                                            \
  }                                                                                                              \
  /* the state update and read-out of one WKV head, N a multiple of L (see wkv_rows_scalar) */                 \
  TARGET void wkv_rows(float* S, const float* kk, const float* decay, const float* b, const float* kmod,        \
                       const float* r, const float* v, float* y, int64_t N) {                                    \
    for (int64_t i = 0; i < N; ++i) {                                                                            \
      float* row = S + i * N;                                                                                    \
      V dot = zero();                                                                                            \
      for (int64_t j = 0; j < N; j += L) dot = fmadd(loadu(row + j), loadu(kk + j), dot);                        \
      const V sa = set1(-hsum(dot)), vi = set1(v[i]);                                                            \
      V acc = zero();                                                                                            \
      for (int64_t j = 0; j < N; j += L) {                                                                       \
        const V s = fmadd(loadu(row + j), loadu(decay + j), fmadd(sa, loadu(b + j), mul(vi, loadu(kmod + j)))); \
        store(row + j, s);                                                                                       \
        acc = fmadd(s, loadu(r + j), acc);                                                                       \
      }                                                                                                          \
      y[i] = hsum(acc);                                                                                          \
    }                                                                                                            \
  }                                                                                                              \
  }

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
namespace avx512_prims {
using V = __m512;
constexpr int64_t L = 16;
constexpr int kBatchTile = 4;
AVX512_TARGET inline V zero() { return _mm512_setzero_ps(); }
AVX512_TARGET inline V set1(float a) { return _mm512_set1_ps(a); }
AVX512_TARGET inline V loadu(const float* a) { return _mm512_loadu_ps(a); }
AVX512_TARGET inline void store(float* a, V v) { _mm512_storeu_ps(a, v); }
// as bf16 bits, rounded to nearest even (f32_to_bf16)
AVX512_TARGET inline void store(uint16_t* a, V v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(a), _mm512_cvtepi32_epi16(r));
}
AVX512_TARGET inline V add(V a, V b) { return _mm512_add_ps(a, b); }
AVX512_TARGET inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
AVX512_TARGET inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
AVX512_TARGET inline float hsum(V a) { return _mm512_reduce_add_ps(a); }
AVX512_TARGET inline V from_bf16(const uint16_t* a) {
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
AVX512_TARGET inline V from_i8(const int8_t* a) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))));
}
// 16 nibbles: the low (hi = false) or high halves of 16 bytes
AVX512_TARGET inline V from_nibbles(const uint8_t* a, bool hi) {
  __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
  if (hi) b = _mm_srli_epi16(b, 4);
  b = _mm_and_si128(b, _mm_set1_epi8(15));
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
}
}  // namespace avx512_prims

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
namespace avx2_prims {
using V = __m256;
constexpr int64_t L = 8;
constexpr int kBatchTile = 2;
AVX2_TARGET inline V zero() { return _mm256_setzero_ps(); }
AVX2_TARGET inline V set1(float a) { return _mm256_set1_ps(a); }
AVX2_TARGET inline V loadu(const float* a) { return _mm256_loadu_ps(a); }
AVX2_TARGET inline void store(float* a, V v) { _mm256_storeu_ps(a, v); }
AVX2_TARGET inline void store(uint16_t* a, V v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);  // lanes 0-3, 4-7
  _mm_storeu_si128(reinterpret_cast<__m128i*>(a), _mm256_castsi256_si128(packed));
}
AVX2_TARGET inline V add(V a, V b) { return _mm256_add_ps(a, b); }
AVX2_TARGET inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
AVX2_TARGET inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
AVX2_TARGET inline float hsum(V a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
AVX2_TARGET inline V from_bf16(const uint16_t* a) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
AVX2_TARGET inline V from_i8(const int8_t* a) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a))));
}
// 8 nibbles: the low (hi = false) or high halves of 8 bytes
AVX2_TARGET inline V from_nibbles(const uint8_t* a, bool hi) {
  __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a));
  if (hi) b = _mm_srli_epi16(b, 4);
  b = _mm_and_si128(b, _mm_set1_epi8(15));
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
}
}  // namespace avx2_prims

namespace avx512_prims {
RWKV7_SIMD_KERNELS(kernels, AVX512_TARGET)
}
namespace avx2_prims {
RWKV7_SIMD_KERNELS(kernels, AVX2_TARGET)
}

enum class Isa { Portable, Avx2, Avx512 };

// RWKV7_CPU_ISA=avx2 / portable caps the choice (tests run every path on one machine).
Isa detect_isa() {
  __builtin_cpu_init();
  const char* cap = std::getenv("RWKV7_CPU_ISA");
  if (cap && std::strcmp(cap, "portable") == 0) return Isa::Portable;
  const bool avx512_allowed = !(cap && std::strcmp(cap, "avx2") == 0);
  if (avx512_allowed && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
  return Isa::Portable;
}
#else
enum class Isa { Portable };
Isa detect_isa() { return Isa::Portable; }
#endif

const Isa kIsa = detect_isa();

template <int64_t FMT>
void run_rows(const Packed& p, const float* x, const float* xs, int64_t M, float* y, int64_t N, int64_t n0,
              int64_t n1) {
#ifdef RWKV7_X86
  if (kIsa == Isa::Avx512) return avx512_prims::kernels::rows<FMT>(p, x, xs, M, y, N, n0, n1);
  if (kIsa == Isa::Avx2) return avx2_prims::kernels::rows<FMT>(p, x, xs, M, y, N, n0, n1);
#endif
  rows_scalar<FMT>(p, x, xs, M, y, N, n0, n1);
}

template <int64_t FMT, typename Out>
void run_dequant(const Packed& p, Out* out, int64_t base, int64_t n0, int64_t n1) {
#ifdef RWKV7_X86
  if (kIsa == Isa::Avx512) return avx512_prims::kernels::dequant<FMT>(p, out, base, n0, n1);
  if (kIsa == Isa::Avx2) return avx2_prims::kernels::dequant<FMT>(p, out, base, n0, n1);
#endif
  dequant_scalar<FMT>(p, out, base, n0, n1);
}

// ------------------------------------------------------------------ ops

Packed unpack(const at::Tensor& w, const at::Tensor& scales, const at::Tensor& mins, int64_t fmt, int64_t K) {
  TORCH_CHECK(w.is_contiguous() && w.device().is_cpu(), "weight must be a contiguous CPU tensor");
  TORCH_CHECK(K % 64 == 0, "K must be a multiple of 64, got ", K);
  const bool grouped = fmt == INT8 || fmt == Q4;
  if (grouped) TORCH_CHECK(scales.is_contiguous() && scales.scalar_type() == at::kBFloat16, "scales: bf16");
  if (fmt == Q4) TORCH_CHECK(mins.is_contiguous() && mins.scalar_type() == at::kBFloat16, "mins: bf16");
  const at::ScalarType want[] = {at::kFloat, at::kBFloat16, at::kChar, at::kByte};
  TORCH_CHECK(fmt >= 0 && fmt <= Q4 && w.scalar_type() == want[fmt], "weight dtype does not match format ", fmt);
  return {w.data_ptr(), grouped ? static_cast<const uint16_t*>(scales.data_ptr()) : nullptr,
          fmt == Q4 ? static_cast<const uint16_t*>(mins.data_ptr()) : nullptr, K};
}

template <class Fn>
void dispatch(int64_t fmt, Fn&& fn) {
  switch (fmt) {
    case F32: fn(std::integral_constant<int64_t, F32>{}); break;
    case BF16: fn(std::integral_constant<int64_t, BF16>{}); break;
    case INT8: fn(std::integral_constant<int64_t, INT8>{}); break;
    default: fn(std::integral_constant<int64_t, Q4>{}); break;
  }
}

// Rows per task: enough work per thread to amortise the hand-off, at least 4 (one register tile).
int64_t grain(int64_t K) { return std::max<int64_t>(4, (1 << 16) / std::max<int64_t>(K, 1)) & ~int64_t(3); }

at::Tensor gemv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scales, const at::Tensor& mins,
                int64_t fmt) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be float32 [M, K]");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const Packed p = unpack(w, scales, mins, fmt, K);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty({M, N}, x.options());
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // per-group sums of x, for the q4 minimums
  std::vector<float> xs(fmt == Q4 ? M * (K / kGroupQ4) : 0);
  for (size_t i = 0; i < xs.size(); ++i) {
    float t = 0.f;
    for (int64_t j = 0; j < kGroupQ4; ++j) t += xp[i * kGroupQ4 + j];
    xs[i] = t;
  }
  dispatch(fmt, [&](auto f) {
    at::parallel_for(0, N, grain(K), [&](int64_t n0, int64_t n1) {
      run_rows<decltype(f)::value>(p, xp, xs.data(), M, yp, N, n0, n1);
    });
  });
  return y;
}

// Rows [n0, n1) of W into out (row n0 first) as out's dtype, float32 or bfloat16, on all threads.
void dequantize_rows(const Packed& p, int64_t fmt, at::Tensor& out, int64_t n0, int64_t n1) {
  const bool bf16 = out.scalar_type() == at::kBFloat16;
  void* op = out.data_ptr();
  dispatch(fmt, [&](auto f) {
    at::parallel_for(n0, n1, grain(p.K), [&](int64_t a, int64_t b) {
      if (bf16)
        run_dequant<decltype(f)::value>(p, static_cast<uint16_t*>(op), n0, a, b);
      else
        run_dequant<decltype(f)::value>(p, static_cast<float*>(op), n0, a, b);
    });
  });
}

at::Tensor dequantize(const at::Tensor& w, const at::Tensor& scales, const at::Tensor& mins, int64_t fmt,
                      int64_t K, at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "dequantize: dtype must be float32 or bfloat16");
  const int64_t N = w.size(0);
  const Packed p = unpack(w, scales, mins, fmt, K);
  at::Tensor out = at::empty({N, K}, at::TensorOptions().dtype(dtype));
  dequantize_rows(p, fmt, out, 0, N);
  return out;
}

// x [M, K] @ W^T for prefill (M large: compute-bound), in x's dtype (float32 or bfloat16). W is dequantised
// `block` rows at a time into one small scratch that stays in cache, and each block's GEMM (torch's) writes
// its columns of y: no full-size dense copy of W is ever made (64 MB of float32 for a 1.5B FFN matrix, page
// faults included, which made compressed prefill slower than float32).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scales, const at::Tensor& mins,
                  int64_t fmt, int64_t block) {
  TORCH_CHECK(x.dim() == 2 && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16),
              "x must be float32 or bfloat16 [M, K]");
  TORCH_CHECK(block > 0, "block must be positive");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const Packed p = unpack(w, scales, mins, fmt, K);
  at::Tensor y = at::empty({M, N}, x.options());
  at::Tensor scratch = at::empty({std::min(block, N), K}, x.options());
  for (int64_t n0 = 0; n0 < N; n0 += block) {
    const int64_t rows = std::min(block, N - n0);
    at::Tensor part = scratch.narrow(0, 0, rows);
    dequantize_rows(p, fmt, part, n0, n0 + rows);
    at::Tensor out = y.narrow(1, n0, rows);
    at::mm_out(out, x, part.t());
  }
  return y;
}

// ------------------------------------------------------------------ the per-token ops of a decode step
// A decode step dispatches a few dozen small ops per layer besides the GEMVs (~3-10 us each from Python);
// these fuse them: shift_mix_ (LayerNorm + token shift + the interpolations) and time_mix_ (the LoRAs, the
// value residual, the WKV-7 state update, GroupNorm, bonus and output gate). Same equations as TimeMix /
// ChannelMix for T = 1, float32 throughout.

// For each value row i of one head's state S [N, N] (key index j): S_i = S_i * decay + (S_i . a) b + v_i kmod
// with a = -kk, then y_i = S_i . r.
RWKV7_CLONES
void wkv_rows_scalar(float* S, const float* kk, const float* decay, const float* b, const float* kmod,
                     const float* r, const float* v, float* y, int64_t N) {
  for (int64_t i = 0; i < N; ++i) {
    float* row = S + i * N;
    float sa = 0.f;
    for (int64_t j = 0; j < N; ++j) sa -= row[j] * kk[j];
    float acc = 0.f;
    for (int64_t j = 0; j < N; ++j) {
      row[j] = row[j] * decay[j] + sa * b[j] + v[i] * kmod[j];
      acc += row[j] * r[j];
    }
    y[i] = acc;
  }
}

void run_wkv_rows(float* S, const float* kk, const float* decay, const float* b, const float* kmod, const float* r,
                  const float* v, float* y, int64_t N) {
#ifdef RWKV7_X86
  if (kIsa == Isa::Avx512 && N % avx512_prims::L == 0)
    return avx512_prims::kernels::wkv_rows(S, kk, decay, b, kmod, r, v, y, N);
  if (kIsa != Isa::Portable && N % avx2_prims::L == 0)
    return avx2_prims::kernels::wkv_rows(S, kk, decay, b, kmod, r, v, y, N);
#endif
  wkv_rows_scalar(S, kk, decay, b, kmod, r, v, y, N);
}

// One head: normalised kk, key scaled by the in-context rate, decay exp(-exp(-0.5) sigmoid(d)), the state
// update with b = kk * iclr, GroupNorm of y, plus the bonus (r * kmod * r_k).sum() * v; times the gate g.
void wkv_head(float* S, const float* r, const float* d, const float* k, const float* v, const float* iclr,
              const float* g, const float* k_k, const float* k_a, const float* r_k, const float* ln_w,
              const float* ln_b, float* y, int64_t N, float eps) {
  constexpr float kLogDecayScale = -0.60653065971263342f;  // -exp(-0.5)
  float kk[64], kmod[64], decay[64], b[64];
  float norm = 0.f;
  for (int64_t j = 0; j < N; ++j) {
    kk[j] = k[j] * k_k[j];
    norm += kk[j] * kk[j];
  }
  const float inv = 1.f / std::max(std::sqrt(norm), 1e-12f);
  float bonus = 0.f;
  for (int64_t j = 0; j < N; ++j) {
    kk[j] *= inv;
    kmod[j] = k[j] * (1.f + (iclr[j] - 1.f) * k_a[j]);
    decay[j] = std::exp(kLogDecayScale / (1.f + std::exp(-d[j])));
    b[j] = kk[j] * iclr[j];
    bonus += r[j] * kmod[j] * r_k[j];
  }
  run_wkv_rows(S, kk, decay, b, kmod, r, v, y, N);
  float mean = 0.f;
  for (int64_t i = 0; i < N; ++i) mean += y[i];
  mean /= float(N);
  float var = 0.f;
  for (int64_t i = 0; i < N; ++i) var += (y[i] - mean) * (y[i] - mean);
  const float rstd = 1.f / std::sqrt(var / float(N) + eps);
  for (int64_t i = 0; i < N; ++i) y[i] = ((y[i] - mean) * rstd * ln_w[i] + ln_b[i] + bonus * v[i]) * g[i];
}

// y [N] = x [K] @ W [K, N], W row-major: the layout of the LoRA matrices (x @ w1, then h @ w2)
RWKV7_CLONES
void vecmat(const float* x, const float* W, int64_t K, int64_t N, float* y) {
  std::fill(y, y + N, 0.f);
  for (int64_t k = 0; k < K; ++k) {
    const float xk = x[k];
    const float* w = W + k * N;
    for (int64_t n = 0; n < N; ++n) y[n] += xk * w[n];
  }
}

enum class Act { None, Tanh, Sigmoid };
inline float activate(Act a, float v) {
  return a == Act::Tanh ? std::tanh(v) : a == Act::Sigmoid ? 1.f / (1.f + std::exp(-v)) : v;
}

// A LoRA of TimeMix: out = outer(bias + inner(x @ A) @ B), A [C, dim], B [dim, C], bias [C] or none.
struct Lora {
  const float *bias, *A, *B;
  int64_t dim;
  Act inner, outer;
  void operator()(const float* x, float* h, float* out, int64_t C) const {
    vecmat(x, A, C, dim, h);
    for (int64_t j = 0; j < dim; ++j) h[j] = activate(inner, h[j]);
    vecmat(h, B, dim, C, out);
    for (int64_t c = 0; c < C; ++c) out[c] = activate(outer, (bias ? bias[c] : 0.f) + out[c]);
  }
};

const float* f32(const at::Tensor& t, int64_t numel, const char* what) {
  TORCH_CHECK(t.is_contiguous() && t.scalar_type() == at::kFloat && t.numel() == numel, what,
              " must be contiguous float32 with ", numel, " elements, got ", t.sizes());
  return t.data_ptr<float>();
}

Lora make_lora(const at::Tensor& bias, const at::Tensor& A, const at::Tensor& B, int64_t C, Act inner, Act outer) {
  TORCH_CHECK(A.dim() == 2 && A.size(0) == C, "LoRA matrices must be [C, dim] and [dim, C]");
  const int64_t dim = A.size(1);
  return {bias.defined() ? f32(bias, C, "LoRA bias") : nullptr, f32(A, C * dim, "LoRA A"), f32(B, dim * C, "LoRA B"),
          dim, inner, outer};
}

// The TimeMix decode step after the r / k / v GEMVs, for rows b of [B, C]: returns the gated WKV output
// (what the output projection takes) and updates state [B, H, N, N] in place. mixed [6, B, C] holds the token-
// shift interpolations for r, w, k, v, a, g (shift_mix_); v_first is empty in layer 0 (no value residual).
// params: w0 w1 w2 a0 a1 a2 v0 v1 v2 g1 g2 k_k k_a r_k ln_x.weight ln_x.bias (v0-v2 undefined in layer 0).
at::Tensor time_mix_(at::Tensor& state, const at::Tensor& mixed, const at::Tensor& r, const at::Tensor& k,
                     const at::Tensor& v, const at::Tensor& v_first, at::TensorList params, double eps) {
  TORCH_CHECK(state.dim() == 4 && state.is_contiguous() && state.scalar_type() == at::kFloat,
              "state must be a contiguous float32 [B, H, N, N] tensor");
  const int64_t B = state.size(0), H = state.size(1), N = state.size(2), C = H * N;
  TORCH_CHECK(N <= 64, "head size must be <= 64, got ", N);
  TORCH_CHECK(params.size() == 16, "time_mix_ takes 16 parameters");
  const float* xm = f32(mixed, 6 * B * C, "mixed");
  const float *rp = f32(r, B * C, "r"), *kp = f32(k, B * C, "k"), *vp = f32(v, B * C, "v");
  const bool residual = v_first.numel() > 0;
  const float* vf = residual ? f32(v_first, B * C, "v_first") : nullptr;
  const auto& P = params;
  const Lora w_lora = make_lora(P[0], P[1], P[2], C, Act::Tanh, Act::None);
  const Lora a_lora = make_lora(P[3], P[4], P[5], C, Act::None, Act::Sigmoid);
  const Lora v_lora = residual ? make_lora(P[6], P[7], P[8], C, Act::None, Act::Sigmoid) : Lora{};
  const Lora g_lora = make_lora(at::Tensor(), P[9], P[10], C, Act::Sigmoid, Act::None);
  const float *k_k = f32(P[11], C, "k_k"), *k_a = f32(P[12], C, "k_a"), *r_k = f32(P[13], C, "r_k"),
              *ln_w = f32(P[14], C, "ln_x.weight"), *ln_b = f32(P[15], C, "ln_x.bias");
  const int64_t dim = std::max({w_lora.dim, a_lora.dim, v_lora.dim, g_lora.dim});
  at::Tensor y = at::empty({B, C}, r.options());
  float* yp = y.data_ptr<float>();
  float* S = state.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
#ifdef RWKV7_X86
    // Flush denormals in this thread for the duration: long contexts drive decayed state entries below 1e-38,
    // where x86 arithmetic is ~100x slower; values that small never change a result.
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);
#endif
    std::vector<float> scratch(4 * C + dim);
    float *d = scratch.data(), *iclr = d + C, *g = iclr + C, *vv = g + C, *h = vv + C;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t o = b * C;
      const auto x_of = [&](int64_t m) { return xm + (m * B + b) * C; };  // mixed[m, b]
      w_lora(x_of(1), h, d, C);
      a_lora(x_of(4), h, iclr, C);
      g_lora(x_of(5), h, g, C);
      if (residual) {
        v_lora(x_of(3), h, vv, C);  // the gate
        for (int64_t c = 0; c < C; ++c) vv[c] = vp[o + c] + (vf[o + c] - vp[o + c]) * vv[c];
      } else {
        std::copy(vp + o, vp + o + C, vv);
      }
      for (int64_t hd = 0; hd < H; ++hd) {
        const int64_t c = hd * N;
        wkv_head(S + (b * H + hd) * N * N, rp + o + c, d + c, kp + o + c, vv + c, iclr + c, g + c, k_k + c, k_a + c,
                 r_k + c, ln_w + c, ln_b + c, yp + o + c, N, float(eps));
      }
    }
#ifdef RWKV7_X86
    _mm_setcsr(csr);
#endif
  });
  return y;
}

// LayerNorm of x [B, C], then the token shift: out[m] = xn + (x_prev - xn) * mixes[m] for each mix vector,
// and x_prev = xn (in place). Returns [len(mixes), B, C].
at::Tensor shift_mix_(const at::Tensor& x, at::Tensor& x_prev, const at::Tensor& ln_w, const at::Tensor& ln_b,
                      double eps, at::TensorList mixes) {
  TORCH_CHECK(x.dim() == 2, "x must be [B, C]");
  const int64_t B = x.size(0), C = x.size(1), n = static_cast<int64_t>(mixes.size());
  const float *xp = f32(x, B * C, "x"), *w = f32(ln_w, C, "ln weight"), *bias = f32(ln_b, C, "ln bias");
  float* prev = const_cast<float*>(f32(x_prev, B * C, "x_prev"));
  std::vector<const float*> mix(n);
  for (int64_t m = 0; m < n; ++m) mix[m] = f32(mixes[m], C, "mix vector");
  at::Tensor out = at::empty({n, B, C}, x.options());
  float* op = out.data_ptr<float>();
  std::vector<float> xn(C);
  for (int64_t b = 0; b < B; ++b) {
    const float* row = xp + b * C;
    float mean = 0.f, var = 0.f;
    for (int64_t c = 0; c < C; ++c) mean += row[c];
    mean /= float(C);
    for (int64_t c = 0; c < C; ++c) var += (row[c] - mean) * (row[c] - mean);
    const float rstd = 1.f / std::sqrt(var / float(C) + float(eps));
    float* pr = prev + b * C;
    for (int64_t c = 0; c < C; ++c) xn[c] = (row[c] - mean) * rstd * w[c] + bias[c];
    for (int64_t m = 0; m < n; ++m)
      for (int64_t c = 0; c < C; ++c) op[(m * B + b) * C + c] = xn[c] + (pr[c] - xn[c]) * mix[m][c];
    std::copy(xn.begin(), xn.end(), pr);
  }
  return out;
}

int64_t isa() { return static_cast<int64_t>(kIsa); }

}  // namespace

TORCH_LIBRARY(rwkv7_cpu, m) {
  m.def("gemv(Tensor x, Tensor w, Tensor scales, Tensor mins, int fmt) -> Tensor", &gemv);
  m.def("dequantize(Tensor w, Tensor scales, Tensor mins, int fmt, int K, ScalarType dtype) -> Tensor", &dequantize);
  m.def("linear(Tensor x, Tensor w, Tensor scales, Tensor mins, int fmt, int block) -> Tensor", &linear);
  m.def("time_mix_(Tensor(a!) state, Tensor mixed, Tensor r, Tensor k, Tensor v, Tensor v_first, "
        "Tensor[] params, float eps) -> Tensor",
        &time_mix_);
  m.def("shift_mix_(Tensor x, Tensor(a!) x_prev, Tensor ln_w, Tensor ln_b, float eps, Tensor[] mixes) -> Tensor",
        &shift_mix_);
  m.def("isa() -> int", &isa);
}
