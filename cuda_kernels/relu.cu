// ReLU, elementwise with grid-stride loops of 256-thread blocks (launch.ELEMENTWISE_BLOCK).
// No #include: the same text compiles with NVRTC, nvcc and the CPU emulator.

// y = max(x, 0). Written as a comparison with 0 that is false for NaN, so NaN passes through
// as with np.maximum and torch.relu.
template <typename T>
__global__ void __launch_bounds__(256) relu_forward(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = x[i] < T(0) ? T(0) : x[i];
}

// dx = dy where the forward output was positive, else 0 (the derivative of max(x, 0), seed 003).
template <typename T>
__global__ void __launch_bounds__(256) relu_backward(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dx[i] = y[i] > T(0) ? dy[i] : T(0);
}
