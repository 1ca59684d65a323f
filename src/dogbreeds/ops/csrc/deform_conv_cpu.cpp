// Fused bilinear im2col for DeformConv on the CPU, and its backward (the `fused` backend).
//
// Why: on 2 CPU threads the `gather` backend spends more time moving taps than multiplying
// (embedding_bag gathers, a sort, four embedding_bag scatters and many copies per layer). Here
// one pass per direction does it all, with channels contiguous so the inner loops vectorise.
//
// Layouts (see deformconv.py): x is NHWC, offset is (B, 2*K*K, H, W) with channel 2k = dy and
// 2k + 1 = dx of tap k = ki*K + kj (any strides: NCHW and channels_last are read in place),
// columns are (B, H, W, K*K, C). Tap (ki, kj) of pixel (h, w) reads x at
// (h + ki - pad + dy, w + kj - pad + dx); neighbours outside the image read zero.
// Positions and bilinear weights are computed in scalar_t (float32 or float64), never in half.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

// bfloat16 <-> float with integer operations only, so the channel loops below vectorise.
// c10::BFloat16's own conversions compute the same bits (round to nearest even, NaN kept as a
// quiet NaN) but kept the forward loop scalar, several times slower than these.
inline uint16_t bf16_bits(float value) {
  uint32_t u;
  std::memcpy(&u, &value, sizeof u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return (u & 0x7FFFFFFFu) > 0x7F800000u ? uint16_t{0x7FC0} : static_cast<uint16_t>(rounded);
}

inline float bf16_value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &u, sizeof value);
  return value;
}

template <typename col_t>
constexpr bool is_bf16 = std::is_same_v<col_t, c10::BFloat16>;

// The dot products in the backward keep LANES running sums each (vector registers) and add
// them up once per tap, as a tree. `omp simd reduction` added the lanes up one at a time
// through the stack, which cost more than the channel loop itself at 32 channels.
constexpr int LANES = 8;

template <typename scalar_t>
inline scalar_t lane_sum(const scalar_t* a) {  // constant indices keep `a` in a register
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

// Element i of a column gradient, in the position type.
template <typename scalar_t, typename col_t>
inline scalar_t column_value(const col_t* g, int64_t i) {
  if constexpr (is_bf16<col_t>) {
    return bf16_value(reinterpret_cast<const uint16_t*>(g)[i]);
  } else {
    return static_cast<scalar_t>(g[i]);
  }
}

// An offset map (or its gradient) read through its strides, so a channels_last map from the
// offset conv is used in place: no copy in, and a gradient in the same layout out.
template <typename T>
struct Strided {
  T* data;
  int64_t b, c, h, w;  // strides of (B, 2*K*K, H, W)
  Strided(T* data, const torch::Tensor& t)
      : data(data), b(t.stride(0)), c(t.stride(1)), h(t.stride(2)), w(t.stride(3)) {}
  T* image(int64_t i) const { return data + i * b; }
};

// Where the taps of one row of output pixels (image b, row h, every column w) read: for tap k
// and column w (entry k * W + w), the flat pixel index of each of the 4 neighbours (-1 outside
// the image), the bilinear weights and, for the backward, their derivatives w.r.t. the row and
// column position. One loop over w per tap computes them, and that loop vectorises; the
// per-tap scalar work it replaces (floors, integer divisions, branches) cost more than the
// channel loops themselves at 32 channels (`python -m dogbreeds bench` times the difference).
template <typename scalar_t>
struct RowTaps {
  int64_t H, W, K;
  std::vector<int32_t> index[4];
  std::vector<scalar_t> weight[4], dweight_dy[4], dweight_dx[4];
  // Scratch for one tap: its offsets along the row made contiguous, the top-left neighbours
  // and the fractional parts.
  std::vector<scalar_t> dy_row, dx_row, ly_row, lx_row;
  std::vector<int32_t> y_row, x_row;

  RowTaps(int64_t H, int64_t W, int64_t K)
      : H(H), W(W), K(K), dy_row(W), dx_row(W), ly_row(W), lx_row(W), y_row(W), x_row(W) {
    for (int i = 0; i < 4; ++i) {
      index[i].resize(K * K * W);
      weight[i].resize(K * K * W);
      dweight_dy[i].resize(K * K * W);
      dweight_dx[i].resize(K * K * W);
    }
  }

  // Image b's row h: tap (ki, kj) of pixel (h, w) reads x at (h + ki - pad + dy, w + kj - pad + dx).
  template <bool derivatives>
  void compute(const Strided<const scalar_t>& offset, int64_t b, int64_t h) {
    const int64_t pad = (K - 1) / 2;
    for (int64_t k = 0; k < K * K; ++k) {
      const scalar_t* dy = offset.image(b) + (2 * k) * offset.c + h * offset.h;
      const scalar_t* dx = dy + offset.c;
      for (int64_t w = 0; w < W; ++w) {  // a strided (channels_last) row does not vectorise
        dy_row[w] = dy[w * offset.w];
        dx_row[w] = dx[w * offset.w];
      }
      row_geometry<derivatives>(dy_row.data(), dx_row.data(), h + k / K - pad, k % K - pad,
                                k * W);
    }
  }

  // One tap for the whole row, in three loops over w that gcc vectorises (check with
  // -fopt-info-vec; the build adds -fno-trapping-math, without which no float -> int cast
  // vectorises). Fused into one loop, gcc 12 gives up on mixing float and int masks.
  template <bool derivatives>
  void row_geometry(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ dx,
                    int64_t row, int64_t col, int64_t at) {
    const int32_t h = static_cast<int32_t>(H), w_ = static_cast<int32_t>(W);
    const int32_t x_shift = static_cast<int32_t>(col);
    const scalar_t fH = H, fW = W, y_shift = row;
    int32_t *__restrict__ y = y_row.data(), *__restrict__ x = x_row.data();
    scalar_t *__restrict__ ly = ly_row.data(), *__restrict__ lx = lx_row.data();
    // 1. The top-left neighbour and the fractions. A position far outside (or NaN) cannot
    //    reach the image: park it at (-2, -2), where all 4 corners are outside, before the
    //    cast, with finite fractions.
    for (int32_t w = 0; w < w_; ++w) {
      const scalar_t py = y_shift + dy[w];
      const scalar_t px = static_cast<scalar_t>(w + x_shift) + dx[w];
      const scalar_t fy = std::floor(py), fx = std::floor(px);
      const bool near = (fy >= -1) & (fy < fH) & (fx >= -1) & (fx < fW);
      y[w] = static_cast<int32_t>(near ? fy : scalar_t(-2));
      x[w] = static_cast<int32_t>(near ? fx : scalar_t(-2));
      ly[w] = near ? py - fy : scalar_t(0);
      lx[w] = near ? px - fx : scalar_t(0);
    }
    // 2. The 4 neighbours' pixel indices, -1 for those outside the image (unsigned compares:
    //    -1 wraps to a large number).
    int32_t *__restrict__ i0 = index[0].data() + at, *__restrict__ i1 = index[1].data() + at,
            *__restrict__ i2 = index[2].data() + at, *__restrict__ i3 = index[3].data() + at;
#pragma GCC ivdep
    for (int32_t w = 0; w < w_; ++w) {
      const bool top = uint32_t(y[w]) < uint32_t(h), bottom = uint32_t(y[w] + 1) < uint32_t(h);
      const bool left = uint32_t(x[w]) < uint32_t(w_), right = uint32_t(x[w] + 1) < uint32_t(w_);
      const int32_t i = y[w] * w_ + x[w];
      i0[w] = top & left ? i : -1;
      i1[w] = top & right ? i + 1 : -1;
      i2[w] = bottom & left ? i + w_ : -1;
      i3[w] = bottom & right ? i + w_ + 1 : -1;
    }
    // 3. Their bilinear weights (0 outside) and, for the backward, the weights' derivatives.
    scalar_t *__restrict__ w0 = weight[0].data() + at, *__restrict__ w1 = weight[1].data() + at,
             *__restrict__ w2 = weight[2].data() + at, *__restrict__ w3 = weight[3].data() + at;
    scalar_t *__restrict__ y0 = dweight_dy[0].data() + at, *__restrict__ y1 = dweight_dy[1].data() + at,
             *__restrict__ y2 = dweight_dy[2].data() + at, *__restrict__ y3 = dweight_dy[3].data() + at;
    scalar_t *__restrict__ x0 = dweight_dx[0].data() + at, *__restrict__ x1 = dweight_dx[1].data() + at,
             *__restrict__ x2 = dweight_dx[2].data() + at, *__restrict__ x3 = dweight_dx[3].data() + at;
#pragma GCC ivdep
    for (int32_t w = 0; w < w_; ++w) {
      const scalar_t top = uint32_t(y[w]) < uint32_t(h), bottom = uint32_t(y[w] + 1) < uint32_t(h);
      const scalar_t left = uint32_t(x[w]) < uint32_t(w_), right = uint32_t(x[w] + 1) < uint32_t(w_);
      const scalar_t m0 = top * left, m1 = top * right, m2 = bottom * left, m3 = bottom * right;
      const scalar_t hy = 1 - ly[w], hx = 1 - lx[w];
      w0[w] = m0 * (hy * hx);
      w1[w] = m1 * (hy * lx[w]);
      w2[w] = m2 * (ly[w] * hx);
      w3[w] = m3 * (ly[w] * lx[w]);
      if constexpr (derivatives) {
        y0[w] = -m0 * hx;
        y1[w] = -m1 * lx[w];
        y2[w] = m2 * hx;
        y3[w] = m3 * lx[w];
        x0[w] = -m0 * hy;
        x1[w] = m1 * hy;
        x2[w] = -m2 * ly[w];
        x3[w] = m3 * ly[w];
      }
    }
  }
};

template <typename scalar_t, typename col_t>
void im2col_kernel(const scalar_t* x, Strided<const scalar_t> offset, col_t* cols, int64_t B,
                   int64_t H, int64_t W, int64_t C, int64_t K) {
  const int64_t KK = K * K, HW = H * W;
  const std::vector<scalar_t> zeros(C, 0);  // what a neighbour outside the image reads
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    RowTaps<scalar_t> taps(H, W, K);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const scalar_t* img = x + b * HW * C;
      taps.template compute<false>(offset, b, h);
      for (int64_t w = 0; w < W; ++w) {
        for (int64_t k = 0; k < KK; ++k) {
          const int64_t t = k * W + w;
          const scalar_t* __restrict__ s[4];
          for (int i = 0; i < 4; ++i) {
            const int32_t index = taps.index[i][t];
            s[i] = index < 0 ? zeros.data() : img + index * C;
          }
          const scalar_t w0 = taps.weight[0][t], w1 = taps.weight[1][t];
          const scalar_t w2 = taps.weight[2][t], w3 = taps.weight[3][t];
          col_t* __restrict__ out = cols + ((bh * W + w) * KK + k) * C;
          const scalar_t *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
          if constexpr (is_bf16<col_t>) {
            uint16_t* __restrict__ bits = reinterpret_cast<uint16_t*>(out);
#pragma omp simd
            for (int64_t ch = 0; ch < C; ++ch)
              bits[ch] = bf16_bits(w0 * s0[ch] + w1 * s1[ch] + w2 * s2[ch] + w3 * s3[ch]);
          } else {
#pragma omp simd
            for (int64_t ch = 0; ch < C; ++ch)  // one store per channel, the 4 reads fused
              out[ch] = static_cast<col_t>(w0 * s0[ch] + w1 * s1[ch] + w2 * s2[ch] + w3 * s3[ch]);
          }
        }
      }
    }
  });
}

// One pass over the taps: the tap's column gradient goes back to its 4 neighbours (grad_x) and,
// dotted with them, to the tap's position (grad_offset). Images are split across threads, so
// no two threads ever write the same grad_x row.
template <typename scalar_t, typename col_t>
void col2im_kernel(const scalar_t* x, Strided<const scalar_t> offset, const col_t* grad_cols,
                   scalar_t* grad_x, Strided<scalar_t> grad_offset, int64_t B, int64_t H, int64_t W,
                   int64_t C, int64_t K) {
  const int64_t KK = K * K, HW = H * W;
  const std::vector<scalar_t> zeros(C, 0);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(C);
    RowTaps<scalar_t> taps(H, W, K);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* img = x + b * HW * C;
      scalar_t* gimg = grad_x + b * HW * C;
      scalar_t* goff = grad_offset.image(b);
      for (int64_t h = 0; h < H; ++h) {
        taps.template compute<true>(offset, b, h);
        for (int64_t w = 0; w < W; ++w) {
          for (int64_t k = 0; k < KK; ++k) {
            const int64_t t = k * W + w;
            const col_t* __restrict__ g = grad_cols + (((b * H + h) * W + w) * KK + k) * C;
            // Outside neighbours read zeros and write to a scratch row nobody reads.
            const scalar_t* __restrict__ s[4];
            scalar_t* __restrict__ d[4];
            for (int i = 0; i < 4; ++i) {
              const int32_t index = taps.index[i][t];
              s[i] = index < 0 ? zeros.data() : img + index * C;
              d[i] = index < 0 ? scratch.data() : gimg + index * C;
            }
            const scalar_t w0 = taps.weight[0][t], w1 = taps.weight[1][t];
            const scalar_t w2 = taps.weight[2][t], w3 = taps.weight[3][t];
            const scalar_t *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
            scalar_t *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3];
            // Per neighbour, LANES running sums of its dot product with the gradient.
            scalar_t acc0[LANES] = {}, acc1[LANES] = {}, acc2[LANES] = {}, acc3[LANES] = {};
            // Channel ch: its gradient to the 4 neighbours, its products into running sum `lane`.
            const auto channel = [&](int64_t ch, int lane) {
              const scalar_t gc = column_value<scalar_t>(g, ch);
              acc0[lane] += s0[ch] * gc;
              acc1[lane] += s1[ch] * gc;
              acc2[lane] += s2[ch] * gc;
              acc3[lane] += s3[ch] * gc;
              d0[ch] += w0 * gc;
              d1[ch] += w1 * gc;
              d2[ch] += w2 * gc;
              d3[ch] += w3 * gc;
            };
            int64_t ch = 0;
            for (; ch + LANES <= C; ch += LANES) {
              // The 4 neighbours are distinct rows (or the scratch row): lanes are independent.
#pragma omp simd
              for (int l = 0; l < LANES; ++l) channel(ch + l, l);
            }
            for (; ch < C; ++ch) channel(ch, 0);  // the last C % LANES channels
            const scalar_t dot0 = lane_sum(acc0), dot1 = lane_sum(acc1);
            const scalar_t dot2 = lane_sum(acc2), dot3 = lane_sum(acc3);
            const scalar_t gy = dot0 * taps.dweight_dy[0][t] + dot1 * taps.dweight_dy[1][t] +
                                dot2 * taps.dweight_dy[2][t] + dot3 * taps.dweight_dy[3][t];
            const scalar_t gx = dot0 * taps.dweight_dx[0][t] + dot1 * taps.dweight_dx[1][t] +
                                dot2 * taps.dweight_dx[2][t] + dot3 * taps.dweight_dx[3][t];
            scalar_t* g_yx = goff + (2 * k) * grad_offset.c + h * grad_offset.h + w * grad_offset.w;
            g_yx[0] = gy;
            g_yx[grad_offset.c] = gx;
          }
        }
      }
    }
  });
}

void check(const torch::Tensor& x, const torch::Tensor& offset, int64_t K) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(), "x: contiguous NHWC CPU");
  TORCH_CHECK(offset.dtype() == x.dtype(), "offset must have x's dtype");
  TORCH_CHECK(offset.size(0) == x.size(0) && offset.size(1) == 2 * K * K &&
                  offset.size(2) == x.size(1) && offset.size(3) == x.size(2),
              "offset must be (B, 2*K*K, H, W)");
  TORCH_CHECK(x.size(1) * x.size(2) < (int64_t{1} << 31), "H * W must fit in 32 bits (RowTaps)");
}

}  // namespace

// Calls f(scalar_t{}, col_t{}) with the position type of x (float, double) and the column type
// (x's, or bfloat16 / half under autocast: the matmul's dtype, so no conversion pass is needed).
template <typename F>
void dispatch(const torch::Tensor& x, at::ScalarType cols, F f) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "deform_conv_cpu", [&] {
    if (cols == x.scalar_type()) {
      f(scalar_t{}, scalar_t{});
    } else if (cols == at::kBFloat16 && x.scalar_type() == at::kFloat) {
      f(scalar_t{}, c10::BFloat16{});
    } else if (cols == at::kHalf && x.scalar_type() == at::kFloat) {
      f(scalar_t{}, c10::Half{});
    } else {
      TORCH_CHECK(false, "columns must be x's dtype, or bfloat16 / float16 for float32 x");
    }
  });
}

// x (B, H, W, C), offset (B, 2*K*K, H, W) -> columns (B, H, W, K*K, C) in `dtype`.
torch::Tensor deform_im2col(torch::Tensor x, torch::Tensor offset, int64_t K,
                            at::ScalarType dtype) {
  check(x, offset, K);
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  auto cols = torch::empty({B, H, W, K * K, C}, x.options().dtype(dtype));
  dispatch(x, dtype, [&](auto position, auto column) {
    using scalar_t = decltype(position);
    using col_t = decltype(column);
    im2col_kernel<scalar_t, col_t>(x.data_ptr<scalar_t>(),
                                   Strided<const scalar_t>(offset.data_ptr<scalar_t>(), offset),
                                   cols.data_ptr<col_t>(), B, H, W, C, K);
  });
  return cols;
}

// The gradients of deform_im2col: (grad_x (B, H, W, C), grad_offset (B, 2*K*K, H, W)), in x's
// dtype; grad_cols may be in the columns' dtype.
std::vector<torch::Tensor> deform_col2im(torch::Tensor x, torch::Tensor offset,
                                         torch::Tensor grad_cols, int64_t K) {
  check(x, offset, K);
  TORCH_CHECK(grad_cols.is_contiguous(), "grad_cols must be contiguous");
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  TORCH_CHECK(grad_cols.numel() == B * H * W * K * K * C, "grad_cols must be (B, H, W, K*K, C)");
  auto grad_x = torch::zeros_like(x);
  auto grad_offset = torch::empty_like(offset);  // offset's layout where it is dense
  dispatch(x, grad_cols.scalar_type(), [&](auto position, auto column) {
    using scalar_t = decltype(position);
    using col_t = decltype(column);
    col2im_kernel<scalar_t, col_t>(
        x.data_ptr<scalar_t>(), Strided<const scalar_t>(offset.data_ptr<scalar_t>(), offset),
        grad_cols.data_ptr<col_t>(), grad_x.data_ptr<scalar_t>(),
        Strided<scalar_t>(grad_offset.data_ptr<scalar_t>(), grad_offset), B, H, W, C, K);
  });
  return {grad_x, grad_offset};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("deform_im2col", &deform_im2col, "bilinear im2col of a DeformConv (CPU)");
  m.def("deform_col2im", &deform_col2im, "backward of deform_im2col (CPU)");
}
