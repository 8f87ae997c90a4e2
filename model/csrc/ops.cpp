// The torch ops of the CPU kernels (see model/cpu_kernels.py for why they exist):
//
//   gemv(x [M, K] f32, w, scales, mins, fmt, *, isa, streams, prefetch, serial) -> [M, N] f32
//                                                                y = x @ W^T, W stored compressed
//   dequantize(w, scales, mins, fmt, K, dtype, *, isa) -> [N, K]               W itself, float32 or bfloat16
//   linear(x [M, K], w, scales, mins, fmt, block, *, isa) -> [M, N]            x @ W^T for prefill, by blocks of W
//   shift_mix_(x, x_prev, ln_w, ln_b, eps, mixes) -> [n, B, C]                 LayerNorm + token-shift mixes
//   time_mix_(state, mixed, r, k, v, v_first, *, w0, w1, ..., ln_b, eps, isa, serial) -> [B, C]
//                                                                TimeMix after r/k/v, WKV state updated in place
//   decode_layers_(x, att_x_prev, wkv, ffn_x_prev, weights, plan, eps, *, isa, serial) -> [B, C]
//                                                                every layer of a decode step, state in place
//   wkv7(r, w, k, v, a, b, state, cu_seqlens, *, isa, serial) -> (y, state)   WKV-7, token by token
//   supported_isas() -> int[]                                    the instruction sets this CPU and build can run
//
// Weight formats and instruction sets: kernels.h. Decoding reads every weight once per token, so it is
// memory-bound: bf16 / int8 / q4 move 2x, ~3.9x and ~6.4x fewer bytes than f32; activations and accumulation
// stay f32 (except INT8_A16, an integer way to run int8 weights where the float conversions bound the GEMV).
// The kernels of each instruction set live in isa_*.cpp; which one an op runs is its `isa` argument
// (model/kernel_choice.py measures which is fastest), checked here against the CPU's features.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>  // the MXCSR, to flush denormals (SSE: baseline on x86-64)
#endif

#include "kernels.h"

namespace rwkv7 {
namespace {

// ------------------------------------------------------------------ instruction sets

// Every feature an isa_*.cpp is compiled for (its -m flags, asserted at its top), checked at run time: the
// compiler may use any of them anywhere in that file. __builtin_cpu_supports also checks that the OS saves
// the wider registers (GCC and Clang).
bool cpu_runs(int64_t isa) {
  if (isa == PORTABLE) return true;
#if defined(RWKV7_X86_KERNELS)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == AVX2) return avx2;
  if (isa == AVX512)
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
  return false;
}

std::vector<int64_t> supported_isas() {
  std::vector<int64_t> out;
  for (int64_t isa : {PORTABLE, AVX2, AVX512})
    if (cpu_runs(isa)) out.push_back(isa);
  return out;
}

const IsaKernels& kernels_for(int64_t isa) {
  static const std::vector<int64_t> runs = supported_isas();
  TORCH_CHECK(std::find(runs.begin(), runs.end(), isa) != runs.end(), "instruction set ", isa,
              " is not supported by this CPU or build (supported: ", runs, ")");
#if defined(RWKV7_X86_KERNELS)
  if (isa == AVX512) return kAvx512Kernels;
  if (isa == AVX2) return kAvx2Kernels;
#endif
  return kPortableKernels;
}

// ------------------------------------------------------------------ compressed matrices

int64_t group_of(int64_t fmt) { return fmt == Q4 ? kGroupQ4 : kGroupInt8; }

// Checks every tensor of a packed [N, K] matrix against the format (so no kernel reads out of bounds).
Packed unpack(const at::Tensor& w, const at::Tensor& scales, const at::Tensor& mins, int64_t fmt, int64_t K) {
  TORCH_CHECK(fmt >= F32 && fmt <= Q4, "unknown weight format ", fmt);
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous() && w.device().is_cpu(), "weight must be a contiguous CPU matrix");
  TORCH_CHECK(K > 0 && K % 64 == 0, "K must be a positive multiple of 64, got ", K);
  const at::ScalarType want[] = {at::kFloat, at::kBFloat16, at::kChar, at::kByte};
  TORCH_CHECK(w.scalar_type() == want[fmt], "weight dtype ", w.scalar_type(), " does not match format ", fmt);
  TORCH_CHECK(w.size(1) == (fmt == Q4 ? K / 2 : K), "weight has ", w.size(1), " columns, format ", fmt, " with K = ",
              K, " needs ", fmt == Q4 ? K / 2 : K);
  const int64_t groups = w.size(0) * (K / group_of(fmt));
  const bool grouped = fmt == INT8 || fmt == Q4;
  if (grouped)
    TORCH_CHECK(scales.is_contiguous() && scales.scalar_type() == at::kBFloat16 && scales.numel() == groups,
                "scales must be contiguous bf16 with ", groups, " elements");
  if (fmt == Q4)
    TORCH_CHECK(mins.is_contiguous() && mins.scalar_type() == at::kBFloat16 && mins.numel() == groups,
                "mins must be contiguous bf16 with ", groups, " elements");
  return {w.data_ptr(), grouped ? static_cast<const uint16_t*>(scales.data_ptr()) : nullptr,
          fmt == Q4 ? static_cast<const uint16_t*>(mins.data_ptr()) : nullptr, K};
}

// f over [begin, end): on torch's threads (at::parallel_for), or in this thread alone when `serial`. One thread
// can be the faster: a parallel region waits for all its threads, so while other processes keep the cores
// busy it waits for whichever got descheduled (model/kernel_choice.py measures both).
template <class F>
void run_range(bool serial, int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (serial)
    f(begin, end);
  else
    at::parallel_for(begin, end, grain, f);
}

// Rows per task: enough work per thread to amortise the hand-off, at least 8 (one register tile of the most
// streams).
int64_t grain(int64_t K) { return std::max<int64_t>(8, (1 << 16) / std::max<int64_t>(K, 1)) & ~int64_t(7); }

// INT8_A16's activations: x[0, n) rounded to int16 codes per group of kGroupInt8 (x ~ code * scale, scale =
// the group's largest magnitude / 32767), false (nothing usable written) if x holds an inf or NaN.
bool round_to_int16(const float* x, int64_t n, int16_t* codes, float* scales) {
  for (int64_t g = 0; g < n / kGroupInt8; ++g) {
    const float* xg = x + g * kGroupInt8;
    float top = 0.f;
    for (int64_t j = 0; j < kGroupInt8; ++j) top = std::max(top, std::abs(xg[j]));
    if (!std::isfinite(top)) return false;
    const float scale = top / 32767.f, inv = top > 0.f ? 1.f / scale : 0.f;
    scales[g] = scale;
    for (int64_t j = 0; j < kGroupInt8; ++j) codes[g * kGroupInt8 + j] = static_cast<int16_t>(std::nearbyint(xg[j] * inv));
  }
  return true;
}

at::Tensor gemv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scales, const at::Tensor& mins,
                int64_t fmt, int64_t isa, int64_t streams, int64_t prefetch, bool serial) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be float32 [M, K]");
  TORCH_CHECK(streams == 1 || streams == 2 || streams == 4 || streams == 8, "streams must be 1, 2, 4 or 8");
  TORCH_CHECK(prefetch >= 0 && prefetch <= 8192, "prefetch must be 0..8192 bytes");
  const IsaKernels& kernels = kernels_for(isa);
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const Packed p = unpack(w, scales, mins, fmt == INT8_A16 ? INT8 : fmt, K);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty({M, N}, x.options());
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  std::vector<float> xs(fmt == Q4 ? M * (K / kGroupQ4) : fmt == INT8_A16 ? M * (K / kGroupInt8) : 0);
  std::vector<int16_t> codes;
  const void* xarg = xp;
  if (fmt == Q4) {  // per-group sums of x, for the Q4 minimums
    for (size_t i = 0; i < xs.size(); ++i) {
      float t = 0.f;
      for (int64_t j = 0; j < kGroupQ4; ++j) t += xp[i * kGroupQ4 + j];
      xs[i] = t;
    }
  } else if (fmt == INT8_A16) {
    codes.resize(M * K);
    if (round_to_int16(xp, M * K, codes.data(), xs.data()))
      xarg = codes.data();
    else
      fmt = INT8;  // an inf or NaN: the float product, which carries it to the output
  }
  run_range(serial, 0, N, grain(K), [&](int64_t n0, int64_t n1) {
    kernels.gemv_rows(p, fmt, streams, prefetch, xarg, xs.data(), M, yp, N, n0, n1);
  });
  return y;
}

// Rows [n0, n1) of W into out (row n0 first) as out's dtype, float32 or bfloat16, on all threads.
void dequantize_rows(const IsaKernels& kernels, const Packed& p, int64_t fmt, at::Tensor& out, int64_t n0,
                     int64_t n1) {
  const bool bf16 = out.scalar_type() == at::kBFloat16;
  void* op = out.data_ptr();
  at::parallel_for(n0, n1, grain(p.K), [&](int64_t a, int64_t b) {
    if (bf16)
      kernels.dequant_bf16(p, fmt, static_cast<uint16_t*>(op), n0, a, b);
    else
      kernels.dequant_f32(p, fmt, static_cast<float*>(op), n0, a, b);
  });
}

at::Tensor dequantize(const at::Tensor& w, const at::Tensor& scales, const at::Tensor& mins, int64_t fmt, int64_t K,
                      at::ScalarType dtype, int64_t isa) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "dequantize: dtype must be float32 or bfloat16");
  const IsaKernels& kernels = kernels_for(isa);
  const Packed p = unpack(w, scales, mins, fmt, K);
  at::Tensor out = at::empty({w.size(0), K}, at::TensorOptions().dtype(dtype));
  dequantize_rows(kernels, p, fmt, out, 0, w.size(0));
  return out;
}

// x [M, K] @ W^T for prefill (M large: compute-bound), in x's dtype (float32 or bfloat16). W is dequantised
// `block` rows at a time into one small scratch that stays in cache, and each block's GEMM (torch's) writes
// its columns of y: no full-size dense copy of W is ever made (64 MB of float32 for a 1.5B FFN matrix, page
// faults included, which made compressed prefill slower than float32).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scales, const at::Tensor& mins,
                  int64_t fmt, int64_t block, int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16),
              "x must be float32 or bfloat16 [M, K]");
  TORCH_CHECK(block > 0, "block must be positive");
  const IsaKernels& kernels = kernels_for(isa);
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const Packed p = unpack(w, scales, mins, fmt, K);
  at::Tensor y = at::empty({M, N}, x.options());
  at::Tensor scratch = at::empty({std::min(block, N), K}, x.options());
  for (int64_t n0 = 0; n0 < N; n0 += block) {
    const int64_t rows = std::min(block, N - n0);
    at::Tensor part = scratch.narrow(0, 0, rows);
    dequantize_rows(kernels, p, fmt, part, n0, n0 + rows);
    at::Tensor out = y.narrow(1, n0, rows);
    at::mm_out(out, x, part.t());
  }
  return y;
}

// ------------------------------------------------------------------ the per-token ops of a decode step
// A decode step dispatches a few dozen small ops per layer besides the GEMVs (~3-10 us each from Python);
// these fuse them: shift_mix_ (LayerNorm + token shift + the interpolations) and time_mix_ (the LoRAs, the
// value residual, the WKV-7 state update, GroupNorm, bonus and output gate). Same equations as TimeMix /
// ChannelMix for T = 1 (docs/rwkv7.md), float32 throughout.

const float* f32(const at::Tensor& t, int64_t numel, const char* what) {
  TORCH_CHECK(t.is_contiguous() && t.scalar_type() == at::kFloat && t.numel() == numel, what,
              " must be contiguous float32 with ", numel, " elements, got ", t.sizes());
  return t.data_ptr<float>();
}

enum class Act { None, Tanh, Sigmoid };
inline float activate(Act a, float v) {
  return a == Act::Tanh ? std::tanh(v) : a == Act::Sigmoid ? 1.f / (1.f + std::exp(-v)) : v;
}

// A LoRA matrix: float32, or bf16 (what compressed models keep: lossless for checkpoints stored in bf16, and
// half the bytes a decode step reads for it).
struct LoraMatrix {
  const void* data = nullptr;
  int64_t fmt = F32;

  LoraMatrix() = default;
  LoraMatrix(const at::Tensor& t, int64_t numel, const char* name) {
    TORCH_CHECK(t.is_contiguous() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16) &&
                    t.numel() == numel,
                name, ": a LoRA matrix must be contiguous float32 or bfloat16 with ", numel, " elements, got ",
                t.sizes(), " ", t.scalar_type());
    data = t.data_ptr();
    fmt = t.scalar_type() == at::kBFloat16 ? BF16 : F32;
  }
  const void* element(int64_t offset) const {
    return static_cast<const char*>(data) + offset * (fmt == BF16 ? 2 : 4);
  }
};

// A LoRA of TimeMix: out = outer(bias + inner(x @ A) @ B), A [C, dim], B [dim, C], bias [C] or none; `input` is
// which token-shift interpolation of `mixed` it reads (r w k v a g = 0..5).
struct Lora {
  const float* bias = nullptr;
  LoraMatrix A, B;
  int64_t dim = 0;
  Act inner = Act::None, outer = Act::None;
  int64_t input = 0;

  Lora() = default;
  Lora(const at::Tensor* bias_, const at::Tensor& A_, const at::Tensor& B_, int64_t C, Act inner_, Act outer_,
       int64_t input_, const char* name)
      : inner(inner_), outer(outer_), input(input_) {
    TORCH_CHECK(A_.dim() == 2 && A_.size(0) == C, name, ": the LoRA matrices must be [C, dim] and [dim, C]");
    dim = A_.size(1);
    bias = bias_ ? f32(*bias_, C, name) : nullptr;
    A = LoraMatrix(A_, C * dim, name);
    B = LoraMatrix(B_, dim * C, name);
  }
};

// The parameters of one TimeMix layer, by name (the op's keyword arguments), checked once per call.
struct TimeMixWeights {
  Lora lora[4];  // decay (w), in-context rate (a), gate (g), value residual (v; every layer but the first)
  int64_t n_lora;
  const float *k_k, *k_a, *r_k, *ln_w, *ln_b;
  float eps;
  int64_t offset[4];  // of each LoRA's hidden vector in a row of the down-projection results
  int64_t hidden;     // their total size
};
enum LoraIndex { DECAY = 0, ICLR = 1, GATE = 2, VALUE = 3 };

constexpr float kLogDecayScale = -0.60653065971263342f;  // -exp(-0.5): log decay = kLogDecayScale * sigmoid(d)

// One head: the decay exp(-exp(-0.5) sigmoid(d)) (or d itself, `decay_given`), then the rest of the token
// (IsaKernels::wkv_token: normalised kk, the in-context rate, the state update, GroupNorm, bonus and gate).
void wkv_head(const IsaKernels& kernels, float* S, const float* r, const float* d, bool decay_given, const float* k,
              const float* v, const float* iclr, const float* g, const float* k_k, const float* k_a, const float* r_k,
              const float* ln_w, const float* ln_b, float* y, int64_t N, float eps) {
  float decay[64];
  if (!decay_given)
    for (int64_t j = 0; j < N; ++j) decay[j] = std::exp(kLogDecayScale / (1.f + std::exp(-d[j])));
  kernels.wkv_token(S, r, decay_given ? d : decay, k, v, iclr, g, k_k, k_a, r_k, ln_w, ln_b, eps, y, N);
}

// Flushes denormals in this thread while alive: long contexts drive decayed state entries below 1e-38, where x86
// arithmetic is ~100x slower; values that small never change a result.
struct FlushDenormals {
#if defined(__x86_64__) || defined(_M_X64)
  const unsigned csr = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(csr | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(csr); }
#endif
};

// The LoRAs' down-projections h = inner(x @ A) of every row, [B, hidden]: the rows of the A matrices are split
// into one chunk per thread (a decode step has a single row, so splitting rows would leave threads idle), each
// chunk's partial sums are added up, then the inner activation.
std::vector<float> lora_down(const IsaKernels& kernels, const TimeMixWeights& P, const float* xm, int64_t B,
                             int64_t C, bool serial) {
  const int64_t chunks = serial ? 1 : std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), C / 64));
  std::vector<float> partial(chunks * B * P.hidden);
  run_range(serial, 0, chunks, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t k0 = C * p / chunks, k1 = C * (p + 1) / chunks;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t l = 0; l < P.n_lora; ++l) {
          const Lora& lora = P.lora[l];
          const float* x = xm + (lora.input * B + b) * C;  // mixed[input, b]
          kernels.vecmat(x + k0, lora.A.element(k0 * lora.dim), lora.A.fmt, k1 - k0, lora.dim, lora.dim,
                         &partial[(p * B + b) * P.hidden + P.offset[l]]);
        }
    }
  });
  std::vector<float> h(B * P.hidden, 0.f);
  for (int64_t p = 0; p < chunks; ++p)
    for (int64_t i = 0; i < B * P.hidden; ++i) h[i] += partial[p * B * P.hidden + i];
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < P.n_lora; ++l)
      for (int64_t j = 0; j < P.lora[l].dim; ++j) {
        float& v = h[b * P.hidden + P.offset[l] + j];
        v = activate(P.lora[l].inner, v);
      }
  return h;
}

// The LoRAs' up-projections out[l] = outer(bias + h @ B) of every row, [n_lora, B, C]: the columns are split into
// one contiguous block per thread, so each thread streams whole row segments of every B matrix (per-head
// column stripes of 256 bytes made time_mix_ ~1.5x slower on the 0.1B shape).
std::vector<float> lora_up(const IsaKernels& kernels, const TimeMixWeights& P, const std::vector<float>& h, int64_t B,
                           int64_t C, bool serial) {
  const int64_t blocks = serial ? 1 : std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), C / 64));
  std::vector<float> out(P.n_lora * B * C);
  run_range(serial, 0, blocks, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c0 = (C * p / blocks) & ~int64_t(15), c1 = p + 1 == blocks ? C : (C * (p + 1) / blocks) & ~int64_t(15);
      for (int64_t l = 0; l < P.n_lora; ++l)
        for (int64_t b = 0; b < B; ++b) {
          const Lora& lora = P.lora[l];
          float* o = &out[(l * B + b) * C];
          kernels.vecmat(&h[b * P.hidden + P.offset[l]], lora.B.element(c0), lora.B.fmt, lora.dim, c1 - c0, C, o + c0);
          for (int64_t c = c0; c < c1; ++c) o[c] = activate(lora.outer, (lora.bias ? lora.bias[c] : 0.f) + o[c]);
        }
    }
  });
  return out;
}

// One head of one row, channels [c0, c0 + N): the value residual, then wkv_head, writing y.
void time_mix_head(const IsaKernels& kernels, const TimeMixWeights& P, const float* const* lora_out, bool decay_given,
                   float* S, const float* r, const float* k, const float* v, const float* v_first, float* y, int64_t c0,
                   int64_t N) {
  float vv[64];
  for (int64_t j = 0; j < N; ++j)  // value residual: v + (v_first - v) * gate
    vv[j] = P.n_lora > VALUE ? v[j] + (v_first[j] - v[j]) * lora_out[VALUE][j] : v[j];
  wkv_head(kernels, S, r, lora_out[DECAY], decay_given, k, vv, lora_out[ICLR], lora_out[GATE], P.k_k + c0,
           P.k_a + c0, P.r_k + c0, P.ln_w + c0, P.ln_b + c0, y, N, P.eps);
}

// TimeMix's parameters (the ops' keyword arguments), checked once per call.
TimeMixWeights time_mix_weights(int64_t C, bool residual, const at::Tensor& w0, const at::Tensor& w1,
                                const at::Tensor& w2, const at::Tensor& a0, const at::Tensor& a1, const at::Tensor& a2,
                                const std::optional<at::Tensor>& v0, const std::optional<at::Tensor>& v1,
                                const std::optional<at::Tensor>& v2, const at::Tensor& g1, const at::Tensor& g2,
                                const at::Tensor& k_k, const at::Tensor& k_a, const at::Tensor& r_k,
                                const at::Tensor& ln_w, const at::Tensor& ln_b, double eps) {
  TORCH_CHECK(residual == (v0.has_value() && v1.has_value() && v2.has_value()),
              "v_first and the value LoRA (v0, v1, v2) are given together (every layer but the first) or not at all");
  TimeMixWeights P;
  P.lora[DECAY] = Lora(&w0, w1, w2, C, Act::Tanh, Act::None, 1, "w (decay LoRA)");
  P.lora[ICLR] = Lora(&a0, a1, a2, C, Act::None, Act::Sigmoid, 4, "a (in-context rate LoRA)");
  P.lora[GATE] = Lora(nullptr, g1, g2, C, Act::Sigmoid, Act::None, 5, "g (gate LoRA)");
  if (residual) P.lora[VALUE] = Lora(&*v0, *v1, *v2, C, Act::None, Act::Sigmoid, 3, "v (value residual LoRA)");
  P.n_lora = residual ? 4 : 3;
  P.hidden = 0;
  for (int64_t l = 0; l < P.n_lora; ++l) {
    P.offset[l] = P.hidden;
    P.hidden += P.lora[l].dim;
  }
  P.k_k = f32(k_k, C, "k_k");
  P.k_a = f32(k_a, C, "k_a");
  P.r_k = f32(r_k, C, "r_k");
  P.ln_w = f32(ln_w, C, "ln_x.weight");
  P.ln_b = f32(ln_b, C, "ln_x.bias");
  P.eps = float(eps);
  return P;
}

at::Tensor time_mix_(at::Tensor& state, const at::Tensor& mixed, const at::Tensor& r, const at::Tensor& k,
                     const at::Tensor& v, const std::optional<at::Tensor>& v_first, const at::Tensor& w0,
                     const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& a0, const at::Tensor& a1,
                     const at::Tensor& a2, const std::optional<at::Tensor>& v0, const std::optional<at::Tensor>& v1,
                     const std::optional<at::Tensor>& v2, const at::Tensor& g1, const at::Tensor& g2,
                     const at::Tensor& k_k, const at::Tensor& k_a, const at::Tensor& r_k, const at::Tensor& ln_w,
                     const at::Tensor& ln_b, double eps, int64_t isa, bool serial) {
  TORCH_CHECK(state.dim() == 4 && state.is_contiguous() && state.scalar_type() == at::kFloat,
              "state must be a contiguous float32 [B, H, N, N] tensor");
  const int64_t B = state.size(0), H = state.size(1), N = state.size(2), C = H * N;
  TORCH_CHECK(N <= 64, "head size must be <= 64, got ", N);
  const bool residual = v_first.has_value();
  const IsaKernels& kernels = kernels_for(isa);
  const TimeMixWeights P = time_mix_weights(C, residual, w0, w1, w2, a0, a1, a2, v0, v1, v2, g1, g2, k_k, k_a, r_k,
                                            ln_w, ln_b, eps);
  const float* xm = f32(mixed, 6 * B * C, "mixed");
  const float *rp = f32(r, B * C, "r"), *kp = f32(k, B * C, "k"), *vp = f32(v, B * C, "v");
  const float* vf = residual ? f32(*v_first, B * C, "v_first") : nullptr;
  at::Tensor y = at::empty({B, C}, r.options());
  float* yp = y.data_ptr<float>();
  float* S = state.data_ptr<float>();
  const std::vector<float> lora_out = lora_up(kernels, P, lora_down(kernels, P, xm, B, C, serial), B, C, serial);
  run_range(serial, 0, B * H, 1, [&](int64_t i0, int64_t i1) {  // every head of every row: independent
    FlushDenormals flush;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / H, c0 = (i % H) * N, o = b * C + c0;
      const float* head_out[4];
      for (int64_t l = 0; l < P.n_lora; ++l) head_out[l] = &lora_out[(l * B + b) * C + c0];
      time_mix_head(kernels, P, head_out, false, S + i * N * N, rp + o, kp + o, vp + o, residual ? vf + o : nullptr,
                    yp + o, c0, N);
    }
  });
  return y;
}

// Where each row of a batch starts among its `tokens` tokens, then `tokens`: from cu_seqlens [rows + 1] (int64,
// packed rows of any lengths: fla's varlen convention), else `rows` rows of equal length.
std::vector<int64_t> row_bounds(const std::optional<at::Tensor>& cu_seqlens, int64_t rows, int64_t tokens) {
  std::vector<int64_t> cu;
  if (cu_seqlens.has_value()) {
    const at::Tensor c = cu_seqlens->to(at::kLong).contiguous();
    cu.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  } else {
    TORCH_CHECK(rows >= 1 && tokens % rows == 0, tokens, " tokens do not split into ", rows, " rows");
    for (int64_t row = 0; row <= rows; ++row) cu.push_back(row * (tokens / rows));
  }
  TORCH_CHECK(cu.size() >= 2 && cu.front() == 0 && cu.back() == tokens, "cu_seqlens must run from 0 to ", tokens);
  for (size_t row = 0; row + 1 < cu.size(); ++row) TORCH_CHECK(cu[row] <= cu[row + 1], "cu_seqlens must not decrease");
  return cu;
}

// WKV-7 over sequences, token by token (kernels/reference.py's recurrence). Inputs [B, T, H, N] float32 with w
// the log decay, or rows of different lengths packed as [1, total, H, N] with `cu_seqlens` [rows + 1] (int64,
// row b is tokens cu_seqlens[b] .. cu_seqlens[b + 1]); state [rows, H, N, N] (value x key) is copied, never
// modified. Every (row, head) pair is independent and its N x N state (16 KB at N = 64) stays in L1 for the
// whole sequence: per token ~4 N^2 flops and no memory traffic beyond the inputs, where the chunked torch form
// runs tens of small ops per chunk. Packed rows need no padding tokens.
std::tuple<at::Tensor, at::Tensor> wkv7(const at::Tensor& r, const at::Tensor& w, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& a, const at::Tensor& b,
                                        const at::Tensor& state, const std::optional<at::Tensor>& cu_seqlens,
                                        int64_t isa, bool serial) {
  TORCH_CHECK(r.dim() == 4, "wkv7 inputs must be [B, T, H, N]");
  const int64_t H = r.size(2), N = r.size(3), tokens = r.size(0) * r.size(1), numel = tokens * H * N;
  TORCH_CHECK(N <= 64, "head size must be <= 64, got ", N);
  TORCH_CHECK(!cu_seqlens.has_value() || r.size(0) == 1, "packed rows (cu_seqlens) come as [1, total, H, N]");
  const std::vector<int64_t> cu = row_bounds(cu_seqlens, r.size(0), tokens);
  const int64_t rows = static_cast<int64_t>(cu.size()) - 1;
  const float *rp = f32(r, numel, "r"), *wp = f32(w, numel, "w"), *kp = f32(k, numel, "k"), *vp = f32(v, numel, "v"),
              *ap = f32(a, numel, "a"), *bp = f32(b, numel, "b");
  f32(state, rows * H * N * N, "state");
  const IsaKernels& kernels = kernels_for(isa);
  at::Tensor S = state.clone();
  at::Tensor y = at::empty(r.sizes(), r.options());
  float *Sp = S.data_ptr<float>(), *yp = y.data_ptr<float>();
  run_range(serial, 0, rows * H, 1, [&](int64_t i0, int64_t i1) {
    FlushDenormals flush;
    float kk[64], decay[64];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t row = i / H, h = i % H;
      for (int64_t t = cu[row]; t < cu[row + 1]; ++t) {
        const int64_t o = (t * H + h) * N;
        for (int64_t j = 0; j < N; ++j) {
          kk[j] = -ap[o + j];  // wkv_rows takes -a (the decode step's normalised key)
          decay[j] = std::exp(wp[o + j]);
        }
        kernels.wkv_rows(Sp + i * N * N, kk, decay, bp + o, kp + o, rp + o, vp + o, yp + o, N);
      }
    }
  });
  return {y, S};
}

// time_mix_ for whole sequences (prefill, scoring): the same per-token equations (time_mix_head), with the LoRAs
// as GEMMs over every token at once. mixed [6, n, C] and r, k, v (v_first) [n, C] hold a batch's rows one after
// another (cu_seqlens, else the state's rows of equal length); every (row, head) runs its tokens in order with its
// N x N state in L1, as wkv7 does. The state [rows, H, N, N] is copied, never modified. Returns (y [n, C], the
// output projection's input; the state after each row's tokens).
std::tuple<at::Tensor, at::Tensor> time_mix_seq(
    const at::Tensor& state, const at::Tensor& mixed, const at::Tensor& r, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& v_first, const at::Tensor& w0, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& a0, const at::Tensor& a1, const at::Tensor& a2, const std::optional<at::Tensor>& v0,
    const std::optional<at::Tensor>& v1, const std::optional<at::Tensor>& v2, const at::Tensor& g1,
    const at::Tensor& g2, const at::Tensor& k_k, const at::Tensor& k_a, const at::Tensor& r_k, const at::Tensor& ln_w,
    const at::Tensor& ln_b, double eps, const std::optional<at::Tensor>& cu_seqlens, int64_t isa, bool serial) {
  TORCH_CHECK(state.dim() == 4 && state.scalar_type() == at::kFloat, "state must be a float32 [rows, H, N, N] tensor");
  const int64_t rows = state.size(0), H = state.size(1), N = state.size(2), C = H * N, n = r.size(0);
  TORCH_CHECK(N <= 64, "head size must be <= 64, got ", N);
  const std::vector<int64_t> cu = row_bounds(cu_seqlens, rows, n);
  TORCH_CHECK(static_cast<int64_t>(cu.size()) == rows + 1, "cu_seqlens has ", cu.size() - 1, " rows, the state ", rows);
  const bool residual = v_first.has_value();
  const IsaKernels& kernels = kernels_for(isa);
  const TimeMixWeights P = time_mix_weights(C, residual, w0, w1, w2, a0, a1, a2, v0, v1, v2, g1, g2, k_k, k_a, r_k,
                                            ln_w, ln_b, eps);
  f32(mixed, 6 * n * C, "mixed");
  const float *rp = f32(r, n * C, "r"), *kp = f32(k, n * C, "k"), *vp = f32(v, n * C, "v");
  const float* vf = residual ? f32(*v_first, n * C, "v_first") : nullptr;
  // out[l] = outer(bias + inner(mixed[input] @ A) @ B) for every token: the LoRA matrices as float32 (bf16 ones,
  // a compressed model's, are widened: a few hundred KB per layer)
  const auto lora = [&](const Lora& l, const at::Tensor* bias, const at::Tensor& A, const at::Tensor& B) {
    at::Tensor h = at::mm(mixed.select(0, l.input), A.to(at::kFloat));
    if (l.inner == Act::Tanh) h.tanh_();
    if (l.inner == Act::Sigmoid) h.sigmoid_();
    at::Tensor out = bias ? at::addmm(bias->reshape({C}), h, B.to(at::kFloat)) : at::mm(h, B.to(at::kFloat));
    if (l.outer == Act::Sigmoid) out.sigmoid_();
    return out;
  };
  // the decay itself, exp(kLogDecayScale * sigmoid(d)), vectorised over all tokens (two exponentials per channel
  // and token were most of the per-token work)
  const at::Tensor out[4] = {lora(P.lora[DECAY], &w0, w1, w2).sigmoid_().mul_(kLogDecayScale).exp_(),
                             lora(P.lora[ICLR], &a0, a1, a2),
                             lora(P.lora[GATE], nullptr, g1, g2),
                             residual ? lora(P.lora[VALUE], &*v0, *v1, *v2) : at::Tensor()};
  const float* outp[4];
  for (int64_t l = 0; l < P.n_lora; ++l) outp[l] = out[l].data_ptr<float>();
  at::Tensor S = state.contiguous().clone(), y = at::empty({n, C}, r.options());
  float *Sp = S.data_ptr<float>(), *yp = y.data_ptr<float>();
  run_range(serial, 0, rows * H, 1, [&](int64_t i0, int64_t i1) {
    FlushDenormals flush;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t row = i / H, c0 = (i % H) * N;
      for (int64_t t = cu[row]; t < cu[row + 1]; ++t) {
        const int64_t o = t * C + c0;
        const float* head_out[4];
        for (int64_t l = 0; l < P.n_lora; ++l) head_out[l] = outp[l] + o;
        time_mix_head(kernels, P, head_out, true, Sp + i * N * N, rp + o, kp + o, vp + o, residual ? vf + o : nullptr,
                      yp + o, c0, N);
      }
    }
  });
  return {y, S};
}

// out = LayerNorm(row) over its C channels, with the affine.
void layer_norm_row(const float* row, const float* w, const float* bias, float eps, int64_t C, float* out) {
  float mean = 0.f, var = 0.f;
  for (int64_t c = 0; c < C; ++c) mean += row[c];
  mean /= float(C);
  for (int64_t c = 0; c < C; ++c) var += (row[c] - mean) * (row[c] - mean);
  const float rstd = 1.f / std::sqrt(var / float(C) + eps);
  for (int64_t c = 0; c < C; ++c) out[c] = (row[c] - mean) * rstd * w[c] + bias[c];
}

// One token-shift interpolation: out = xn + (before - xn) * mix.
void shift_row(const float* xn, const float* before, const float* mix, int64_t C, float* out) {
  for (int64_t c = 0; c < C; ++c) out[c] = xn[c] + (before[c] - xn[c]) * mix[c];
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
    float* pr = prev + b * C;
    layer_norm_row(xp + b * C, w, bias, float(eps), C, xn.data());
    for (int64_t m = 0; m < n; ++m) shift_row(xn.data(), pr, mix[m], C, op + (m * B + b) * C);
    std::copy(xn.begin(), xn.end(), pr);
  }
  return out;
}

// shift_mix_ for whole sequences: x [n, C] holds the tokens of a batch's rows one after another (cu_seqlens, else
// x_prev's rows of equal length); each token is shifted against the token before it in its row, a row's first
// against its row of x_prev. Returns ([len(mixes), n, C], each row's last normalised token [rows, C]: the new
// x_prev, the old one kept for an empty row); x_prev is only read.
std::tuple<at::Tensor, at::Tensor> shift_mix_seq(const at::Tensor& x, const at::Tensor& x_prev, const at::Tensor& ln_w,
                                                 const at::Tensor& ln_b, double eps, at::TensorList mixes,
                                                 const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(x.dim() == 2 && x_prev.dim() == 2 && x_prev.size(1) == x.size(1), "x must be [n, C], x_prev [rows, C]");
  const int64_t n = x.size(0), C = x.size(1), rows = x_prev.size(0), m = static_cast<int64_t>(mixes.size());
  const std::vector<int64_t> cu = row_bounds(cu_seqlens, rows, n);
  TORCH_CHECK(static_cast<int64_t>(cu.size()) == rows + 1, "cu_seqlens has ", cu.size() - 1, " rows, x_prev ", rows);
  f32(x, n * C, "x"), f32(ln_w, C, "ln weight"), f32(ln_b, C, "ln bias");
  const float* prev = f32(x_prev, rows * C, "x_prev");
  std::vector<const float*> mix(m);
  for (int64_t i = 0; i < m; ++i) mix[i] = f32(mixes[i], C, "mix vector");
  const at::Tensor normed = at::layer_norm(x, {C}, ln_w, ln_b, eps);
  at::Tensor out = at::empty({m, n, C}, x.options()), last = x_prev.clone();
  const float* xn = normed.data_ptr<float>();
  float *op = out.data_ptr<float>(), *lp = last.data_ptr<float>();
  std::vector<const float*> before(n);  // what token t is shifted against
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t t = cu[row]; t < cu[row + 1]; ++t) before[t] = t == cu[row] ? prev + row * C : xn + (t - 1) * C;
  at::parallel_for(0, n, std::max<int64_t>(1, (1 << 15) / (m * C)), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t i = 0; i < m; ++i) shift_row(xn + t * C, before[t], mix[i], C, op + (i * n + t) * C);
  });
  for (int64_t row = 0; row < rows; ++row)
    if (cu[row + 1] > cu[row]) std::copy(xn + (cu[row + 1] - 1) * C, xn + cu[row + 1] * C, lp + row * C);
  return {out, last};
}

// ------------------------------------------------------------------ a whole decode step
// Every layer of one decode step (B <= a few rows) in one op. From Python each layer dispatched ~15 ops
// (~5-10 us each, their arguments checked and boxed every time): a third of a 0.1B int8 step, more than its
// LoRAs' bytes cost. Here the same functions run back to back: shift_mix_, the GEMVs, time_mix_, the FFN.

// The operands of layer i are weights[i * kLayerTensors, (i + 1) * kLayerTensors), in this order
// (model/cpu_decode.py `layer_operands` builds them): ln1 weight and bias, the six token-shift mixes r w k v a g,
// time_mix_'s w0 w1 w2 a0 a1 a2 v0 v1 v2 g1 g2 k_k k_a r_k ln_w ln_b (v0 v1 v2 empty in the first layer), ln2
// weight and bias, the FFN's mix, then (weight, scales, minimums) of each Linear in `Linear` order.
enum LayerTensor : int64_t { LN1_W, LN1_B, MIXES, TIME_MIX = MIXES + 6, LN2_W = TIME_MIX + 16, LN2_B, FFN_MIX,
                             LINEARS, kLayerTensors = LINEARS + 3 * 6 };
enum class Linear : int64_t { Receptance, Key, Value, Output, FfnKey, FfnValue };
// How each Linear runs, in `plan` (kPlanInts per Linear, `Linear` order per layer): its format, the
// instruction set of its GEMV (-1: torch's own product, where measured faster), streams, prefetch, serial.
constexpr int64_t kPlanInts = 5;

at::Tensor apply_linear(const at::Tensor* operands, const int64_t* plan, const at::Tensor& x) {
  if (plan[1] < 0) {
    TORCH_CHECK(plan[0] == F32, "decode_layers_: torch's own product runs float32 weights only");
    return at::linear(x, operands[0]);
  }
  return gemv(x, operands[0], operands[1], operands[2], plan[0], plan[1], plan[2], plan[3], plan[4] != 0);
}

// x [B, C] (the embedding after ln0) through every layer; the state [L, B, ...] is updated in place, as by the
// per-layer ops. Returns the last layer's output (before ln_out). `eps`: ln1, ln2 and ln_x's per layer.
at::Tensor decode_layers_(const at::Tensor& x_in, at::Tensor& att_x_prev, at::Tensor& wkv, at::Tensor& ffn_x_prev,
                          at::TensorList weights, at::IntArrayRef plan, at::ArrayRef<double> eps, int64_t isa,
                          bool serial) {
  const int64_t L = wkv.size(0);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == L * kLayerTensors, "decode_layers_: expected ",
              L * kLayerTensors, " weight tensors for ", L, " layers, got ", weights.size());
  TORCH_CHECK(static_cast<int64_t>(plan.size()) == L * 6 * kPlanInts && static_cast<int64_t>(eps.size()) == 3 * L,
              "decode_layers_: plan needs ", kPlanInts, " ints per Linear and eps 3 values per layer");
  TORCH_CHECK(att_x_prev.size(0) == L && ffn_x_prev.size(0) == L, "decode_layers_: state layers disagree");
  at::Tensor x = x_in.contiguous().clone(), v_first;
  for (int64_t i = 0; i < L; ++i) {
    const at::Tensor* W = weights.data() + i * kLayerTensors;
    const int64_t* lp = plan.data() + i * 6 * kPlanInts;
    const auto linear_of = [&](Linear which, const at::Tensor& in) {
      const int64_t l = static_cast<int64_t>(which);
      return apply_linear(W + LINEARS + 3 * l, lp + kPlanInts * l, in);
    };
    at::Tensor att_prev = att_x_prev.select(0, i), state = wkv.select(0, i), ffn_prev = ffn_x_prev.select(0, i);
    const at::Tensor mixed = shift_mix_(x, att_prev, W[LN1_W], W[LN1_B], eps[3 * i], at::TensorList(W + MIXES, 6));
    const at::Tensor r = linear_of(Linear::Receptance, mixed[0]), k = linear_of(Linear::Key, mixed[2]),
                     v = linear_of(Linear::Value, mixed[3]);
    const at::Tensor* T = W + TIME_MIX;
    const bool first = i == 0;
    const std::optional<at::Tensor> none, vf = first ? none : std::optional<at::Tensor>(v_first);
    const at::Tensor y = time_mix_(state, mixed, r, k, v, vf, T[0], T[1], T[2], T[3], T[4], T[5],
                                   first ? none : std::optional<at::Tensor>(T[6]),
                                   first ? none : std::optional<at::Tensor>(T[7]),
                                   first ? none : std::optional<at::Tensor>(T[8]), T[9], T[10], T[11], T[12], T[13],
                                   T[14], T[15], eps[3 * i + 2], isa, serial);
    if (first) v_first = v;
    x.add_(linear_of(Linear::Output, y));
    const at::Tensor xk = shift_mix_(x, ffn_prev, W[LN2_W], W[LN2_B], eps[3 * i + 1], at::TensorList(W + FFN_MIX, 1))[0];
    x.add_(linear_of(Linear::FfnValue, linear_of(Linear::FfnKey, xk).relu_().square_()));
  }
  return x;
}

}  // namespace
}  // namespace rwkv7

TORCH_LIBRARY(rwkv7_cpu, m) {
  m.def("supported_isas() -> int[]", &rwkv7::supported_isas);
  m.def("gemv(Tensor x, Tensor w, Tensor scales, Tensor mins, int fmt, *, int isa, int streams, int prefetch, "
        "bool serial) -> Tensor",
        &rwkv7::gemv);
  m.def("dequantize(Tensor w, Tensor scales, Tensor mins, int fmt, int K, ScalarType dtype, *, int isa) -> Tensor",
        &rwkv7::dequantize);
  m.def("linear(Tensor x, Tensor w, Tensor scales, Tensor mins, int fmt, int block, *, int isa) -> Tensor",
        &rwkv7::linear);
  m.def("time_mix_(Tensor(a!) state, Tensor mixed, Tensor r, Tensor k, Tensor v, Tensor? v_first, *, "
        "Tensor w0, Tensor w1, Tensor w2, Tensor a0, Tensor a1, Tensor a2, Tensor? v0, Tensor? v1, Tensor? v2, "
        "Tensor g1, Tensor g2, Tensor k_k, Tensor k_a, Tensor r_k, Tensor ln_w, Tensor ln_b, float eps, int isa, "
        "bool serial) -> Tensor",
        &rwkv7::time_mix_);
  m.def("wkv7(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor state, Tensor? cu_seqlens, *, "
        "int isa, bool serial) "
        "-> (Tensor, Tensor)",
        &rwkv7::wkv7);
  m.def("shift_mix_(Tensor x, Tensor(a!) x_prev, Tensor ln_w, Tensor ln_b, float eps, Tensor[] mixes) -> Tensor",
        &rwkv7::shift_mix_);
  m.def("shift_mix_seq(Tensor x, Tensor x_prev, Tensor ln_w, Tensor ln_b, float eps, Tensor[] mixes, "
        "Tensor? cu_seqlens) -> (Tensor, Tensor)",
        &rwkv7::shift_mix_seq);
  m.def("time_mix_seq(Tensor state, Tensor mixed, Tensor r, Tensor k, Tensor v, Tensor? v_first, *, "
        "Tensor w0, Tensor w1, Tensor w2, Tensor a0, Tensor a1, Tensor a2, Tensor? v0, Tensor? v1, Tensor? v2, "
        "Tensor g1, Tensor g2, Tensor k_k, Tensor k_a, Tensor r_k, Tensor ln_w, Tensor ln_b, float eps, "
        "Tensor? cu_seqlens, int isa, bool serial) -> (Tensor, Tensor)",
        &rwkv7::time_mix_seq);
  m.def("decode_layers_(Tensor x, Tensor(a!) att_x_prev, Tensor(b!) wkv, Tensor(c!) ffn_x_prev, Tensor[] weights, "
        "int[] plan, float[] eps, *, int isa, bool serial) -> Tensor",
        &rwkv7::decode_layers_);
}
