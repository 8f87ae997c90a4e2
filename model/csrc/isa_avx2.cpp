// The AVX2 kernels: simd.h over 8-lane __m256. Compiled with exactly the flags below (model/kernel_build.py);
// ops.cpp checks the same features at run time before calling anything here.

#if !defined(__AVX2__) || !defined(__FMA__) || defined(__AVX512F__)
#error "isa_avx2.cpp is compiled with -mavx2 -mfma and nothing more"
#endif

#include <immintrin.h>

#include "simd.h"

namespace rwkv7 {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int64_t L = 8;
  static constexpr int kBatchTile = 2;  // 2 x 2 sums + 2 x 2 partial sums + 2 rows of x + 1 weight vector: 11 of 16
  static constexpr int kDenseTile[2] = {3, 3};  // 9 accumulators + 3 rows of x + 1 weight vector: 13 registers
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V loadu(const float* a) { return _mm256_loadu_ps(a); }
  static void store(float* a, V v) { _mm256_storeu_ps(a, v); }
  static void store(uint16_t* a, V v) {  // bf16 bits, rounded to nearest even (f32_to_bf16)
    const __m256i u = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);  // lanes 0-3, 4-7
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a), _mm256_castsi256_si128(packed));
  }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(V a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static void hsum4(V a, V b, V c, V d, float* out) {  // out[q] = hsum of the q-th
    const V t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
  }
  static V from_bf16(const uint16_t* a) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  static V from_i8(const int8_t* a) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a))));
  }
  static void prefetch(const void* a) { _mm_prefetch(static_cast<const char*>(a), _MM_HINT_T0); }
  static V from_nibbles(const uint8_t* a, bool hi) {  // the low or high halves of 8 bytes
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a));
    if (hi) b = _mm_srli_epi16(b, 4);
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_and_si128(b, _mm_set1_epi8(15))));
  }
  using I = __m256i;
  static constexpr int64_t kA16 = 16;
  static I izero() { return _mm256_setzero_si256(); }
  static I load_i16(const int16_t* a) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)); }
  static I widen_i8(const int8_t* a) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
  }
  static I madd(I w, I x, I acc) { return _mm256_add_epi32(acc, _mm256_madd_epi16(w, x)); }
  static V to_float(I a) { return _mm256_cvtepi32_ps(a); }
};

}  // namespace

extern const IsaKernels kAvx2Kernels = kernels_of<Avx2>();

}  // namespace rwkv7
