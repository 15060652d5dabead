// The implicit-GEMM engine of the convolutions (conv2d.cu, conv2d_tf32.cu): C = A B with
// operands gathered element by element from the tensors (an operand type says how, see
// conv2d.cuh), staged a k slice at a time in shared memory, and C staged again on its way
// out so that the stores are coalesced. tiled_gemm runs the products on the SIMT cores; the
// TF32 module runs them on tensor cores around the same slices and staged tile.

#include "common.cuh"

// k as three digits (hi, mid, lo) with lo < LO and mid < MID: (c, ky, kx) over (KH, KW) for
// taps, (n, oh, ow) over (OH, OW) for output pixels. The gathers need the digits of every
// k they read, and an integer division by a runtime value costs a GPU about twenty
// instructions, so a thread divides once per tile (split) and then steps its digits by the
// depth of a k slice, once per slice (advance): the step's own digits are below the
// radices, so a single conditional carry per digit is enough.
struct Digits {
    int hi, mid, lo;
};

struct MixedRadix {
    int MID, LO;

    __device__ Digits split(long long k) const
    {
        const long long high = k / LO;
        return {(int)(high / MID), (int)(high % MID), (int)(k % LO)};
    }

    __device__ void advance(Digits& d, const Digits& step) const
    {
        d.lo += step.lo;
        d.mid += step.mid;
        d.hi += step.hi;
        if (d.lo >= LO) {
            d.lo -= LO;
            ++d.mid;
        }
        if (d.mid >= MID) {
            d.mid -= MID;
            ++d.hi;
        }
    }
};

// Padding after each k row of a shared tile (tiles are stored k-major). It keeps every row
// 16-byte aligned, for the products' wide reads, and sends a k-fast gather's warp (BK
// values of k by 32/BK rows) to distinct banks: in float32, row kk starts at bank kk*32/BK
// when rows are a multiple of 32 elements long (and on distinct banks too for the other
// row lengths of launch.GEMM_TILES: 16 and 4 with BK = 4).
__host__ __device__ constexpr int shared_pad(int BK) { return 32 / BK; }

// Which elements of an operand's ROWS x BK slice one thread gathers, and the gather itself.
// The thread reads one k per slice and the rows first_row, first_row + LANES, ...; both
// stay fixed across slices, so the rows' Outer parts are computed once per tile and the
// k's digits are stepped, never divided (MixedRadix). Values are gathered into
// registers (load) a slice ahead and written to shared memory (put) after the current
// slice's products, so the global reads' latency hides behind those products.
template <typename T, int ROWS, int BK, int THREADS, typename Operand>
struct SliceLoader {
    static constexpr int LANES = THREADS / BK;               // threads per k
    static constexpr int COUNT = (ROWS + LANES - 1) / LANES;  // rows per thread
    static_assert(THREADS % BK == 0, "every thread takes one k of each slice");

    const Operand& op;
    MixedRadix radix;
    Digits step, digits;
    int kk, first_row;
    typename Operand::Outer rows[COUNT];
    T next[COUNT];

    __device__ SliceLoader(const Operand& op, long long row0, long long row_count, long long k_begin)
        : op(op), radix(op.radix())
    {
        const int t = threadIdx.x;
        kk = Operand::K_FAST ? t % BK : t / LANES;
        first_row = Operand::K_FAST ? t / BK : t % LANES;
        step = radix.split(BK);
        digits = radix.split(k_begin + kk);
        // Rows past the matrix's edge read the last row instead: they only feed elements of
        // C outside the matrix, which are never stored, and no row needs a bounds test.
        for (int i = 0; i < COUNT; ++i)
            rows[i] = op.outer(min(row0 + first_row + i * LANES, row_count - 1));
    }

    // depth: how many k of this slice are left before k_end; those past it add nothing.
    __device__ void load(int depth)
    {
        const typename Operand::Inner inner = op.inner(digits);
        for (int i = 0; i < COUNT; ++i)
            next[i] = kk < depth ? op.at(rows[i], inner) : T(0);
    }

    __device__ void advance() { radix.advance(digits, step); }

    // Stored k-major: a thread's products then read TM (or TN) neighbours of one k at once.
    __device__ void put(T (*slice)[ROWS + shared_pad(BK)]) const
    {
        for (int i = 0; i < COUNT; ++i)
            if (first_row + i * LANES < ROWS)
                slice[kk][first_row + i * LANES] = next[i];
    }
};

// acc += the products of one k slice: per k, TM values of A and TN of B (neighbours in
// shared memory, read as wide loads) make TM*TN multiply-adds.
template <typename T, int BM, int BN, int BK, int TM, int TN>
__device__ void multiply_slice(const T (*As)[BM + shared_pad(BK)], const T (*Bs)[BN + shared_pad(BK)], int tm, int tn,
                               T (&acc)[TM][TN])
{
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
        T a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i)
            a[i] = As[kk][tm * TM + i];
#pragma unroll
        for (int j = 0; j < TN; ++j)
            b[j] = Bs[kk][tn * TN + j];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j)
                acc[i][j] = fused_multiply_add(a[i], b[j], acc[i][j]);
    }
}

// The k loop of one BM x BN tile, for either GEMM: slices of A and B are gathered a slice
// ahead (SliceLoader) and alternate between two shared buffers, As[0|1] and Bs[0|1], so one
// barrier per slice suffices: the buffer being filled was last read before the previous
// barrier. multiply(As[b], Bs[b]) runs the products of a staged slice.
template <typename T, int BM, int BN, int BK, int THREADS, typename OperandA, typename OperandB, typename Multiply>
__device__ void for_each_slice(long long m0, long long M, long long j0, long long J, long long k_begin,
                               long long k_end, const OperandA& a, const OperandB& b,
                               T (*As)[BK][BM + shared_pad(BK)], T (*Bs)[BK][BN + shared_pad(BK)],
                               const Multiply& multiply)
{
    SliceLoader<T, BM, BK, THREADS, OperandA> load_a(a, m0, M, k_begin);
    SliceLoader<T, BN, BK, THREADS, OperandB> load_b(b, j0, J, k_begin);
    load_a.load((int)min(k_end - k_begin, (long long)BK));
    load_b.load((int)min(k_end - k_begin, (long long)BK));
    load_a.put(As[0]);
    load_b.put(Bs[0]);
    __syncthreads();
    int buffer = 0;
    for (long long k0 = k_begin; k0 < k_end; k0 += BK) {
        const bool more = k0 + BK < k_end;
        if (more) {  // in flight while the products below run
            const int depth = (int)min(k_end - k0 - BK, (long long)BK);
            load_a.advance();
            load_b.advance();
            load_a.load(depth);
            load_b.load(depth);
        }
        multiply(As[buffer], Bs[buffer]);
        if (more) {
            load_a.put(As[buffer ^ 1]);
            load_b.put(Bs[buffer ^ 1]);
        }
        __syncthreads();
        buffer ^= 1;
    }
}

// The BM x BN tile of C on its way out, staged in shared memory so that a warp's global
// stores are neighbours whatever pattern the threads computed it in: for a store along the
// rows (Store::ALONG_ROWS) the tile is held column-major and consecutive threads take
// consecutive rows of one column (32 neighbouring output pixels of one channel, one
// 128-byte line in float32); otherwise row-major, consecutive threads along a row. Rows
// are padded by 4 elements, so that neighbouring rows start on different banks.
template <typename T, int BM, int BN, bool ALONG_ROWS>
struct StagedTile {
    static constexpr int INNER = ALONG_ROWS ? BM : BN, OUTER = ALONG_ROWS ? BN : BM;
    static constexpr int LD = INNER + 4, SIZE = OUTER * LD;
    T* cs;

    __device__ T& at(int r, int c) const { return ALONG_ROWS ? cs[c * LD + r] : cs[r * LD + c]; }

    // Writes the staged tile, rows m0.. and columns j0.. of C, through store; every thread
    // of the block calls it once the tile is staged. A thread keeps one position along the
    // contiguous axis (so its row's offset, a 64-bit division in StoreRows, is found once)
    // and steps along the other. The barriers: before, the tile is complete; after, every
    // read of it is done before the block's next tile overwrites the same shared memory.
    // The loops stay rolled: unrolled, ptxas hoisted their addresses and took up to 18 more
    // registers (sm_90) than the k loop needs.
    template <int THREADS, typename Store>
    __device__ void write_out(const Store& store, long long m0, long long M, long long j0, long long J) const
    {
        static_assert(THREADS % INNER == 0, "each thread keeps one position along the contiguous axis");
        const int inner = threadIdx.x % INNER;
        __syncthreads();
        if (ALONG_ROWS && m0 + inner < M) {
            const long long row = store.row(m0 + inner);
#pragma unroll 1
            for (int c = threadIdx.x / INNER; c < BN && j0 + c < J; c += THREADS / INNER)
                store.put(row, j0 + c, at(inner, c));
        }
        if (!ALONG_ROWS && j0 + inner < J) {
#pragma unroll 1
            for (int r = threadIdx.x / INNER; r < BM && m0 + r < M; r += THREADS / INNER)
                store.put(store.row(m0 + r), j0 + inner, at(r, inner));
        }
        __syncthreads();
    }
};

// A GEMM block's shared memory, one array: during the k loop the two buffers of A slices
// and of B slices (for_each_slice, k-major), after it the staged tile (StagedTile), so that
// staging costs no shared memory beyond the larger of the two (a float64 64 x 64 tile
// staged apart from its slices would pass the 48 KiB of static shared memory). The k
// loop's last barrier orders its reads of the slices before the tile's writes.
template <typename T, int BM, int BN, int BK, bool ALONG_ROWS>
struct GemmShared {
    static constexpr int LDA = BM + shared_pad(BK), LDB = BN + shared_pad(BK);
    using Tile = StagedTile<T, BM, BN, ALONG_ROWS>;
    static constexpr int SLICES = 2 * BK * (LDA + LDB);
    static constexpr int SIZE = SLICES > Tile::SIZE ? SLICES : Tile::SIZE;
    static_assert(2 * BK * LDA * sizeof(T) % 32 == 0, "B's slices start 32-byte aligned, as A's");
    T* p;

    __device__ auto as() const { return reinterpret_cast<T (*)[BK][LDA]>(p); }
    __device__ auto bs() const { return reinterpret_cast<T (*)[BK][LDB]>(p + 2 * BK * LDA); }
    __device__ Tile tile() const { return {p}; }
};

// C (M x J) = A B over k in [k_begin, k_end), written through store (StoreRows,
// StorePhaseRows or StoreMatrix). blockIdx.x walks BM-row tiles and blockIdx.y BN-column
// tiles, both grid-stride; a block has (BM/TM) x (BN/TN) threads, thread (tm, tn) owning rows
// tm*TM.. and columns tn*TN.. of the tile in registers, which it stages (StagedTile) for
// the block to store.
template <typename T, int BM, int BN, int BK, int TM, int TN, typename OperandA, typename OperandB, typename Store>
__device__ void tiled_gemm(long long M, long long J, long long k_begin, long long k_end, const OperandA& a,
                           const OperandB& b, const Store& store)
{
    constexpr int THREADS = (BM / TM) * (BN / TN);
    using Shared = GemmShared<T, BM, BN, BK, Store::ALONG_ROWS>;
    __align__(32) __shared__ T shared[Shared::SIZE];
    const Shared smem{shared};
    const int tm = threadIdx.x % (BM / TM), tn = threadIdx.x / (BM / TM);
    for (long long j0 = (long long)blockIdx.y * BN; j0 < J; j0 += (long long)gridDim.y * BN) {
        for (long long m0 = (long long)blockIdx.x * BM; m0 < M; m0 += (long long)gridDim.x * BM) {
            T acc[TM][TN] = {};
            for_each_slice<T, BM, BN, BK, THREADS>(
                m0, M, j0, J, k_begin, k_end, a, b, smem.as(), smem.bs(),
                [&](const T (*as)[BM + shared_pad(BK)], const T (*bs)[BN + shared_pad(BK)]) {
                    multiply_slice<T, BM, BN, BK, TM, TN>(as, bs, tm, tn, acc);
                });
            for (int i = 0; i < TM; ++i)
                for (int j = 0; j < TN; ++j)
                    smem.tile().at(tm * TM + i, tn * TN + j) = acc[i][j];
            smem.tile().template write_out<THREADS>(store, m0, M, j0, J);
        }
    }
}
