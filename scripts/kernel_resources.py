"""The resource tables of docs/kernels.md, generated from the builds users run: every kernel
module compiled by the NVRTC of the pip wheels with CuPy's options (gpucnn.backends.cuda.nvrtc),
for sm_80 and sm_90, read from ptxas's report: registers, shared memory and theoretical
occupancy of every kernel instance the CUDA backend instantiates, with each kernel family's
FLOP per byte against A100, H100 and H200.

    python scripts/kernel_resources.py            # print the generated block
    python scripts/kernel_resources.py --write    # rewrite it in docs/kernels.md
    python scripts/kernel_resources.py --check    # exit 1 if docs/kernels.md is out of date

Needs the nvrtc extra (pip install -e '.[nvrtc]'); no GPU, driver or toolkit.
tests/test_nvrtc_build.py checks that the block matches docs/kernels.md.
"""
import argparse
import sys
import textwrap
from pathlib import Path

from gpucnn.backends.cuda import launch, nvrtc

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "kernels.md"
BEGIN, END = "<!-- kernel-resources:begin -->", "<!-- kernel-resources:end -->"
REFRESH = "python scripts/kernel_resources.py --write"

# Per-SM limits of the two architectures we compile for. Threads, blocks, registers: the CUDA
# Programming Guide's table of technical specifications per compute capability; shared memory:
# its "Shared Memory" sections for 8.x (up to 164 KB on 8.0) and 9.0 (up to 228 KB), which also
# say that 1 KB per block is reserved for system use.
ARCHS = {
    80: dict(registers=65536, shared=164 * 1024, threads=2048, blocks=32),  # A100
    90: dict(registers=65536, shared=228 * 1024, threads=2048, blocks=32),  # H100, H200
}
# The tables' compiler: the NVRTC of cupy-cuda13x's CUDA (the cuda13 extra).
NVRTC_MAJOR = 13
# The allocation rules of NVIDIA's occupancy calculator, cuda_occupancy.h (CUDA 13.0), for
# compute capability 8.x and 9.x: registers are allocated per warp, rounded up to 256, from
# 4 sub-partitions of the register file; shared memory per block is its static size plus the
# 1 KiB the driver reserves, rounded up to 128 bytes; 2 named barriers per resident block.
REGISTER_GRANULE, SUB_PARTITIONS = 256, 4
SHARED_RESERVED, SHARED_GRANULE = 1024, 128
BARRIERS_PER_BLOCK = 2
WARP = 32

# Datasheet peaks (dense, no sparsity), FLOP/s, and HBM bandwidth, bytes/s: NVIDIA's A100
# (SXM4 80GB), H100 (SXM5) and H200 (SXM) data sheets. fp64 is the non-tensor DFMA rate, the
# one our float64 kernels use.
GPUS = {
    "A100": dict(arch=80, sms=108, fp32=19.5e12, fp64=9.7e12, tf32=156e12, bandwidth=2.039e12),
    "H100": dict(arch=90, sms=132, fp32=67e12, fp64=34e12, tf32=495e12, bandwidth=3.35e12),
    "H200": dict(arch=90, sms=132, fp32=67e12, fp64=34e12, tf32=495e12, bandwidth=4.8e12),
}

# The element-wise, pooling and reduction families: floating-point operations per element as
# the kernel text writes them (an fma is 2, a library exp/tanh/erf is 1), and global-memory
# elements read plus written per element (per-channel values are cached and not counted; a
# 2x2 stride-2 window for the poolings, per output element of forward and input of backward).
# (kernels, FLOP per element, elements moved per element, extra bytes per element)
STREAMING = (
    ("relu_forward", 0, 2, 0),
    ("relu_backward", 0, 3, 0),
    ("leaky_relu_forward", 1, 2, 0),
    ("leaky_relu_backward", 1, 3, 0),
    ("sigmoid_forward", 3, 2, 0),
    ("sigmoid_backward", 3, 3, 0),
    ("tanh_forward", 1, 2, 0),
    ("tanh_backward", 3, 3, 0),
    ("gelu_forward (exact)", 5, 2, 0),
    ("gelu_forward (tanh form)", 9, 2, 0),
    ("gelu_backward (exact)", 11, 3, 0),
    ("gelu_backward (tanh form)", 19, 3, 0),
    ("dropout_apply", 1, 2, 0),
    ("batch_norm_statistics", 7, 1, 0),
    ("batch_norm_forward", 4, 2, 0),
    ("batch_norm_backward_reduce", 4, 2, 0),
    ("batch_norm_backward_data", 9, 3, 0),
    ("max_pool2d_forward (2x2)", 0, 5, 4),  # 4 reads, 1 write, an int32 argmax
    ("max_pool2d_backward_gather (2x2)", 0, 2, 4),
    ("avg_pool2d_forward (2x2)", 5, 5, 0),
    ("avg_pool2d_backward_gather (2x2)", 2, 2, 0),
    ("adaptive_avg_pool2d_forward (2x2 window)", 5, 5, 0),
    ("conv2d_backward_bias, add_partial_sums", 1, 1, 0),
)

# The static model of issue 14: a 3x3, 64 -> 64 convolution, padding 1, on 32 x 32 images,
# batch 128, on an H100.
MODEL = dict(N=128, C=64, O=64, H=32, W=32, K=3, gpu="H100")


def builds():
    """Every kernel module built as the tables need it: NVRTC_MAJOR's NVRTC, each of ARCHS."""
    return nvrtc.compile_modules(tuple(ARCHS), (NVRTC_MAJOR,))


def compiler():
    """The tables' compiler, as the generated block names it."""
    wheel = nvrtc.WHEELS[NVRTC_MAJOR][0][0]
    return f"NVRTC {nvrtc.version(NVRTC_MAJOR)}, wheel {wheel} {nvrtc.wheel_version(NVRTC_MAJOR)}"


def occupancy(arch, r):
    """(resident blocks per SM, what limits them, occupancy) as cudaOccMaxActiveBlocksPerMultiprocessor
    computes them with the default shared-memory carveout (the largest)."""
    limits = ARCHS[arch]
    warps = -(-r.threads // WARP)
    registers_per_warp = -(-r.registers * WARP // REGISTER_GRANULE) * REGISTER_GRANULE
    warps_by_registers = (limits["registers"] // SUB_PARTITIONS // registers_per_warp) * SUB_PARTITIONS
    shared = -(-(r.shared + SHARED_RESERVED) // SHARED_GRANULE) * SHARED_GRANULE
    by = {
        "blocks": limits["blocks"],
        "threads": limits["threads"] // WARP // warps,
        "registers": warps_by_registers // warps,
        "shared memory": limits["shared"] // shared,
        "barriers": BARRIERS_PER_BLOCK * limits["blocks"] // r.barriers if r.barriers else sys.maxsize,
    }
    blocks = min(by.values())
    limiter = " + ".join(k for k, v in by.items() if v == blocks)
    return blocks, limiter, blocks * warps * WARP / limits["threads"]


def table(builds):
    """{name expression: {arch: nvrtc.Entry}} for every instance, or a ValueError naming each
    failed build, instance that did not lower and spill."""
    problems = [p for build in builds for p in build.problems()]
    if problems:
        raise ValueError("kernel_resources: the builds are not clean:\n" + "\n".join(problems))
    rows = {}
    for build in builds:
        entries = build.entries()
        for expression in build.name_expressions:
            rows.setdefault(expression, {})[build.arch] = entries[build.lowered[expression]]
    return rows


def _percent(x):
    return f"{100 * x:.1f}%".replace(".0%", "%")


def _bound(intensity, balance):
    return "compute" if intensity >= balance else "memory"


def _balances(precision):
    return {gpu: g[precision] / g["bandwidth"] for gpu, g in GPUS.items()}


def resource_lines(rows):
    archs = list(ARCHS)
    head = "| instance | threads | shared memory |" + "".join(
        f" sm_{a} registers | sm_{a} blocks/SM (limit) | sm_{a} occupancy |" for a in archs)
    lines = [head, "|---" * (3 + 3 * len(archs)) + "|"]
    for expression, per_arch in rows.items():
        first = per_arch[archs[0]]
        shared = {r.shared for r in per_arch.values()}
        cells = [f"`{expression}`", str(first.threads), " / ".join(f"{s} B" for s in sorted(shared))]
        for arch in archs:
            blocks, limiter, occ = occupancy(arch, per_arch[arch])
            cells += [str(per_arch[arch].registers), f"{blocks} ({limiter})", _percent(occ)]
        lines.append("| " + " | ".join(cells) + " |")
    frames = sorted({f"`{e}` (sm_{a}: {r.stack} B stack)" for e, p in rows.items() for a, r in p.items()
                     if r.stack})
    lines += ["", "Stack frames: " + ("; ".join(frames) if frames else "none, in any instance.")
              + " Spills: none (the builds are refused with any)."]
    return lines


def gemm_lines():
    """Each GEMM tile's arithmetic intensity: a block loads (BM + BN) x BK operand elements from
    global memory per slice and does 2 BM BN BK FLOP on them."""
    gpus = list(GPUS)
    lines = ["| tile BM x BN (kernels) | precision | FLOP/B | "
             + " | ".join(f"{g}: balance, bound" for g in gpus) + " |", "|---" * (3 + len(gpus)) + "|"]
    tiles = [(t, "float32", "fp32", 4) for t in launch.GEMM_TILES]
    tiles += [(t, "float64", "fp64", 8) for t in launch.GEMM_TILES]
    tiles += [(t, "TF32", "tf32", 4) for t in launch.TF32_TILES]
    for tile, precision, peak, size in tiles:
        intensity = 2 * tile.rows * tile.cols / ((tile.rows + tile.cols) * size)
        kernels = "TF32" if peak == "tf32" else "SIMT"
        cells = [f"{tile.rows} x {tile.cols} ({kernels}, {tile.threads} threads)", precision, f"{intensity:.1f}"]
        cells += [f"{b:.1f}, {_bound(intensity, b)}" for b in _balances(peak).values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def streaming_lines():
    fp64_balance = min(_balances("fp64").values())
    lines = ["| kernel | FLOP per element | bytes per element (float32 / float64) | FLOP/B (float32) | bound |",
             "|---|---|---|---|---|"]
    for kernel, flop, elements, extra in STREAMING:
        bytes32, bytes64 = 4 * elements + extra, 8 * elements + extra
        intensity = flop / bytes32
        lines.append(f"| `{kernel}` | {flop} | {bytes32} / {bytes64} | {intensity:.2f} | "
                     f"{_bound(intensity, fp64_balance)} |")
    return lines


def model_lines(rows):
    """Issue 14's convolution, pass by pass, for the SIMT and the TF32 kernels: the tile
    launch.py picks, its occupancy from the table above, and a ceiling set by the issue slots
    that the gathers take (launch.GATHER_COST multiply-add slots per gathered element)."""
    m = MODEL
    gpu = GPUS[m["gpu"]]
    pixels = m["N"] * m["H"] * m["W"]  # stride 1, padding 1: output size = input size
    taps = m["K"] * m["K"]
    _, chunks = launch.weight_gradient_chunks(m["O"], m["C"], m["K"], m["K"], pixels)

    def launches(tf32):  # pass name, kernel, its one launch (stride 1: one backward-data phase)
        (_, _, data), = launch.conv2d_backward_data(m["N"], m["C"], m["H"], m["W"], m["K"], m["K"], 1, 1, 1, 1,
                                                    tf32=tf32)
        return (("forward", "conv2d_forward", launch.conv2d_forward(m["N"], m["O"], m["H"], m["W"], tf32=tf32)),
                ("backward-data", "conv2d_backward_data_full_rot180", data),
                ("weight gradient", "conv2d_backward_weight",
                 launch.conv2d_backward_weight(m["O"], m["C"], m["K"], m["K"], chunks, tf32=tf32)))

    flop = 2 * pixels * m["O"] * m["C"] * taps
    dram = 4 * (2 * pixels * m["C"] + m["O"] * m["C"] * taps)  # x (or dy), y (or dx), w: compulsory
    text = (f"{m['K']}x{m['K']}, {m['C']} -> {m['O']} channels, {m['H']}x{m['W']} images, batch {m['N']}, "
             f"float32, on an {m['gpu']} ({gpu['sms']} SMs, {gpu['fp32'] / 1e12:.0f} TFLOP/s fp32, "
             f"{gpu['tf32'] / 1e12:.0f} TF32, {gpu['bandwidth'] / 1e12:.2f} TB/s). Each pass is "
             f"{flop / 1e9:.2f} GFLOP; its compulsory DRAM traffic (two activations and the filter, once) "
             f"is {dram / 1e6:.0f} MB, {1e6 * dram / gpu['bandwidth']:.0f} us at full bandwidth, against "
             f"{1e6 * flop / gpu['fp32']:.0f} us of fp32 peak: every pass is "
             f"{'compute' if flop / gpu['fp32'] > dram / gpu['bandwidth'] else 'memory'}-bound on paper.")
    lines = ["| pass | path | tile | blocks | blocks/SM, occupancy | waves | multiply-add share of issue | ceiling "
             "| time at the ceiling |", "|---|---|---|---|---|---|---|---|---|"]
    for path in ("SIMT", "TF32"):
        for name, kernel, config in launches(path == "TF32"):
            tile = config.tile
            expression = f"{kernel}_tf32<{tile.template_args}>" if path == "TF32" else \
                f"{kernel}<float, {tile.template_args}>"
            blocks_per_sm, _, occ = occupancy(gpu["arch"], rows[expression][gpu["arch"]])
            blocks = config.grid[0] * config.grid[1] * config.grid[2]
            gathered_per_fma = (tile.rows + tile.cols) / (tile.rows * tile.cols)
            # SIMT: the FMAs and the gathers share the issue slots. TF32: the tensor cores do the
            # products, so only the gathers issue; both run at the FFMA issue rate.
            share = 1 / (1 + launch.GATHER_COST * gathered_per_fma)
            ceiling = gpu["fp32"] * share if path == "SIMT" else min(
                gpu["tf32"], gpu["fp32"] / (launch.GATHER_COST * gathered_per_fma))
            ceiling *= min(1, blocks / gpu["sms"])  # fewer blocks than SMs leave SMs idle
            share_text = _percent(share) if path == "SIMT" else "0% (tensor cores)"
            lines.append(f"| {name} | {path} | {tile.rows} x {tile.cols} | {blocks} | {blocks_per_sm}, "
                         f"{_percent(occ)} | {blocks / (gpu['sms'] * blocks_per_sm):.1f} | {share_text} | "
                         f"{ceiling / 1e12:.0f} TFLOP/s | {1e6 * flop / ceiling:.0f} us |")
    return text, lines


def _prose(text):
    return textwrap.fill(text, width=92, break_long_words=False, break_on_hyphens=False)


def block(builds, version):
    """The generated block, from builds (`builds()`) by the compiler `version` (`compiler()`)."""
    rows = table(builds)
    model_text, model_table = model_lines(rows)
    return "\n".join([
        BEGIN,
        f"<!-- Generated by `{REFRESH}` from {version}; do not edit by hand. -->",
        "",
        _prose(f"**Resources per instance** ({version}, the compile a user's CuPy runs: the "
        "backend's `KERNEL_OPTIONS` with CuPy's own options and include path, "
        "`--ptxas-options=-v`; threads per block: the kernel's `__launch_bounds__`, which its launches "
        "use). Blocks per SM and occupancy are theoretical, computed by the rules of CUDA's "
        "occupancy calculator (`cuda_occupancy.h`): registers per warp rounded up to 256, from four "
        "sub-partitions of 16384; shared memory per block plus the 1 KiB the driver reserves, "
        "rounded up to 128 B, out of 164 KiB (sm_80) or 228 KiB (sm_90) with the default, largest "
        "carveout; at most 2048 threads and 32 blocks per SM. The limit in parentheses is the "
        "resource that caps the blocks."),
        "", *resource_lines(rows), "",
        _prose("**FLOP per byte of the GEMM tiles.** Per slice a block loads (BM + BN) x BK operand "
        "elements from global memory and does 2 BM BN BK FLOP: 2 BM BN / ((BM + BN) x element "
        "size) FLOP/B. Balance is the GPU's peak over its HBM bandwidth (datasheets, dense: A100 "
        "SXM4 80GB 19.5 TFLOP/s fp32, 9.7 fp64, 156 TF32, 2.039 TB/s; H100 SXM5 67, 34, 495, "
        "3.35 TB/s; H200 SXM the same compute, 4.8 TB/s). Below the balance, a tile whose loads all "
        "came from DRAM would wait on memory; the gathers of neighbouring patches and of other "
        "blocks' operands hit L1 and L2, so this is the pessimistic bound."),
        "", *gemm_lines(), "",
        _prose("**FLOP per byte of the other kernels** (per element; FLOP as the kernel text writes them, "
        "an fma 2, a library exp/tanh/erf 1; bytes read and written, per-channel values not "
        "counted). All are far below every GPU's balance (at least "
        f"{min(_balances('fp64').values()):.1f} FLOP/B, A100 fp64): memory-bound, so their time is "
        "their bytes over the bandwidth, and launch overhead for small tensors."),
        "", *streaming_lines(), "",
        _prose("**Issue 14's model, redone from the numbers above** (an estimate from static counts, "
               "unmeasured). " + model_text),
        "", *model_table, "",
        _prose("The ceiling assumes every issue slot is either a multiply-add or part of a gather "
        "(`launch.GATHER_COST` multiply-add slots per gathered element, read off the SASS); it ignores "
        "the epilogue, shared-memory loads and the barrier per slice, so real kernels run below it. "
        "On the TF32 path the gathers, not the tensor cores, set the ceiling."),
        END,
    ])


def replace_block(text, new_block):
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"kernel_resources: {DOC} must hold {BEGIN} and {END} once each")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + new_block + text[end:]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kernel_resources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the block in {DOC.relative_to(ROOT)}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the block is out of date")
    args = parser.parse_args(argv)
    try:
        new_block = block(builds(), compiler())
    except (nvrtc.NvrtcUnavailable, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    if not (args.write or args.check):
        print(new_block)
        return 0
    text = DOC.read_text()
    updated = replace_block(text, new_block)
    if args.write:
        DOC.write_text(updated)
    elif updated != text:
        print(f"{DOC.relative_to(ROOT)} is out of date: run {REFRESH}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
