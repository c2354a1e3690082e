// The class gaps of the DenseAM classifier (Krotov & Hopfield 2016, arXiv:1606.01164, eq. 9) as
// one fused CPU kernel for XLA's FFI, with its hand-written gradient:
//
//   forward   gaps[b,c]    = sum_k relu(base[b,k] + shift[c,k])^n - relu(base[b,k])^n
//   backward  d_base[b,k]  = sum_c g[b,c] (f(base[b,k] + shift[c,k]) - f(base[b,k]))
//             d_shift[c,k] = sum_b g[b,c] f(base[b,k] + shift[c,k]),        f(x) = n relu(x)^(n-1)
//
// XLA's own fusions of these (B, C, K) reductions run at a fraction of the vector units' speed on
// CPU; here each (b, k) block of 16 memories is loaded once and every class is reduced from
// registers. Each term is differenced before the sum, as in the JAX form, so large n keeps its
// float32 precision. jamem/classifier/native.py builds this file once per machine and registers it.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// 16 float lanes: one AVX-512 register, or two AVX2 ones.
typedef float Vec __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

inline Vec load(const float* p) {
  Vec v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, Vec v) { __builtin_memcpy(p, &v, sizeof v); }
inline float lane_sum(Vec v) {
  float s = 0.f;
  for (int64_t i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// relu that keeps NaN (as jax.nn.relu does): a NaN input must not turn into a zero gap. Its
// derivative at n = 1, the step 1[x > 0], is 0 at NaN, as in the JAX form (RectifiedPower(1)).
inline float relu(float x) { return x > 0.f ? x : (x != x ? x : 0.f); }
inline Vec relu(Vec x) { return x > 0.f ? x : (x != x ? x : Vec{}); }
inline float step(float x) { return x > 0.f ? 1.f : 0.f; }
inline Vec step(Vec x) { return x > 0.f ? Vec{} + 1.f : Vec{}; }

// relu(x)^n by squaring; n is the same for every lane, so the branches are uniform.
template <typename T>
inline T rect_pow(T x, int64_t n) {
  if (n == 0) return step(x);
  T r = relu(x), p = r;
  for (n -= 1; n; n >>= 1) {
    if (n & 1) p *= r;
    r *= r;
    if (n == 1) break;
  }
  return p;
}

// Two powers at once: independent multiplication chains keep the vector units busy.
inline void rect_pow_pair(Vec& x, Vec& y, int64_t n) {
  if (n == 0) {
    x = step(x);
    y = step(y);
    return;
  }
  Vec rx = relu(x), ry = relu(y), px = rx, py = ry;
  for (n -= 1; n; n >>= 1) {
    if (n & 1) {
      px *= rx;
      py *= ry;
    }
    if (n == 1) break;
    rx *= rx;
    ry *= ry;
  }
  x = px;
  y = py;
}

// Runs body(lo, hi) over [0, n) in chunks claimed by the caller and by tasks on XLA's intra-op
// pool. The caller can finish every chunk alone, so a busy pool delays the work but never
// deadlocks it; the state is shared so that a task starting late finds nothing left and returns.
template <typename Body>
void parallel_rows(ffi::ThreadPool& pool, int64_t n, int64_t chunk, Body body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  const int64_t num_chunks = (n + chunk - 1) / chunk;
  auto work = [state, n, chunk, num_chunks, body]() {
    for (;;) {
      const int64_t i = state->next.fetch_add(1);
      if (i >= num_chunks) return;
      body(i * chunk, std::min(n, (i + 1) * chunk));
      if (state->done.fetch_add(1) + 1 == num_chunks) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->cv.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, num_chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == num_chunks; });
}

void forward_rows(const float* base, const float* shift, float* gaps, int64_t lo, int64_t hi, int64_t C,
                  int64_t K, int64_t n) {
  const int64_t K_vec = K - K % kLanes;
  std::vector<Vec> acc(C);
  for (int64_t b = lo; b < hi; ++b) {
    const float* row = base + b * K;
    std::fill(acc.begin(), acc.end(), Vec{});
    for (int64_t k = 0; k < K_vec; k += kLanes) {
      const Vec x = load(row + k);
      const Vec off = rect_pow(x, n);
      int64_t c = 0;
      for (; c + 1 < C; c += 2) {
        Vec on0 = x + load(shift + c * K + k), on1 = x + load(shift + (c + 1) * K + k);
        rect_pow_pair(on0, on1, n);
        acc[c] += on0 - off;
        acc[c + 1] += on1 - off;
      }
      if (c < C) acc[c] += rect_pow(x + load(shift + c * K + k), n) - off;
    }
    float* gap_row = gaps + b * C;
    for (int64_t c = 0; c < C; ++c) gap_row[c] = lane_sum(acc[c]);
    // the memories past the last full block of 16, each memory's own term computed once for all classes
    for (int64_t k = K_vec; k < K; ++k) {
      const float off = rect_pow(row[k], n);
      for (int64_t c = 0; c < C; ++c) gap_row[c] += rect_pow(row[k] + shift[c * K + k], n) - off;
    }
  }
}

void backward_rows(const float* base, const float* shift, const float* g, float* d_base, float* d_shift_part,
                   int64_t lo, int64_t hi, int64_t C, int64_t K, int64_t n) {
  const int64_t K_vec = K - K % kLanes;
  const float fn = float(n);
  for (int64_t b = lo; b < hi; ++b) {
    const float* row = base + b * K;
    const float* gb = g + b * C;
    float* d_row = d_base + b * K;
    float g_sum = 0.f;
    for (int64_t c = 0; c < C; ++c) g_sum += gb[c];
    for (int64_t k = 0; k < K_vec; k += kLanes) {
      const Vec x = load(row + k);
      Vec d = (-g_sum * fn) * rect_pow(x, n - 1);
      int64_t c = 0;
      for (; c + 1 < C; c += 2) {
        Vec t0 = x + load(shift + c * K + k), t1 = x + load(shift + (c + 1) * K + k);
        rect_pow_pair(t0, t1, n - 1);
        t0 *= gb[c] * fn;
        t1 *= gb[c + 1] * fn;
        d += t0 + t1;
        float* ds = d_shift_part + c * K + k;
        store(ds, load(ds) + t0);
        store(ds + K, load(ds + K) + t1);
      }
      if (c < C) {
        const Vec t = (gb[c] * fn) * rect_pow(x + load(shift + c * K + k), n - 1);
        d += t;
        float* ds = d_shift_part + c * K + k;
        store(ds, load(ds) + t);
      }
      store(d_row + k, d);
    }
    for (int64_t k = K_vec; k < K; ++k) {
      float d = -g_sum * fn * rect_pow(row[k], n - 1);
      for (int64_t c = 0; c < C; ++c) {
        const float t = gb[c] * fn * rect_pow(row[k] + shift[c * K + k], n - 1);
        d += t;
        d_shift_part[c * K + k] += t;
      }
      d_row[k] = d;
    }
  }
}

ffi::Error check_shapes(ffi::Buffer<ffi::F32>& base, ffi::Buffer<ffi::F32>& shift, int64_t degree) {
  const auto bd = base.dimensions();
  const auto sd = shift.dimensions();
  if (bd.size() != 2 || sd.size() != 2 || bd[1] != sd[1])
    return ffi::Error::InvalidArgument("class gaps: base must be (B, K) and shift (C, K)");
  if (degree < 1) return ffi::Error::InvalidArgument("class gaps: degree must be >= 1");
  return ffi::Error::Success();
}

constexpr int64_t kRowsPerChunk = 16;

ffi::Error ClassGapsForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> base, ffi::Buffer<ffi::F32> shift,
                            ffi::ResultBuffer<ffi::F32> gaps, int64_t degree) {
  if (ffi::Error error = check_shapes(base, shift, degree); error.failure()) return error;
  const int64_t B = base.dimensions()[0], K = base.dimensions()[1], C = shift.dimensions()[0];
  const float* pb = base.typed_data();
  const float* ps = shift.typed_data();
  float* pg = gaps->typed_data();
  parallel_rows(pool, B, kRowsPerChunk,
                [=](int64_t lo, int64_t hi) { forward_rows(pb, ps, pg, lo, hi, C, K, degree); });
  return ffi::Error::Success();
}

ffi::Error ClassGapsBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> base, ffi::Buffer<ffi::F32> shift,
                             ffi::Buffer<ffi::F32> cotangent, ffi::ResultBuffer<ffi::F32> d_base,
                             ffi::ResultBuffer<ffi::F32> d_shift, int64_t degree) {
  if (ffi::Error error = check_shapes(base, shift, degree); error.failure()) return error;
  const int64_t B = base.dimensions()[0], K = base.dimensions()[1], C = shift.dimensions()[0];
  float* pds = d_shift->typed_data();
  std::fill(pds, pds + C * K, 0.f);
  if (B == 0) return ffi::Error::Success();
  // d_shift sums over the batch: each worker's range of rows adds into its own (C, K) partial
  const int64_t ranges = std::min<int64_t>(B, std::max<int64_t>(1, pool.num_threads()));
  const int64_t rows_per_range = (B + ranges - 1) / ranges;
  const int64_t num_parts = (B + rows_per_range - 1) / rows_per_range;
  std::vector<float> parts(size_t(num_parts * C * K), 0.f);
  const float* pb = base.typed_data();
  const float* ps = shift.typed_data();
  const float* pg = cotangent.typed_data();
  float* pdb = d_base->typed_data();
  float* pp = parts.data();
  parallel_rows(pool, B, rows_per_range, [=](int64_t lo, int64_t hi) {
    backward_rows(pb, ps, pg, pdb, pp + (lo / rows_per_range) * C * K, lo, hi, C, K, degree);
  });
  for (int64_t p = 0; p < num_parts; ++p)
    for (int64_t i = 0; i < C * K; ++i) pds[i] += pp[p * C * K + i];
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JamemClassGapsForward, ClassGapsForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("degree"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JamemClassGapsBackward, ClassGapsBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("degree"));
