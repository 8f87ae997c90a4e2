// What every translation unit of the CPU kernels shares: the weight formats, a packed matrix as raw pointers,
// bf16 conversions, and the table of kernels one instruction set provides.
//
// Build layout (model/kernel_build.py): ops.cpp holds the torch ops and is compiled with the baseline flags;
// isa_portable.cpp too; isa_avx2.cpp and isa_avx512.cpp (x86-64 only) are each compiled with their own -m
// flags. No code compiled for one instruction set may be shared with another through the linker: an inline
// function from a header compiled in isa_avx512.cpp could be the copy the linker keeps for everyone, and
// crash an AVX2 machine. So this header is included by the ISA files with no standard library templates, and
// everything defined in it has internal linkage (the unnamed namespace below): each file gets its own copy.

#pragma once

#include <cstdint>
#include <cstring>

namespace rwkv7 {

// Weight formats (the `fmt` argument of the ops), shared with model/cpu_kernels.py:
//   F32 [N, K]; BF16 [N, K]; INT8 [N, K] with one bf16 scale per 64 weights of a row (w = q * s);
//   Q4 [N, K / 2] bytes with a bf16 scale and minimum per 32 weights (w = q * s + m, q in 0..15; byte j of a
//   group holds weight j in its low nibble and weight j + 16 in its high nibble).
// INT8_A16 is not a storage format but a way to run a GEMV over INT8 weights: each activation row is first
// rounded to int16 per scale group (x ~ c * t, t = max |x| of the group / 32767, c in -32767..32767), and each
// group's dot product of codes is summed exactly in int32 (64 products of at most 128 * 32767), then scaled by
// s * t. Widening a code to int16 costs less than to float, and one integer multiply-add covers two weights.
// The rounding adds at most t / 2 per activation: ~1e-5 of the group's largest, far below INT8's own error.
enum Format : int64_t { F32 = 0, BF16 = 1, INT8 = 2, Q4 = 3, INT8_A16 = 4 };
// Instruction sets (the `isa` argument of the ops), shared with model/cpu_kernels.py.
enum Isa : int64_t { PORTABLE = 0, AVX2 = 1, AVX512 = 2 };

constexpr int64_t kGroupInt8 = 64;
constexpr int64_t kGroupQ4 = 32;

// One compressed weight matrix as raw pointers: row n, columns [0, K).
struct Packed {
  const void* w;
  const uint16_t* scale;  // bf16 bits (INT8, Q4)
  const uint16_t* mins;   // bf16 bits (Q4)
  int64_t K;
};

// The kernels of one instruction set. Rows [n0, n1) of the output: every function works on a slice of rows
// so the caller can split the work across threads.
struct IsaKernels {
  // y[m, n] = x[m] . W[n] for n in [n0, n1); x is float [M, K], or for INT8_A16 the int16 codes [M, K]; xs
  // holds per group of x its sum (Q4) or its scale t (INT8_A16); `streams` far-apart row streams are walked at
  // once when M == 1 (1, 2, 4 or 8), each software-prefetched `prefetch` bytes ahead (0: none, the hardware
  // prefetchers alone).
  void (*gemv_rows)(const Packed& p, int64_t fmt, int64_t streams, int64_t prefetch, const void* x, const float* xs,
                    int64_t M, float* y, int64_t N, int64_t n0, int64_t n1);
  // Rows [n0, n1) of W written densely at out + (n - base) * K, as float32 or bf16 bits.
  void (*dequant_f32)(const Packed& p, int64_t fmt, float* out, int64_t base, int64_t n0, int64_t n1);
  void (*dequant_bf16)(const Packed& p, int64_t fmt, uint16_t* out, int64_t base, int64_t n0, int64_t n1);
  // One WKV head of size N: S_i = S_i * decay + (S_i . a) b + v_i kmod with a = -kk, then y_i = S_i . r.
  void (*wkv_rows)(float* S, const float* kk, const float* decay, const float* b, const float* kmod,
                   const float* r, const float* v, float* y, int64_t N);
  // One token of one TimeMix head of size N after its projections and LoRAs: kk = normalised k * k_k, kmod =
  // k * (1 + (iclr - 1) * k_a), the state update (wkv_rows) with b = kk * iclr and the given decay, then y =
  // (GroupNorm(y) * ln_w + ln_b + (r * kmod * r_k).sum() * v) * g.
  void (*wkv_token)(float* S, const float* r, const float* decay, const float* k, const float* v, const float* iclr,
                    const float* g, const float* k_k, const float* k_a, const float* r_k, const float* ln_w,
                    const float* ln_b, float eps, float* y, int64_t N);
  // y [N] = x [K] @ W [K, N], W row-major, F32 or BF16 (`fmt`), with rows `ld` elements apart (the LoRA
  // matrices, or a column block).
  void (*vecmat)(const float* x, const void* W, int64_t fmt, int64_t K, int64_t N, int64_t ld, float* y);
};

extern const IsaKernels kPortableKernels;  // isa_portable.cpp
extern const IsaKernels kAvx2Kernels;      // isa_avx2.cpp (x86-64 builds only)
extern const IsaKernels kAvx512Kernels;    // isa_avx512.cpp (x86-64 builds only)

namespace {  // internal linkage on purpose: see the top of this file

inline float bf16_to_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// f32 -> bf16 bits, rounded to nearest even like torch's conversion (finite values)
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace
}  // namespace rwkv7
