// The AVX-512 kernels: simd.h over 16-lane __m512. Compiled with exactly the flags below (model/kernel_build.py);
// ops.cpp checks the same features at run time before calling anything here.

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512DQ__) || \
    !defined(__AVX2__) || !defined(__FMA__)
#error "isa_avx512.cpp is compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma"
#endif

#include <immintrin.h>

#include "simd.h"

namespace rwkv7 {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int64_t L = 16;
  static constexpr int kBatchTile = 6;  // 2 x 6 sums + 2 x 6 partial sums + 6 rows of x + 1 weight vector: 31 registers
  static constexpr int kDenseTile[2] = {4, 6};  // 24 accumulators + 6 rows of x + 1 weight vector: 31 registers
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V loadu(const float* a) { return _mm512_loadu_ps(a); }
  static void store(float* a, V v) { _mm512_storeu_ps(a, v); }
  static void store(uint16_t* a, V v) {  // bf16 bits, rounded to nearest even (f32_to_bf16)
    const __m512i u = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(a), _mm512_cvtepi32_epi16(r));
  }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(V a) { return _mm512_reduce_add_ps(a); }
  static void hsum4(V a, V b, V c, V d, float* out) {  // out[q] = hsum of the q-th: shuffles shared by four
    // 128-bit quarters: a0 + a2, a1 + a3, b0 + b2, b1 + b3 (and c, d), then quarter q holds 4 partial sums of the q-th
    const V ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    const V cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    const V u = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    const V w = _mm512_add_ps(u, _mm512_permute_ps(u, 0x4E));
    const V t = _mm512_add_ps(w, _mm512_permute_ps(w, 0xB1));  // every lane of quarter q: the q-th sum
    const __m512i firsts = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(firsts, t)));
  }
  static V from_bf16(const uint16_t* a) {
    const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
  }
  static V from_i8(const int8_t* a) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))));
  }
  static void prefetch(const void* a) { _mm_prefetch(static_cast<const char*>(a), _MM_HINT_T0); }
  static V from_nibbles(const uint8_t* a, bool hi) {  // the low or high halves of 16 bytes
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
    if (hi) b = _mm_srli_epi16(b, 4);
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(b, _mm_set1_epi8(15))));
  }
  using I = __m512i;
  static constexpr int64_t kA16 = 32;
  static I izero() { return _mm512_setzero_si512(); }
  static I load_i16(const int16_t* a) { return _mm512_loadu_si512(a); }
  static I widen_i8(const int8_t* a) {  // AVX512BW
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
  }
  static I madd(I w, I x, I acc) { return _mm512_add_epi32(acc, _mm512_madd_epi16(w, x)); }  // AVX512BW
  static V to_float(I a) { return _mm512_cvtepi32_ps(a); }
};

}  // namespace

extern const IsaKernels kAvx512Kernels = kernels_of<Avx512>();

}  // namespace rwkv7
