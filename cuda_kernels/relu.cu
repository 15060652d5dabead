// ReLU, elementwise with grid-stride loops of ELEMENTWISE_BLOCK-thread blocks.

#include "common.cuh"

// y = max(x, 0). Written as a comparison with 0 that is false for NaN, so NaN passes through
// as with np.maximum and torch.relu.
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
relu_forward(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    GRID_STRIDE_LOOP(i, n)
        y[i] = x[i] < T(0) ? T(0) : x[i];
}

// dx = dy where the forward output was positive, else 0 (the derivative of max(x, 0), seed 003).
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
relu_backward(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx, long long n)
{
    GRID_STRIDE_LOOP(i, n)
        dx[i] = y[i] > T(0) ? dy[i] : T(0);
}
