// The TF32 tensor-core instructions the TF32 kernels use, as inline PTX (no CUDA header: NVRTC
// accepts PTX wherever it runs), or, under the CPU emulator (GPUCNN_EMULATOR, defined by its
// cuda_host.h), its models of them (gpucnn/emulator/mma.h).
//
// mma_m16n8k8_tf32 is mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: D = A B + C for a
// 16 x 8 A, an 8 x 8 B and a 16 x 8 float accumulator, each spread over the 32 lanes of a
// warp as the PTX ISA lays them out ("Matrix Fragments for mma.m16n8k8", .tf32), with
// g = lane / 4 and t = lane % 4:
//   a[0] = A(g, t)   a[1] = A(g + 8, t)   a[2] = A(g, t + 4)   a[3] = A(g + 8, t + 4)
//   b[0] = B(t, g)   b[1] = B(t + 4, g)
//   acc[0] = C(g, 2t)   acc[1] = C(g, 2t + 1)   acc[2] = C(g + 8, 2t)   acc[3] = C(g + 8, 2t + 1)
// It is a warp collective: every lane of the warp runs the same call, converged.
// tf32_round is cvt.rna.tf32.f32: a float rounded to TF32 (10 mantissa bits; to nearest, ties
// away from zero), as the 32-bit register an operand of the product takes.
// Both exist from sm_80 on: below it TF32_TENSOR_CORES is 0 and a kernel leaves them out.
// The signatures: unsigned tf32_round(float x);
//                 void mma_m16n8k8_tf32(float (&acc)[4], const unsigned (&a)[4], const unsigned (&b)[2]);

#if defined(GPUCNN_EMULATOR)
#define TF32_TENSOR_CORES 1
// The emulator's models, by name: a kernel's call is then the call of the warp collective
// itself, so that each call site in the kernel is one mma instruction, as on a GPU, however
// the emulator's build inlines (a wrapper left out of line at -O0 would make all one site).
#define tf32_round gpucnn_emu::cvt_rna_tf32
#define mma_m16n8k8_tf32 gpucnn_emu::mma_m16n8k8_tf32
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define TF32_TENSOR_CORES 1

__device__ __forceinline__ unsigned tf32_round(float x)
{
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

// acc = A B + acc over the warp.
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&acc)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
#define TF32_TENSOR_CORES 0
#endif
