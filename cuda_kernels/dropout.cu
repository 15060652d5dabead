// Inverted dropout with a counter-based mask: element i of a call keeps its value (times
// scale = 1/(1-p)) when the 32-bit word i % 4 of Philox4x32-10(counter, key), with
//     counter = (i/4 low 32 bits, i/4 high 32 bits, call low 32 bits, call high 32 bits)
//     key     = (seed low 32 bits, seed high 32 bits)
// has its top 24 bits at or above threshold = ceil(p * 2^24), else becomes x * 0. The mask
// is a pure function of (seed, call, i): the NumPy backend computes the same words, so both
// devices draw the same mask, and backward recomputes it instead of storing it. The
// comparison is on integers, so no float rounding can move an element across the threshold.

#include "common.cuh"

// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011), as in Random123: ten rounds of two 32x32->64-bit products, the key bumped by
// the Weyl constants between rounds.
struct Philox4x32 {
    unsigned int v[4];
};

__device__ __forceinline__ Philox4x32 philox4x32_10(unsigned int c0, unsigned int c1, unsigned int c2,
                                                    unsigned int c3, unsigned int k0, unsigned int k1)
{
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned long long p0 = 0xD2511F53ull * c0, p1 = 0xCD9E8D57ull * c2;
        const unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
        const unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    return {{c0, c1, c2, c3}};
}

// y = x * (keep ? scale : 0); forward and backward alike (backward passes dy as x). One
// thread per group of four elements, which share one Philox block.
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
dropout_apply(const T* __restrict__ x, T* __restrict__ y, long long n, unsigned long long seed,
              unsigned long long call, unsigned int threshold, T scale)
{
    const long long groups = (n + 3) / 4;
    GRID_STRIDE_LOOP(q, groups) {
        const Philox4x32 r = philox4x32_10((unsigned int)q, (unsigned int)((unsigned long long)q >> 32),
                                           (unsigned int)call, (unsigned int)(call >> 32), (unsigned int)seed,
                                           (unsigned int)(seed >> 32));
        for (int j = 0; j < 4; ++j) {
            const long long i = 4 * q + j;
            if (i < n)
                y[i] = x[i] * ((r.v[j] >> 8) >= threshold ? scale : T(0));
        }
    }
}
