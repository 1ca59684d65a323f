// Fused bilinear im2col for DeformConv on the CPU, and its backward (the `fused` backend).
//
// Why: on 2 CPU threads the `gather` backend spends more time moving taps than multiplying
// (embedding_bag gathers, a sort, four embedding_bag scatters and many copies per layer). Here
// one pass per direction does it all, with channels contiguous so the inner loops vectorise.
//
// Layouts (see deformconv.py): x is NHWC, offset is (B, 2*K*K, H, W) with channel 2k = dy and
// 2k + 1 = dx of tap k = ki*K + kj, columns are (B, H, W, K*K, C). Tap (ki, kj) of pixel (h, w)
// reads x at (h + ki - pad + dy, w + kj - pad + dx); neighbours outside the image read zero.
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
// quiet NaN) but kept the forward loop scalar: 7.9 ms instead of 2.8 ms for float32 columns on
// the first DeformConv layer at 64 px, batch 32 (2 threads).
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

// The 4 neighbours of one sampling position: flat pixel index (or -1 outside), bilinear weight
// and the weight's derivatives w.r.t. the row and column position.
template <typename scalar_t>
struct Corners {
  int64_t index[4];
  scalar_t weight[4], dweight_dy[4], dweight_dx[4];

  Corners(scalar_t py, scalar_t px, int64_t H, int64_t W) {
    const scalar_t fy = std::floor(py), fx = std::floor(px);
    const scalar_t ly = py - fy, lx = px - fx, hy = 1 - ly, hx = 1 - lx;
    const scalar_t ws[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
    const scalar_t dys[4] = {-hx, -lx, hx, lx};
    const scalar_t dxs[4] = {-hy, hy, -ly, ly};
    // A position far outside the image cannot reach it: skip before casting to integers.
    const bool near = fy >= -1 && fy < H && fx >= -1 && fx < W;
    const int64_t y0 = near ? static_cast<int64_t>(fy) : -2;
    const int64_t x0 = near ? static_cast<int64_t>(fx) : -2;
    for (int i = 0; i < 4; ++i) {
      const int64_t y = y0 + (i >> 1), x = x0 + (i & 1);
      const bool inside = near && y >= 0 && y < H && x >= 0 && x < W;
      index[i] = inside ? y * W + x : -1;
      weight[i] = inside ? ws[i] : 0;
      dweight_dy[i] = inside ? dys[i] : 0;
      dweight_dx[i] = inside ? dxs[i] : 0;
    }
  }
};

template <typename scalar_t, typename col_t>
void im2col_kernel(const scalar_t* x, const scalar_t* offset, col_t* cols, int64_t B,
                   int64_t H, int64_t W, int64_t C, int64_t K) {
  const int64_t KK = K * K, HW = H * W, pad = (K - 1) / 2;
  const std::vector<scalar_t> zeros(C, 0);  // what a neighbour outside the image reads
  at::parallel_for(0, B * HW, 64, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / HW, h = (p % HW) / W, w = p % W;
      const scalar_t* img = x + b * HW * C;
      const scalar_t* off = offset + b * 2 * KK * HW + h * W + w;
      for (int64_t k = 0; k < KK; ++k) {
        const scalar_t py = h + k / K - pad + off[(2 * k) * HW];
        const scalar_t px = w + k % K - pad + off[(2 * k + 1) * HW];
        const Corners<scalar_t> c(py, px, H, W);
        const scalar_t* __restrict__ s[4];
        for (int i = 0; i < 4; ++i) s[i] = c.index[i] < 0 ? zeros.data() : img + c.index[i] * C;
        const scalar_t w0 = c.weight[0], w1 = c.weight[1], w2 = c.weight[2], w3 = c.weight[3];
        col_t* __restrict__ out = cols + (p * KK + k) * C;
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
  });
}

// One pass over the taps: the tap's column gradient goes back to its 4 neighbours (grad_x) and,
// dotted with them, to the tap's position (grad_offset). Images are split across threads, so
// no two threads ever write the same grad_x row.
template <typename scalar_t, typename col_t>
void col2im_kernel(const scalar_t* x, const scalar_t* offset, const col_t* grad_cols,
                   scalar_t* grad_x, scalar_t* grad_offset, int64_t B, int64_t H, int64_t W,
                   int64_t C, int64_t K) {
  const int64_t KK = K * K, HW = H * W, pad = (K - 1) / 2;
  const std::vector<scalar_t> zeros(C, 0);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(C);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* img = x + b * HW * C;
      scalar_t* gimg = grad_x + b * HW * C;
      for (int64_t hw = 0; hw < HW; ++hw) {
        const int64_t h = hw / W, w = hw % W;
        const scalar_t* off = offset + b * 2 * KK * HW + hw;
        scalar_t* goff = grad_offset + b * 2 * KK * HW + hw;
        for (int64_t k = 0; k < KK; ++k) {
          const scalar_t py = h + k / K - pad + off[(2 * k) * HW];
          const scalar_t px = w + k % K - pad + off[(2 * k + 1) * HW];
          const Corners<scalar_t> c(py, px, H, W);
          const col_t* __restrict__ g = grad_cols + ((b * HW + hw) * KK + k) * C;
          // Outside neighbours read zeros and write to a scratch row nobody reads.
          const scalar_t* __restrict__ s[4];
          scalar_t* __restrict__ d[4];
          for (int i = 0; i < 4; ++i) {
            const bool inside = c.index[i] >= 0;
            s[i] = inside ? img + c.index[i] * C : zeros.data();
            d[i] = inside ? gimg + c.index[i] * C : scratch.data();
          }
          const scalar_t w0 = c.weight[0], w1 = c.weight[1], w2 = c.weight[2], w3 = c.weight[3];
          scalar_t dot0 = 0, dot1 = 0, dot2 = 0, dot3 = 0;
          const scalar_t *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
          scalar_t *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3];
          // The 4 neighbours are distinct rows (or the scratch row), so iterations are independent.
#pragma omp simd reduction(+ : dot0, dot1, dot2, dot3)
          for (int64_t ch = 0; ch < C; ++ch) {
            scalar_t gc;
            if constexpr (is_bf16<col_t>) {
              gc = bf16_value(reinterpret_cast<const uint16_t*>(g)[ch]);
            } else {
              gc = static_cast<scalar_t>(g[ch]);
            }
            dot0 += s0[ch] * gc;
            dot1 += s1[ch] * gc;
            dot2 += s2[ch] * gc;
            dot3 += s3[ch] * gc;
            d0[ch] += w0 * gc;
            d1[ch] += w1 * gc;
            d2[ch] += w2 * gc;
            d3[ch] += w3 * gc;
          }
          const scalar_t gy = dot0 * c.dweight_dy[0] + dot1 * c.dweight_dy[1] +
                              dot2 * c.dweight_dy[2] + dot3 * c.dweight_dy[3];
          const scalar_t gx = dot0 * c.dweight_dx[0] + dot1 * c.dweight_dx[1] +
                              dot2 * c.dweight_dx[2] + dot3 * c.dweight_dx[3];
          goff[(2 * k) * HW] = gy;
          goff[(2 * k + 1) * HW] = gx;
        }
      }
    }
  });
}

void check(const torch::Tensor& x, const torch::Tensor& offset, int64_t K) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(), "x: contiguous NHWC CPU");
  TORCH_CHECK(offset.dtype() == x.dtype() && offset.is_contiguous(), "offset: contiguous, x's dtype");
  TORCH_CHECK(offset.size(0) == x.size(0) && offset.size(1) == 2 * K * K &&
                  offset.size(2) == x.size(1) && offset.size(3) == x.size(2),
              "offset must be (B, 2*K*K, H, W)");
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
    im2col_kernel<scalar_t, col_t>(x.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
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
  auto grad_offset = torch::empty_like(offset);
  dispatch(x, grad_cols.scalar_type(), [&](auto position, auto column) {
    using scalar_t = decltype(position);
    using col_t = decltype(column);
    col2im_kernel<scalar_t, col_t>(x.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
                                   grad_cols.data_ptr<col_t>(), grad_x.data_ptr<scalar_t>(),
                                   grad_offset.data_ptr<scalar_t>(), B, H, W, C, K);
  });
  return {grad_x, grad_offset};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("deform_im2col", &deform_im2col, "bilinear im2col of a DeformConv (CPU)");
  m.def("deform_col2im", &deform_col2im, "backward of deform_im2col (CPU)");
}
