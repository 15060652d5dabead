// LeakyReLU, Sigmoid, Tanh and GELU, forward and backward, elementwise with grid-stride
// loops (ReLU has its own relu.cu). Each backward takes what its derivative is cheapest in:
// the input for LeakyReLU and GELU, the output for Sigmoid (y (1 - y)) and Tanh (1 - y^2).
// The formulas are torch's, so that results agree to rounding.

#include "common.cuh"

// x where x > 0, else x * negative_slope (false for NaN, which stays NaN either way).
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
leaky_relu_forward(const T* __restrict__ x, T* __restrict__ y, long long n, T negative_slope)
{
    GRID_STRIDE_LOOP(i, n)
        y[i] = x[i] > T(0) ? x[i] : x[i] * negative_slope;
}

template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
leaky_relu_backward(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx, long long n,
                    T negative_slope)
{
    GRID_STRIDE_LOOP(i, n)
        dx[i] = x[i] > T(0) ? dy[i] : dy[i] * negative_slope;
}

// 1 / (1 + e^-x): e^-x overflows to infinity for very negative x, giving the limit 0.
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
sigmoid_forward(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    GRID_STRIDE_LOOP(i, n)
        y[i] = T(1) / (T(1) + exp(-x[i]));
}

template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
sigmoid_backward(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx, long long n)
{
    GRID_STRIDE_LOOP(i, n)
        dx[i] = dy[i] * (T(1) - y[i]) * y[i];
}

template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
tanh_forward(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    GRID_STRIDE_LOOP(i, n)
        y[i] = tanh(x[i]);
}

template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
tanh_backward(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx, long long n)
{
    GRID_STRIDE_LOOP(i, n)
        dx[i] = dy[i] * fused_multiply_add(-y[i], y[i], T(1));
}

// GELU's constants: 1/sqrt(2), 1/sqrt(2 pi), and the tanh form's sqrt(2/pi) and 0.044715.
#define GELU_SQRT1_2 0.70710678118654752440
#define GELU_INV_SQRT_2PI 0.39894228040143267794
#define GELU_SQRT_2_PI 0.79788456080286535588
#define GELU_KAPPA 0.044715

// The tanh form's inner argument sqrt(2/pi) (x + 0.044715 x^3).
template <typename T>
__device__ __forceinline__ T gelu_tanh_inner(T x)
{
    return T(GELU_SQRT_2_PI) * fused_multiply_add(T(GELU_KAPPA) * x * x, x, x);
}

// x Phi(x) = x/2 (1 + erf(x / sqrt 2)), or with approximate: x/2 (1 + tanh(inner(x))).
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
gelu_forward(const T* __restrict__ x, T* __restrict__ y, long long n, int approximate)
{
    GRID_STRIDE_LOOP(i, n) {
        const T v = x[i];
        const T f = approximate ? tanh(gelu_tanh_inner(v)) : erf(v * T(GELU_SQRT1_2));
        y[i] = T(0.5) * v * (T(1) + f);
    }
}

// Exact: Phi(x) + x phi(x), phi(x) = e^(-x^2/2) / sqrt(2 pi). Tanh form: the product rule on
// x/2 (1 + t), t = tanh(inner): (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2).
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
gelu_backward(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx, long long n, int approximate)
{
    GRID_STRIDE_LOOP(i, n) {
        const T v = x[i];
        T slope;
        if (approximate) {
            const T t = tanh(gelu_tanh_inner(v));
            const T inner_slope = T(GELU_SQRT_2_PI) * fused_multiply_add(T(3 * GELU_KAPPA) * v, v, T(1));
            slope = fused_multiply_add(T(0.5) * v * fused_multiply_add(-t, t, T(1)), inner_slope,
                                       T(0.5) * (T(1) + t));
        } else {
            const T cdf = T(0.5) * (T(1) + erf(v * T(GELU_SQRT1_2)));
            const T pdf = exp(T(-0.5) * v * v) * T(GELU_INV_SQRT_2PI);
            slope = fused_multiply_add(v, pdf, cdf);
        }
        dx[i] = dy[i] * slope;
    }
}
