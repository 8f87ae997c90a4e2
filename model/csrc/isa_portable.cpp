// The portable kernels: simd.h with one float per "vector", plain C++ for any CPU (the compiler may still
// vectorise it for the baseline instruction set). Compiled with the baseline flags.

#include "simd.h"

namespace rwkv7 {
namespace {

struct Scalar {
  using V = float;
  static constexpr int64_t L = 1;
  static constexpr int kBatchTile = 4;
  static constexpr int kDenseTile[2] = {2, 4};
  static V zero() { return 0.f; }
  static V set1(float a) { return a; }
  static V loadu(const float* a) { return *a; }
  static void store(float* a, V v) { *a = v; }
  static void store(uint16_t* a, V v) { *a = f32_to_bf16(v); }
  static V add(V a, V b) { return a + b; }
  static V mul(V a, V b) { return a * b; }
  static V fmadd(V a, V b, V c) { return a * b + c; }
  static float hsum(V a) { return a; }
  static void hsum4(V a, V b, V c, V d, float* out) {
    out[0] = a;
    out[1] = b;
    out[2] = c;
    out[3] = d;
  }
  static V from_bf16(const uint16_t* a) { return bf16_to_f32(*a); }
  static V from_i8(const int8_t* a) { return float(*a); }
  static V from_nibbles(const uint8_t* a, bool hi) { return float(hi ? *a >> 4 : *a & 15); }
  static void prefetch(const void*) {}  // no portable prefetch hint
  using I = int32_t;
  static constexpr int64_t kA16 = 1;
  static I izero() { return 0; }
  static I load_i16(const int16_t* a) { return *a; }
  static I widen_i8(const int8_t* a) { return *a; }
  static I madd(I w, I x, I acc) { return acc + w * x; }
  static V to_float(I a) { return float(a); }
};

}  // namespace

extern const IsaKernels kPortableKernels = kernels_of<Scalar>();

}  // namespace rwkv7
