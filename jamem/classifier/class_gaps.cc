// The class gaps of the DenseAM classifier (Krotov & Hopfield 2016, arXiv:1606.01164, eq. 9) as
// one fused CPU kernel for XLA's FFI, with its hand-written gradient:
//
//   forward   gaps[b,c]    = sum_k relu(base[b,k] + shift[c,k])^n - relu(base[b,k])^n
//   backward  d_base[b,k]  = sum_c g[b,c] (f(base[b,k] + shift[c,k]) - f(base[b,k]))
//             d_shift[c,k] = sum_b g[b,c] f(base[b,k] + shift[c,k]),        f(x) = n relu(x)^(n-1)
//
// XLA's own fusions of these (B, C, K) reductions run at a fraction of the vector units' speed on
// CPU; here each (b, k) block of 16 memories is loaded once and every class is reduced from it,
// with the class shifts and sums of a tile of memories kept in L1 (the forward splits the images
// between threads, the backward the memories, so that each thread owns its sums). Each term is
// differenced before the sum, as in the JAX form, so large n keeps its float32 precision. jamem/classifier/native.py builds this file once per machine and registers it.
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

// relu that keeps NaN (as jax.nn.relu does): a NaN input must not turn into a zero gap (NaN < 0 is
// false, so NaN passes; one compare and one masked move). Its derivative at n = 1, the step
// 1[x > 0], is 0 at NaN, as in the JAX form (RectifiedPower(1)).
inline float relu(float x) { return x < 0.f ? 0.f : x; }
inline Vec relu(Vec x) { return x < 0.f ? Vec{} : x; }
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
void parallel_chunks(ffi::ThreadPool& pool, int64_t n, int64_t chunk, Body body) {
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

// Rows [lo, hi), a tile of memories at a time: the tile's class shifts and the rows' class sums stay
// in L1 while every row of the chunk passes over the tile.
void forward_rows(const float* base, const float* shift, float* gaps, int64_t lo, int64_t hi, int64_t C,
                  int64_t K, int64_t n) {
  constexpr int64_t kTile = 128;
  const int64_t K_vec = K - K % kLanes;
  std::vector<Vec> acc((hi - lo) * C);
  for (int64_t k0 = 0; k0 < K_vec; k0 += kTile) {
    const int64_t k1 = std::min(K_vec, k0 + kTile);
    for (int64_t b = lo; b < hi; ++b) {
      const float* row = base + b * K;
      Vec* a = acc.data() + (b - lo) * C;
      for (int64_t k = k0; k < k1; k += kLanes) {
        const Vec x = load(row + k);
        const Vec off = rect_pow(x, n);
        int64_t c = 0;
        for (; c + 1 < C; c += 2) {
          Vec on0 = x + load(shift + c * K + k), on1 = x + load(shift + (c + 1) * K + k);
          rect_pow_pair(on0, on1, n);
          a[c] += on0 - off;
          a[c + 1] += on1 - off;
        }
        if (c < C) a[c] += rect_pow(x + load(shift + c * K + k), n) - off;
      }
    }
  }
  for (int64_t b = lo; b < hi; ++b) {
    const float* row = base + b * K;
    float* gap_row = gaps + b * C;
    for (int64_t c = 0; c < C; ++c) gap_row[c] = lane_sum(acc[(b - lo) * C + c]);
    // the memories past the last full block of 16, each memory's own term computed once for all classes
    for (int64_t k = K_vec; k < K; ++k) {
      const float off = rect_pow(row[k], n);
      for (int64_t c = 0; c < C; ++c) gap_row[c] += rect_pow(row[k] + shift[c * K + k], n) - off;
    }
  }
}

// Memories [k_lo, k_hi) for every row: each block of 16 memories keeps its class shifts and its
// d_shift sums in L1 for the whole batch, so the only (B, K) traffic is reading base and writing
// d_base once. `gn` is g scaled by n, `g_off` is -n sum_c g[b,c] (the F(xi . U) term's weight).
void backward_columns(const float* base, const float* shift, const float* gn, const float* g_off, float* d_base,
                      float* d_shift, int64_t k_lo, int64_t k_hi, int64_t B, int64_t C, int64_t K, int64_t n) {
  std::vector<Vec> s(C), acc(C);
  constexpr int64_t kAhead = 8;  // rows prefetched ahead: rows are K floats apart, past the prefetcher's page
  int64_t k = k_lo;
  for (; k + kLanes <= k_hi; k += kLanes) {
    for (int64_t c = 0; c < C; ++c) {
      s[c] = load(shift + c * K + k);
      acc[c] = Vec{};
    }
    for (int64_t b = 0; b < B; ++b) {
      if (b + kAhead < B) {
        __builtin_prefetch(base + (b + kAhead) * K + k);
        __builtin_prefetch(d_base + (b + kAhead) * K + k, 1);
      }
      const Vec x = load(base + b * K + k);
      const float* gb = gn + b * C;
      Vec d = g_off[b] * rect_pow(x, n - 1);
      int64_t c = 0;
      for (; c + 1 < C; c += 2) {
        Vec t0 = x + s[c], t1 = x + s[c + 1];
        rect_pow_pair(t0, t1, n - 1);
        t0 *= gb[c];
        t1 *= gb[c + 1];
        d += t0 + t1;
        acc[c] += t0;
        acc[c + 1] += t1;
      }
      if (c < C) {
        const Vec t = gb[c] * rect_pow(x + s[c], n - 1);
        d += t;
        acc[c] += t;
      }
      store(d_base + b * K + k, d);
    }
    for (int64_t c = 0; c < C; ++c) store(d_shift + c * K + k, acc[c]);
  }
  // the memories past the last full block of 16
  for (; k < k_hi; ++k) {
    for (int64_t c = 0; c < C; ++c) d_shift[c * K + k] = 0.f;
    for (int64_t b = 0; b < B; ++b) {
      const float x = base[b * K + k];
      float d = g_off[b] * rect_pow(x, n - 1);
      for (int64_t c = 0; c < C; ++c) {
        const float t = gn[b * C + c] * rect_pow(x + shift[c * K + k], n - 1);
        d += t;
        d_shift[c * K + k] += t;
      }
      d_base[b * K + k] = d;
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
  parallel_chunks(pool, B, kRowsPerChunk,
                [=](int64_t lo, int64_t hi) { forward_rows(pb, ps, pg, lo, hi, C, K, degree); });
  return ffi::Error::Success();
}

ffi::Error ClassGapsBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> base, ffi::Buffer<ffi::F32> shift,
                             ffi::Buffer<ffi::F32> cotangent, ffi::ResultBuffer<ffi::F32> d_base,
                             ffi::ResultBuffer<ffi::F32> d_shift, int64_t degree) {
  if (ffi::Error error = check_shapes(base, shift, degree); error.failure()) return error;
  const int64_t B = base.dimensions()[0], K = base.dimensions()[1], C = shift.dimensions()[0];
  const float fn = float(degree);
  const float* pg = cotangent.typed_data();
  std::vector<float> gn(static_cast<size_t>(B * C)), g_off(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    float g_sum = 0.f;
    for (int64_t c = 0; c < C; ++c) {
      g_sum += pg[b * C + c];
      gn[b * C + c] = fn * pg[b * C + c];
    }
    g_off[b] = -fn * g_sum;
  }
  const float* pb = base.typed_data();
  const float* ps = shift.typed_data();
  const float* pgn = gn.data();
  const float* pgo = g_off.data();
  float* pdb = d_base->typed_data();
  float* pds = d_shift->typed_data();
  // split over memories, not rows: each task owns its columns of d_base and d_shift outright
  const int64_t blocks = (K + kLanes - 1) / kLanes;
  // up to 4 blocks a chunk, fewer where that would leave a thread idle (small K)
  const int64_t per_chunk = std::clamp<int64_t>(blocks / (2 * std::max<int64_t>(1, pool.num_threads())), 1, 4);
  parallel_chunks(pool, blocks, per_chunk, [=](int64_t lo, int64_t hi) {
    backward_columns(pb, ps, pgn, pgo, pdb, pds, lo * kLanes, std::min(K, hi * kLanes), B, C, K, degree);
  });
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
