// One-pass CPU kernels for jaxopt_lab's optimizer steps, as XLA FFI custom calls.
//
// XLA:CPU compiles an Adam step into three loops over memory (new m, new v, new p): ~40 bytes
// per float32 parameter instead of the 28 a single pass moves. These handlers make that single
// pass, doing torch's single-tensor (foreach=False) arithmetic in the same order, with the same
// roundings, as the pure-JAX rules in jaxopt_lab/optim/{adam,sgd,radam,nadam,adamax,
// adadelta,rprop}.py:
//
//   torch op                        here
//   a.add(b, alpha=s)               fma(s, b, a)
//   a.mul(s)                        a * s                  (rounded on its own)
//   a.lerp(e, w), |w| < 0.5         fma(w, e - a, a)
//   a.lerp(e, w), |w| >= 0.5        fma(w - 1, e - a, e)
//   a.addcmul(b, c, value=v)        fma(v * b, c, a)
//   a.addcdiv(b, c, value=v)        a + (v * b) / c
//   a.sqrt(), a / s, a + s          one IEEE operation each
//   a.abs()                         std::fabs(a)           (exact)
//   torch.maximum(a, b)             a >= b or a NaN ? a : b
//   a * b (two tensors)             one IEEE operation
//   s / a (Tensor.__rtruediv__)     (1 / a) * s            (a.reciprocal() * s: two roundings)
//   a.sign()                        (a > 0) - (a < 0)      (sign(NaN) = 0, sign(-0.0) = +0.0)
//   a.clamp(lo, hi)                 min(max(a, lo), hi)    (XLA's: NaN wins, max(-0, +0) = +0)
//
// Build flags matter: -ffp-contract=off (no FMA the source does not spell), no -ffast-math
// (setup.py passes -fno-fast-math after the user's CFLAGS; the #error guards below refuse a build
// in which value-changing math flags are still in effect).
// The step's scalars (bias corrections, lr, ...) arrive already rounded to float32 in one
// small buffer, computed by the JAX side exactly as for the pure rule. Outputs may alias inputs
// (the JAX side asks XLA to reuse donated buffers); each element is read before it is written.
// One call updates every float32 leaf of the optimizer (like torch's multi-tensor fused
// kernels): XLA's per-leaf loop overhead goes too. Leaves are cut into blocks of at most 16 Ki
// elements, consecutive small blocks gathered into tasks of up to 16 Ki elements, and the tasks
// shared out over XLA's intra-op thread pool when there are enough of them.

#include <Python.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

// Numerics guards. The kernels must round exactly as the pure rules do; a user's CFLAGS come
// before setup.py's flags and a compiler may not honour a flag, so a build in which
// value-changing math options are still in effect fails here (the package then installs without
// the kernels and runs the pure rules) instead of producing kernels that round differently.
#if defined(__FAST_MATH__) || (defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__) || \
    defined(__ASSOCIATIVE_MATH__) || defined(__RECIPROCAL_MATH__) || defined(__NO_SIGNED_ZEROS__)
#error "jaxopt_lab's kernels must be built without -ffast-math and its value-changing parts"
#endif
#if defined(__FLT_EVAL_METHOD__) && __FLT_EVAL_METHOD__ != 0
#error "jaxopt_lab's kernels need float operations rounded to float (FLT_EVAL_METHOD 0, not x87)"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF  // as -ffp-contract=off, in case the flag is overridden
#endif

namespace ffi = xla::ffi;

// Where std::fma gets its hardware instruction. Which one runs decides speed, never results:
// std::fma is exact either way. With a hardware FMA it is inlined and the loops vectorize;
// without one it is a libm call per element (glibc's fmaf, correctly rounded), several times
// slower than XLA's own loops. Three cases:
//  * the whole file compiled for a CPU with FMA (-march=native, -mfma, and aarch64 always):
//    the compiler defines __FP_FAST_FMAF;
//  * GCC on x86-64: every block kernel is compiled twice, for x86-64-v3 (AVX2 + FMA) and for
//    plain x86-64 (no FMA instruction: libm calls), and the loader picks one per CPU
//    (target_clones);
//  * otherwise (clang on x86-64, whose target_clones this file does not rely on; or a build
//    that sets JOL_CLONES itself): libm calls.
// HardwareFma() reports which case runs on this CPU; jaxopt_lab._native routes leaves to the
// kernels under JAXOPT_LAB_NATIVE=auto only where it is true (=always still uses them).
#if defined(JOL_CLONES)
// set by the build
#define JOL_X86_CLONES 0
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define JOL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define JOL_X86_CLONES 1
#else
#define JOL_CLONES
#define JOL_X86_CLONES 0
#endif

#if JOL_X86_CLONES && !defined(__FP_FAST_FMAF)
// The same two versions as JOL_CLONES, dispatched by the same resolver: returns 1 exactly where
// the block kernels run their x86-64-v3 clone.
__attribute__((target("default"))) int JolCloneHasFma() { return 0; }
__attribute__((target("arch=x86-64-v3"))) int JolCloneHasFma() { return 1; }
#endif

namespace {

// Whether the block kernels on this CPU compute std::fma with a hardware instruction.
bool HardwareFma() {
#if defined(__FP_FAST_FMAF)
  return true;
#elif JOL_X86_CLONES
  return JolCloneHasFma() == 1;
#else
  return false;
#endif
}

const char* FmaSource() {
#if defined(__FP_FAST_FMAF)
  return "hardware FMA in every kernel (__FP_FAST_FMAF)";
#elif JOL_X86_CLONES
  return HardwareFma() ? "x86-64-v3 clones (AVX2 + FMA)"
                       : "x86-64 clones without FMA (libm fmaf calls)";
#else
  return "no hardware FMA in this build (libm fmaf calls)";
#endif
}

// Elements per block handed to one thread: 16 Ki floats = 64 KiB per array.
constexpr int64_t kBlock = 1 << 14;

// Runs body(b) for b in [0, blocks), on the calling thread and up to num_threads - 1 pool
// threads (more would oversubscribe the cores: 1.7x slower for Adam on 145k params). The caller
// takes blocks too and only waits for blocks other threads have started, so it cannot deadlock
// on a busy (or one-thread) pool; a task that starts late finds no work and touches nothing.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t blocks, int64_t elements, const Body& body) {
  const int64_t workers =
      elements < 2 * kBlock ? 0 : std::min<int64_t>(pool.num_threads() - 1, blocks - 1);
  if (workers <= 0) {
    for (int64_t b = 0; b < blocks; ++b) body(b);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto shared = std::make_shared<Shared>();
  const Body* fn = &body;  // only dereferenced for a claimed block, i.e. before we return
  auto work = [shared, blocks, fn]() {
    for (int64_t b; (b = shared->next.fetch_add(1, std::memory_order_relaxed)) < blocks;) {
      (*fn)(b);
      shared->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t i = 0; i < workers; ++i) pool.Schedule(decltype(work)(work));  // a copy each
  work();
  while (shared->done.load(std::memory_order_acquire) < blocks) std::this_thread::yield();
}

// The leaves of one call. Operands come role-major (all params, then all grads, then each state
// buffer); results likewise (params, then each state buffer), each aliasing its input.
template <int kIn, int kOut>
struct Leaves {
  std::vector<std::array<const float*, kIn>> in;
  std::vector<std::array<float*, kOut>> out;
  std::vector<int64_t> size;
  // Blocks of at most kBlock elements: (leaf, start, end).
  std::vector<std::array<int64_t, 3>> blocks;
  // The units of work handed to threads: task t runs blocks [tasks[t], tasks[t + 1]). A large
  // leaf's blocks are a task each; consecutive small leaves share one, up to kBlock elements in
  // all, so that a thousand leaves of 1k elements are ~60 tasks, not a thousand.
  std::vector<int64_t> tasks;
  int64_t elements = 0;
};

template <int kIn, int kOut>
ffi::Error Collect(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                   Leaves<kIn, kOut>* leaves) {
  if (args.size() % kIn != 0 || rets.size() * kIn != args.size() * kOut) {
    return ffi::Error::InvalidArgument("operand and result counts do not match the optimizer");
  }
  const size_t n = args.size() / kIn;
  leaves->in.resize(n);
  leaves->out.resize(n);
  leaves->size.resize(n);
  for (size_t r = 0; r < kIn; ++r) {
    for (size_t l = 0; l < n; ++l) {
      auto buf = args.get<ffi::Buffer<ffi::F32>>(r * n + l);
      if (buf.has_error()) return buf.error();
      const int64_t size = static_cast<int64_t>(buf->element_count());
      if (r == 0) leaves->size[l] = size;
      if (size != leaves->size[l]) return ffi::Error::InvalidArgument("leaf sizes differ");
      leaves->in[l][r] = buf->typed_data();
    }
  }
  for (size_t r = 0; r < kOut; ++r) {
    for (size_t l = 0; l < n; ++l) {
      auto buf = rets.get<ffi::Buffer<ffi::F32>>(r * n + l);
      if (buf.has_error()) return buf.error();
      if (static_cast<int64_t>((*buf)->element_count()) != leaves->size[l]) {
        return ffi::Error::InvalidArgument("result size differs from its leaf");
      }
      leaves->out[l][r] = (*buf)->typed_data();
    }
  }
  int64_t task_elements = kBlock;  // of the task being filled: none open yet
  for (size_t l = 0; l < n; ++l) {
    for (int64_t lo = 0; lo < leaves->size[l]; lo += kBlock) {
      const int64_t hi = std::min(leaves->size[l], lo + kBlock);
      if (task_elements + (hi - lo) > kBlock) {
        leaves->tasks.push_back(static_cast<int64_t>(leaves->blocks.size()));
        task_elements = 0;
      }
      task_elements += hi - lo;
      leaves->blocks.push_back({static_cast<int64_t>(l), lo, hi});
    }
    leaves->elements += leaves->size[l];
  }
  leaves->tasks.push_back(static_cast<int64_t>(leaves->blocks.size()));
  return ffi::Error::Success();
}

template <typename Scalars>
ffi::Error ReadScalars(const ffi::Buffer<ffi::F32>& buffer, Scalars* s) {
  constexpr size_t kCount = sizeof(Scalars) / sizeof(float);
  if (buffer.element_count() != kCount) {
    return ffi::Error::InvalidArgument("wrong number of step scalars");
  }
  std::copy_n(buffer.typed_data(), kCount, reinterpret_cast<float*>(s));
  return ffi::Error::Success();
}

// A block kernel: fn(in, out, scalars, lo, hi) updates elements [lo, hi) of one leaf.
template <typename Scalars>
using BlockFn = void (*)(const float* const*, float* const*, const Scalars&, int64_t, int64_t);

// Runs fn(in, out, scalars_of(leaf), lo, hi) over every block of every leaf, a task at a time.
template <int kIn, int kOut, typename Fn, typename ScalarsOf>
void RunTasks(ffi::ThreadPool& pool, const Leaves<kIn, kOut>& leaves, Fn fn,
              const ScalarsOf& scalars_of) {
  ParallelFor(pool, static_cast<int64_t>(leaves.tasks.size()) - 1, leaves.elements,
              [&](int64_t t) {
                for (int64_t b = leaves.tasks[t]; b < leaves.tasks[t + 1]; ++b) {
                  const auto& [leaf, lo, hi] = leaves.blocks[b];
                  fn(leaves.in[leaf].data(), leaves.out[leaf].data(), scalars_of(leaf), lo, hi);
                }
              });
}

// Runs fn(in, out, scalars, lo, hi) over every block of every leaf.
template <int kIn, int kOut, typename Fn, typename Scalars>
void RunBlocks(ffi::ThreadPool& pool, const Leaves<kIn, kOut>& leaves, Fn fn, const Scalars& s) {
  RunTasks(pool, leaves, fn, [&](int64_t) -> const Scalars& { return s; });
}

// make.template operator()<flags...>() with runtime bools turned into template arguments: picks
// the instantiation of a block kernel specialised for this call's options.
template <bool... kFixed, typename Make>
auto WithFlags(Make make) {
  return make.template operator()<kFixed...>();
}

template <bool... kFixed, typename Make, typename... Rest>
auto WithFlags(Make make, bool flag, Rest... rest) {
  return flag ? WithFlags<kFixed..., true>(make, rest...)
              : WithFlags<kFixed..., false>(make, rest...);
}

// ---------------------------------------------------------------------------------------------
// Adam / AdamW / AMSGrad (torch.optim._single_tensor_adam).

enum Decay : int64_t { kNoDecay = 0, kL2 = 1, kDecoupled = 2 };

// The element rules' shared torch ops (rounded as in the table at the top of this file).

// grad = -grad if maximize, then the weight decay: grad.add(param, alpha=wd) (kL2) or
// param.mul_(1 - lr * wd) (kDecoupled). `S`: a scalars struct with weight_decay (and decay,
// for kDecoupled).
template <int64_t kDecayMode, bool kMaximize, typename S>
[[gnu::always_inline]] inline void DecayGrad(float& p, float& g, const S& s) {
  if (kMaximize) g = -g;
  if constexpr (kDecayMode == kL2) g = std::fma(s.weight_decay, p, g);
  if constexpr (kDecayMode == kDecoupled) p = p * s.decay;
}

// a.lerp(e, w), its branch (|w| < 0.5) picked per call.
template <bool kSmallWeight>
[[gnu::always_inline]] inline float Lerp(float a, float e, float w) {
  const float diff = e - a;
  return kSmallWeight ? std::fma(w, diff, a) : std::fma(w - 1.0f, diff, e);
}

// a.mul_(beta).addcmul_(x, x, value=value): a running average of squares.
[[gnu::always_inline]] inline float MulAddcmulSquare(float a, float beta, float value, float x) {
  return std::fma(value * x, x, a * beta);
}

// torch.maximum(a, b): a NaN on either side wins. Of two zeros this returns a; XLA's maximum
// returns +0 and torch's a or b (its vector loop b, its scalar tail a), but the rules here never
// compare zeros of opposite signs: exp_avg_sq, max_exp_avg_sq, exp_inf and |g| + eps are
// never -0.
[[gnu::always_inline]] inline float Maximum(float a, float b) {
  return (a >= b || a != a) ? a : b;
}

// a.addcdiv(b, c, value=v)
[[gnu::always_inline]] inline float Addcdiv(float a, float b, float c, float v) {
  return a + (v * b) / c;
}

// The Adam family's shared first steps (torch's _single_tensor_adam, _radam and _nadam run
// them alike): maximize, the weight decay, exp_avg.lerp_(grad, 1 - beta1) and
// exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2). `S`: any of the scalars structs
// below (they share these fields). Returns the decayed param and grad and the new moments.
struct Moments {
  float p, g, m, v;
};

template <int64_t kDecayMode, bool kMaximize, bool kSmallWeight, typename S>
[[gnu::always_inline]] inline Moments AdamMoments(float p, float g, float m0, float v0,
                                                  const S& s) {
  DecayGrad<kDecayMode, kMaximize>(p, g, s);
  const float m = Lerp<kSmallWeight>(m0, g, s.one_minus_beta1);  // exp_avg.lerp_(grad, 1 - b1)
  const float v = MulAddcmulSquare(v0, s.beta2, s.one_minus_beta2, g);
  return {p, g, m, v};
}

// The order of jaxopt_lab._native.ADAM_SCALARS.
struct AdamScalars {
  float one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay, neg_step_size,
      bias_correction2_sqrt;
};

// in: p, g, exp_avg, exp_avg_sq[, max_exp_avg_sq]; out: p, exp_avg, exp_avg_sq[, max_exp_avg_sq]
template <bool kAmsgrad, int64_t kDecayMode, bool kMaximize, bool kSmallWeight>
JOL_CLONES void AdamBlock(const float* const* in, float* const* out, const AdamScalars& s,
                          int64_t lo, int64_t hi) {
  const float *p_in = in[0], *g_in = in[1], *m_in = in[2], *v_in = in[3];
  float *p_out = out[0], *m_out = out[1], *v_out = out[2];
  const float* vmax_in = kAmsgrad ? in[4] : nullptr;
  float* vmax_out = kAmsgrad ? out[3] : nullptr;
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const auto [p, g, m, v] =
        AdamMoments<kDecayMode, kMaximize, kSmallWeight>(p_in[i], g_in[i], m_in[i], v_in[i], s);
    float second = v;
    if (kAmsgrad) {
      second = Maximum(vmax_in[i], v);
      vmax_out[i] = second;
    }
    const float denom = std::sqrt(second) / s.bias_correction2_sqrt + s.eps;
    p_out[i] = Addcdiv(p, m, denom, s.neg_step_size);            // param.addcdiv_(m, denom)
    m_out[i] = m;
    v_out[i] = v;
  }
}

template <bool kAmsgrad, int64_t kDecayMode>
struct MakeAdam {
  template <bool kMaximize, bool kSmallWeight>
  BlockFn<AdamScalars> operator()() const {
    return AdamBlock<kAmsgrad, kDecayMode, kMaximize, kSmallWeight>;
  }
};

template <bool kAmsgrad>
BlockFn<AdamScalars> PickAdam(int64_t decay, bool maximize, bool small_weight) {
  switch (decay) {
    case kL2:
      return WithFlags(MakeAdam<kAmsgrad, kL2>{}, maximize, small_weight);
    case kDecoupled:
      return WithFlags(MakeAdam<kAmsgrad, kDecoupled>{}, maximize, small_weight);
    default:
      return WithFlags(MakeAdam<kAmsgrad, kNoDecay>{}, maximize, small_weight);
  }
}

template <bool kAmsgrad>
ffi::Error AdamImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                    ffi::RemainingRets rets, int64_t decay, bool maximize) {
  AdamScalars s;
  if (auto err = ReadScalars(scalars, &s); err.failure()) return err;
  constexpr int kIn = kAmsgrad ? 5 : 4;
  Leaves<kIn, kIn - 1> leaves;
  if (auto err = Collect(args, rets, &leaves); err.failure()) return err;
  const bool small_weight = std::fabs(s.one_minus_beta1) < 0.5f;
  RunBlocks(pool, leaves, PickAdam<kAmsgrad>(decay, maximize, small_weight), s);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// SGD with momentum (torch.optim._single_tensor_sgd, momentum != 0).

// The order of jaxopt_lab._native.SGD_SCALARS.
struct SgdScalars {
  float neg_lr, momentum, one_minus_dampening, weight_decay;
};

// in: p, g, momentum_buffer; out: p, momentum_buffer
template <bool kDecay, bool kMaximize, bool kNesterov, bool kFirst>
JOL_CLONES void SgdBlock(const float* const* in, float* const* out, const SgdScalars& s,
                         int64_t lo, int64_t hi) {
  const float *p_in = in[0], *g_in = in[1], *b_in = in[2];
  float *p_out = out[0], *b_out = out[1];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const float p = p_in[i];
    float g = kMaximize ? -g_in[i] : g_in[i];
    if (kDecay) g = std::fma(s.weight_decay, p, g);  // grad.add(param, alpha=wd)
    // First step: buf = grad.clone(); later: buf.mul_(momentum).add_(grad, alpha=1 - damp).
    const float b = kFirst ? g : std::fma(s.one_minus_dampening, g, b_in[i] * s.momentum);
    const float d = kNesterov ? std::fma(s.momentum, b, g) : b;
    p_out[i] = std::fma(s.neg_lr, d, p);  // param.add_(d, alpha=-lr)
    b_out[i] = b;
  }
}

struct MakeSgd {
  template <bool kDecay, bool kMaximize, bool kNesterov, bool kFirst>
  BlockFn<SgdScalars> operator()() const {
    return SgdBlock<kDecay, kMaximize, kNesterov, kFirst>;
  }
};

ffi::Error SgdMomentumImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                           ffi::Buffer<ffi::S32> count, ffi::RemainingArgs args,
                           ffi::RemainingRets rets, bool decay, bool maximize, bool nesterov) {
  SgdScalars s;
  if (auto err = ReadScalars(scalars, &s); err.failure()) return err;
  Leaves<3, 2> leaves;
  if (auto err = Collect(args, rets, &leaves); err.failure()) return err;
  const bool first = count.typed_data()[0] == 0;
  RunBlocks(pool, leaves, WithFlags(MakeSgd{}, decay, maximize, nesterov, first), s);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// RAdam / RAdamW (torch.optim._single_tensor_radam).

// kL2WhereNonzero: a scheduled or traced weight decay; torch's `if weight_decay != 0` is taken
// per step on the rounded scalar (jaxopt_lab.optim.leafwise.l2_weight_decay), here per call.
constexpr int64_t kL2WhereNonzero = 3;

int64_t StepDecay(int64_t decay, float weight_decay) {
  if (decay != kL2WhereNonzero) return decay;
  return weight_decay != 0.0f ? kL2 : kNoDecay;
}

// Make<mode>{} with the flags (see WithFlags) for this call's weight decay. Rules without a
// decoupled decay (Adamax, Adadelta) pass kDecoupledToo = false: Make<kDecoupled> is not built.
template <template <int64_t> class Make, bool kDecoupledToo, typename... Flags>
auto PickDecay(int64_t decay, float weight_decay, Flags... flags) {
  const int64_t mode = StepDecay(decay, weight_decay);
  if constexpr (kDecoupledToo) {
    if (mode == kDecoupled) return WithFlags(Make<kDecoupled>{}, flags...);
  }
  return mode == kL2 ? WithFlags(Make<kL2>{}, flags...) : WithFlags(Make<kNoDecay>{}, flags...);
}

// One call of a kernel whose step scalars are all shared by the leaves: reads them, collects the
// leaves and runs pick(scalars)'s block kernel over them.
template <typename Scalars, int kIn, int kOut, typename Pick>
ffi::Error RunStep(ffi::ThreadPool& pool, const ffi::Buffer<ffi::F32>& scalars,
                   const ffi::RemainingArgs& args, const ffi::RemainingRets& rets, Pick pick) {
  Scalars s;
  if (auto err = ReadScalars(scalars, &s); err.failure()) return err;
  Leaves<kIn, kOut> leaves;
  if (auto err = Collect(args, rets, &leaves); err.failure()) return err;
  RunBlocks(pool, leaves, pick(s), s);
  return ffi::Error::Success();
}

// The order of jaxopt_lab.optim.native.RADAM_SCALARS. `rectify` is 1 on the steps with
// rho_t > 5 (a per-step decision made by the JAX side), else 0.
struct RadamScalars {
  float one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay, lr, bias_correction1,
      bias_correction2_sqrt, rect, rectify;
};

// in: p, g, exp_avg, exp_avg_sq; out: p, exp_avg, exp_avg_sq
template <int64_t kDecayMode, bool kMaximize, bool kSmallWeight, bool kRectify>
JOL_CLONES void RadamBlock(const float* const* in, float* const* out, const RadamScalars& s,
                           int64_t lo, int64_t hi) {
  const float *p_in = in[0], *g_in = in[1], *m_in = in[2], *v_in = in[3];
  float *p_out = out[0], *m_out = out[1], *v_out = out[2];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const auto [p, g, m, v] =
        AdamMoments<kDecayMode, kMaximize, kSmallWeight>(p_in[i], g_in[i], m_in[i], v_in[i], s);
    float update = (m / s.bias_correction1) * s.lr;               // (exp_avg / bc1) * lr
    if (kRectify) {
      const float denom = std::sqrt(v) + s.eps;                   // exp_avg_sq.sqrt().add_(eps)
      // bc2 ** 0.5 / denom is Tensor.__rtruediv__: denom.reciprocal() * scalar
      const float adaptive = (1.0f / denom) * s.bias_correction2_sqrt;
      update = (update * adaptive) * s.rect;                      // * adaptive_lr * rect
    }
    p_out[i] = p - update;  // param.add_(update, alpha=-1): fma(-1, u, p) is p - u exactly
    m_out[i] = m;
    v_out[i] = v;
  }
}

template <int64_t kDecayMode>
struct MakeRadam {
  template <bool kMaximize, bool kSmallWeight, bool kRectify>
  BlockFn<RadamScalars> operator()() const {
    return RadamBlock<kDecayMode, kMaximize, kSmallWeight, kRectify>;
  }
};

ffi::Error RadamImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                     ffi::RemainingRets rets, int64_t decay, bool maximize) {
  return RunStep<RadamScalars, 4, 3>(pool, scalars, args, rets, [&](const RadamScalars& s) {
    const bool small_weight = std::fabs(s.one_minus_beta1) < 0.5f;
    return PickDecay<MakeRadam, true>(decay, s.weight_decay, maximize, small_weight,
                                      s.rectify > 0.0f);
  });
}

// ---------------------------------------------------------------------------------------------
// NAdam / NAdamW (torch.optim._single_tensor_nadam). mu_product and the two addcdiv values are
// per-parameter in torch; the JAX side updates mu_product and passes the values per leaf.

// The order of jaxopt_lab.optim.native.NADAM_SCALARS.
struct NadamScalars {
  float one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay, bias_correction2;
};

// One leaf's scalars: the step's, and its two addcdiv values,
// value1 = -lr * (1 - mu) / (1 - mu_product), value2 = -lr * mu_next / (1 - mu_product_next).
struct NadamLeafScalars {
  NadamScalars step;
  float value1, value2;
};

// in: p, g, exp_avg, exp_avg_sq; out: p, exp_avg, exp_avg_sq
template <int64_t kDecayMode, bool kMaximize, bool kSmallWeight>
JOL_CLONES void NadamBlock(const float* const* in, float* const* out, const NadamLeafScalars& ls,
                           int64_t lo, int64_t hi) {
  const float *p_in = in[0], *g_in = in[1], *m_in = in[2], *v_in = in[3];
  float *p_out = out[0], *m_out = out[1], *v_out = out[2];
  const NadamScalars& s = ls.step;
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const auto [p, g, m, v] =
        AdamMoments<kDecayMode, kMaximize, kSmallWeight>(p_in[i], g_in[i], m_in[i], v_in[i], s);
    // exp_avg_sq.div(bias_correction2).sqrt(), then denom.add_(eps)
    const float denom = std::sqrt(v / s.bias_correction2) + s.eps;
    const float p1 = p + (ls.value1 * g) / denom;                 // param.addcdiv_(g, denom, v1)
    p_out[i] = p1 + (ls.value2 * m) / denom;                      // param.addcdiv_(m, denom, v2)
    m_out[i] = m;
    v_out[i] = v;
  }
}

using NadamBlockFn = void (*)(const float* const*, float* const*, const NadamLeafScalars&,
                              int64_t, int64_t);

template <int64_t kDecayMode>
struct MakeNadam {
  template <bool kMaximize, bool kSmallWeight>
  NadamBlockFn operator()() const {
    return NadamBlock<kDecayMode, kMaximize, kSmallWeight>;
  }
};

// Runs fn(in, out, per_leaf[leaf], lo, hi) over every block of every leaf.
template <int kIn, int kOut, typename Fn, typename Scalars>
void RunLeafBlocks(ffi::ThreadPool& pool, const Leaves<kIn, kOut>& leaves, Fn fn,
                   const std::vector<Scalars>& per_leaf) {
  RunTasks(pool, leaves, fn, [&](int64_t leaf) -> const Scalars& { return per_leaf[leaf]; });
}

ffi::Error NadamImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                     ffi::Buffer<ffi::F32> value1, ffi::Buffer<ffi::F32> value2,
                     ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t decay,
                     bool maximize) {
  NadamScalars s;
  if (auto err = ReadScalars(scalars, &s); err.failure()) return err;
  Leaves<4, 3> leaves;
  if (auto err = Collect(args, rets, &leaves); err.failure()) return err;
  const size_t n = leaves.size.size();
  if (value1.element_count() != n || value2.element_count() != n) {
    return ffi::Error::InvalidArgument("expected one pair of step sizes per leaf");
  }
  std::vector<NadamLeafScalars> per_leaf(n);
  for (size_t l = 0; l < n; ++l) {
    per_leaf[l] = {s, value1.typed_data()[l], value2.typed_data()[l]};
  }
  const bool small_weight = std::fabs(s.one_minus_beta1) < 0.5f;
  NadamBlockFn fn;
  switch (StepDecay(decay, s.weight_decay)) {
    case kL2:
      fn = WithFlags(MakeNadam<kL2>{}, maximize, small_weight);
      break;
    case kDecoupled:
      fn = WithFlags(MakeNadam<kDecoupled>{}, maximize, small_weight);
      break;
    default:
      fn = WithFlags(MakeNadam<kNoDecay>{}, maximize, small_weight);
  }
  RunLeafBlocks(pool, leaves, fn, per_leaf);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Adamax (torch.optim._single_tensor_adamax).

// The order of jaxopt_lab.optim.native.ADAMAX_SCALARS. neg_clr = -(lr / (1 - beta1 ** t)).
struct AdamaxScalars {
  float one_minus_beta1, beta2, eps, weight_decay, neg_clr;
};

// in: p, g, exp_avg, exp_inf; out: p, exp_avg, exp_inf
template <int64_t kDecayMode, bool kMaximize, bool kSmallWeight>
JOL_CLONES void AdamaxBlock(const float* const* in, float* const* out, const AdamaxScalars& s,
                            int64_t lo, int64_t hi) {
  const float *p_in = in[0], *g_in = in[1], *m_in = in[2], *u_in = in[3];
  float *p_out = out[0], *m_out = out[1], *u_out = out[2];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    float p = p_in[i], g = g_in[i];
    DecayGrad<kDecayMode, kMaximize>(p, g, s);
    const float m = Lerp<kSmallWeight>(m_in[i], g, s.one_minus_beta1);  // exp_avg.lerp_
    // torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)
    const float u = Maximum(u_in[i] * s.beta2, std::fabs(g) + s.eps);
    p_out[i] = Addcdiv(p, m, u, s.neg_clr);  // param.addcdiv_(exp_avg, exp_inf, value=-clr)
    m_out[i] = m;
    u_out[i] = u;
  }
}

template <int64_t kDecayMode>
struct MakeAdamax {
  template <bool kMaximize, bool kSmallWeight>
  BlockFn<AdamaxScalars> operator()() const {
    return AdamaxBlock<kDecayMode, kMaximize, kSmallWeight>;
  }
};

ffi::Error AdamaxImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                      ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t decay,
                      bool maximize) {
  return RunStep<AdamaxScalars, 4, 3>(pool, scalars, args, rets, [&](const AdamaxScalars& s) {
    const bool small_weight = std::fabs(s.one_minus_beta1) < 0.5f;
    return PickDecay<MakeAdamax, false>(decay, s.weight_decay, maximize, small_weight);
  });
}

// ---------------------------------------------------------------------------------------------
// Adadelta (torch.optim._single_tensor_adadelta).

// The order of jaxopt_lab.optim.native.ADADELTA_SCALARS.
struct AdadeltaScalars {
  float neg_lr, rho, one_minus_rho, eps, weight_decay;
};

// in: p, g, square_avg, acc_delta; out: p, square_avg, acc_delta
template <int64_t kDecayMode, bool kMaximize>
JOL_CLONES void AdadeltaBlock(const float* const* in, float* const* out, const AdadeltaScalars& s,
                              int64_t lo, int64_t hi) {
  const float *p_in = in[0], *g_in = in[1], *v_in = in[2], *u_in = in[3];
  float *p_out = out[0], *v_out = out[1], *u_out = out[2];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    float p = p_in[i], g = g_in[i];
    DecayGrad<kDecayMode, kMaximize>(p, g, s);
    const float u0 = u_in[i];
    const float v = MulAddcmulSquare(v_in[i], s.rho, s.one_minus_rho, g);
    const float std_dev = std::sqrt(v + s.eps);                 // square_avg.add(eps).sqrt_()
    // acc_delta.add(eps).sqrt_().div_(std).mul_(grad)
    const float delta = (std::sqrt(u0 + s.eps) / std_dev) * g;
    u_out[i] = MulAddcmulSquare(u0, s.rho, s.one_minus_rho, delta);
    p_out[i] = std::fma(s.neg_lr, delta, p);                     // param.add_(delta, alpha=-lr)
    v_out[i] = v;
  }
}

template <int64_t kDecayMode>
struct MakeAdadelta {
  template <bool kMaximize>
  BlockFn<AdadeltaScalars> operator()() const {
    return AdadeltaBlock<kDecayMode, kMaximize>;
  }
};

ffi::Error AdadeltaImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                        ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t decay,
                        bool maximize) {
  return RunStep<AdadeltaScalars, 4, 3>(pool, scalars, args, rets, [&](const AdadeltaScalars& s) {
    return PickDecay<MakeAdadelta, false>(decay, s.weight_decay, maximize);
  });
}

// ---------------------------------------------------------------------------------------------
// Rprop (torch.optim._single_tensor_rprop). Comparisons and selects only, besides two products
// and the addcmul; they follow the pure rule's XLA ops (jaxopt_lab/optim/rprop.py) exactly, so
// NaNs, signed zeros and scheduled etas that break 0 < etaminus < 1 < etaplus come out alike.

// torch.sign: (x > 0) - (x < 0), so sign(NaN) = 0 and sign(-0.0) = +0.0.
[[gnu::always_inline]] inline float TorchSign(float x) {
  return static_cast<float>(x > 0.0f) - static_cast<float>(x < 0.0f);
}

// XLA's maximum and minimum (jnp.maximum / jnp.minimum): a NaN on either side wins, and of two
// zeros of opposite signs maximum returns +0 and minimum -0.
// Every comparison is made unconditionally, then selected on: a comparison evaluated only on
// some path may trap (-ftrapping-math), so GCC would keep the branch and not vectorize the loop.
[[gnu::always_inline]] inline float XlaMaximum(float a, float b) {
  const bool nan = a != a, greater = a > b, tie = a == b;
  const float on_tie = std::signbit(a) ? b : a;  // +0 unless both are -0
  const float max = greater ? a : (tie ? on_tie : b);  // b NaN: max is b
  return nan ? a : max;
}

[[gnu::always_inline]] inline float XlaMinimum(float a, float b) {
  const bool nan = a != a, less = a < b, tie = a == b;
  const float on_tie = std::signbit(a) ? a : b;  // -0 unless both are +0
  const float min = less ? a : (tie ? on_tie : b);
  return nan ? a : min;
}

// A -0.0 the compiler cannot see: x + OpaqueNegZero() is x, or its sign's zero if x is
// subnormal (XLA runs with FTZ/DAZ), as the pure rule's x + opaque_zero; x + -0.0f would be
// folded away.
inline float OpaqueNegZero() {
  static volatile float neg_zero = -0.0f;
  return neg_zero;
}

// The order of jaxopt_lab.optim.native.RPROP_SCALARS; minus_one is addcmul's value (-1).
struct RpropScalars {
  float etaminus, etaplus, step_size_min, step_size_max, minus_one;
};

// in: p, g, prev, step_size; out: p, prev, step_size
template <bool kMaximize>
JOL_CLONES void RpropBlock(const float* const* in, float* const* out, const RpropScalars& s,
                           int64_t lo, int64_t hi) {
  const float *p_in = in[0], *g_in = in[1], *prev_in = in[2], *step_in = in[3];
  float *p_out = out[0], *prev_out = out[1], *step_out = out[2];
  const float neg_zero = OpaqueNegZero();
  // The clamp's bounds as XLA's max and min read them (a subnormal one as zero).
  const float step_min = s.step_size_min + neg_zero, step_max = s.step_size_max + neg_zero;
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const float g = kMaximize ? -g_in[i] : g_in[i];
    float f = TorchSign(g * prev_in[i]);  // sign = grad.mul(prev).sign()
    f = f > 0.0f ? s.etaplus : f;         // sign[sign.gt(0)] = etaplus
    f = f < 0.0f ? s.etaminus : f;        // sign[sign.lt(0)] = etaminus
    f = f == 0.0f ? 1.0f : f;             // sign[sign.eq(0)] = 1
    // step_size.mul_(sign).clamp_(step_size_min, step_size_max)
    const float step = XlaMinimum(XlaMaximum(step_in[i] * f, step_min), step_max);
    // grad[sign.eq(etaminus)] = 0 (the pure rule's g + opaque -0.0 orders its loops). Both
    // the kept gradient and its sign are computed unconditionally, then selected (sign(+0) = 0):
    // GCC would thread TorchSign(prev) through the select into branches (see XlaMaximum).
    const float kept = g + neg_zero, kept_sign = TorchSign(kept);
    const bool masked = f == s.etaminus;
    const float prev = masked ? 0.0f : kept;
    const float prev_sign = masked ? 0.0f : kept_sign;
    // param.addcmul_(grad.sign(), step_size, value=-1)
    p_out[i] = std::fma(s.minus_one * prev_sign, step, p_in[i]);
    prev_out[i] = prev;  // prev.copy_(grad)
    step_out[i] = step;
  }
}

struct MakeRprop {
  template <bool kMaximize>
  BlockFn<RpropScalars> operator()() const {
    return RpropBlock<kMaximize>;
  }
};

// `decay`: the shared binding's attribute; Rprop has no weight decay, it must be 0.
ffi::Error RpropImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                     ffi::RemainingRets rets, int64_t decay, bool maximize) {
  if (decay != kNoDecay) return ffi::Error::InvalidArgument("Rprop has no weight decay");
  return RunStep<RpropScalars, 4, 3>(pool, scalars, args, rets, [&](const RpropScalars&) {
    return WithFlags(MakeRprop{}, maximize);
  });
}

}  // namespace

// Operands: the step scalars (and SGD's count, NAdam's per-leaf values), then the leaves' arrays
// role-major.

namespace {

// The binding of the handlers that take only the step scalars and the arrays (params, grads,
// then each state buffer), with the decay mode and maximize.
auto ScalarsArraysDecayMaximize() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()  // step scalars
      .RemainingArgs()               // p, g, then each state buffer
      .RemainingRets()               // p, then each state buffer
      .Attr<int64_t>("decay")
      .Attr<bool>("maximize");
}

}  // namespace

// state: exp_avg, exp_avg_sq
XLA_FFI_DEFINE_HANDLER_SYMBOL(JolAdamF32, AdamImpl<false>, ScalarsArraysDecayMaximize());

// state: exp_avg, exp_avg_sq, max_exp_avg_sq
XLA_FFI_DEFINE_HANDLER_SYMBOL(JolAmsgradF32, AdamImpl<true>, ScalarsArraysDecayMaximize());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JolSgdMomentumF32, SgdMomentumImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // step scalars
                                  .Arg<ffi::Buffer<ffi::S32>>()  // count (steps taken)
                                  .RemainingArgs()               // p, g, momentum_buffer
                                  .RemainingRets()               // p, momentum_buffer
                                  .Attr<bool>("decay")
                                  .Attr<bool>("maximize")
                                  .Attr<bool>("nesterov"));

// state: exp_avg, exp_avg_sq
XLA_FFI_DEFINE_HANDLER_SYMBOL(JolRadamF32, RadamImpl, ScalarsArraysDecayMaximize());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JolNadamF32, NadamImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // step scalars
                                  .Arg<ffi::Buffer<ffi::F32>>()  // value1, one per leaf
                                  .Arg<ffi::Buffer<ffi::F32>>()  // value2, one per leaf
                                  .RemainingArgs()               // p, g, exp_avg, exp_avg_sq
                                  .RemainingRets()               // p, exp_avg, exp_avg_sq
                                  .Attr<int64_t>("decay")
                                  .Attr<bool>("maximize"));

// state: exp_avg, exp_inf
XLA_FFI_DEFINE_HANDLER_SYMBOL(JolAdamaxF32, AdamaxImpl, ScalarsArraysDecayMaximize());

// state: square_avg, acc_delta
XLA_FFI_DEFINE_HANDLER_SYMBOL(JolAdadeltaF32, AdadeltaImpl, ScalarsArraysDecayMaximize());

// state: prev, step_size (decay: always 0)
XLA_FFI_DEFINE_HANDLER_SYMBOL(JolRpropF32, RpropImpl, ScalarsArraysDecayMaximize());

// The Python module: one PyCapsule per handler, for jax.ffi.register_ffi_target.

namespace {

PyObject* Capsule(void* fn) { return PyCapsule_New(fn, nullptr, nullptr); }

PyObject* Handlers(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  const struct {
    const char* name;
    void* fn;
  } table[] = {
      {"jaxopt_lab_adam_f32", reinterpret_cast<void*>(JolAdamF32)},
      {"jaxopt_lab_amsgrad_f32", reinterpret_cast<void*>(JolAmsgradF32)},
      {"jaxopt_lab_sgd_momentum_f32", reinterpret_cast<void*>(JolSgdMomentumF32)},
      {"jaxopt_lab_radam_f32", reinterpret_cast<void*>(JolRadamF32)},
      {"jaxopt_lab_nadam_f32", reinterpret_cast<void*>(JolNadamF32)},
      {"jaxopt_lab_adamax_f32", reinterpret_cast<void*>(JolAdamaxF32)},
      {"jaxopt_lab_adadelta_f32", reinterpret_cast<void*>(JolAdadeltaF32)},
      {"jaxopt_lab_rprop_f32", reinterpret_cast<void*>(JolRpropF32)},
  };
  for (const auto& entry : table) {
    PyObject* cap = Capsule(entry.fn);
    if (cap == nullptr || PyDict_SetItemString(d, entry.name, cap) < 0) {
      Py_XDECREF(cap);
      Py_DECREF(d);
      return nullptr;
    }
    Py_DECREF(cap);
  }
  return d;
}

#define JOL_STR2(x) #x
#define JOL_STR(x) JOL_STR2(x)
#ifndef JOL_JAXLIB_VERSION
#define JOL_JAXLIB_VERSION "unknown"  // setup.py defines it
#endif

// What the build was: for jaxopt_lab._native's diagnostics and routing.
PyObject* BuildInfo(PyObject*, PyObject*) {
  return Py_BuildValue("{s:s,s:s,s:s,s:N,s:s}", "jaxlib", JOL_JAXLIB_VERSION, "ffi_api",
                       JOL_STR(XLA_FFI_API_MAJOR) "." JOL_STR(XLA_FFI_API_MINOR), "compiler",
                       __VERSION__, "hardware_fma", PyBool_FromLong(HardwareFma()), "fma",
                       FmaSource());
}

PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "{target name: PyCapsule} for jax.ffi.register_ffi_target"},
    {"build_info", BuildInfo, METH_NOARGS,
     "{jaxlib, ffi_api: the headers built against; compiler; hardware_fma, fma: see native.cc}"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_native_ext", "jaxopt_lab's one-pass CPU kernels",
                       -1, kMethods};

}  // namespace

PyMODINIT_FUNC PyInit__native_ext() { return PyModule_Create(&kModule); }
