"""The resource tables of docs/kernels.md, generated from nvcc's own report: registers, shared
memory and theoretical occupancy of every kernel instance the CUDA backend instantiates, for
sm_80 and sm_90, with each kernel family's FLOP per byte against A100, H100 and H200.

    python scripts/kernel_resources.py            # print the generated block
    python scripts/kernel_resources.py --write    # rewrite it in docs/kernels.md
    python scripts/kernel_resources.py --check    # exit 1 if docs/kernels.md is out of date

Needs nvcc on PATH. tests/test_cuda_kernels.py compiles through `compile_all` once for both its
nvcc tests (the build must not spill, and this block must match docs/kernels.md).
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import gpucnn.backends.cuda as cuda_ops
from gpucnn.backends.cuda import launch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "kernels.md"
BEGIN, END = "<!-- kernel-resources:begin -->", "<!-- kernel-resources:end -->"
REFRESH = "python scripts/kernel_resources.py --write"

# Per-SM limits of the two architectures we compile for. Threads, blocks, registers: the CUDA
# Programming Guide's table of technical specifications per compute capability; shared memory:
# its "Shared Memory" sections for 8.x (up to 164 KB on 8.0) and 9.0 (up to 228 KB), which also
# say that 1 KB per block is reserved for system use.
ARCHS = {
    "sm_80": dict(registers=65536, shared=164 * 1024, threads=2048, blocks=32),  # A100
    "sm_90": dict(registers=65536, shared=228 * 1024, threads=2048, blocks=32),  # H100, H200
}
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
    "A100": dict(arch="sm_80", sms=108, fp32=19.5e12, fp64=9.7e12, tf32=156e12, bandwidth=2.039e12),
    "H100": dict(arch="sm_90", sms=132, fp32=67e12, fp64=34e12, tf32=495e12, bandwidth=3.35e12),
    "H200": dict(arch="sm_90", sms=132, fp32=67e12, fp64=34e12, tf32=495e12, bandwidth=4.8e12),
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


@dataclass
class Build:
    filename: str
    arch: str
    returncode: int
    output: str  # nvcc's stdout and stderr: ptxas's --resource-usage lines, or the errors
    ptx: str     # the PTX nvcc kept: each entry's .maxntid (its __launch_bounds__)


@dataclass
class Resources:
    registers: int
    shared: int
    stack: int
    spills: int
    barriers: int
    threads: int


def nvcc_version(nvcc="nvcc"):
    """'release 13.0, V13.0.88' from `nvcc --version`."""
    output = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    return re.search(r"release [^\n]*", output).group(0)


def compile_all(folder, nvcc="nvcc", archs=tuple(ARCHS)):
    """Compile every kernel file with every name expression instantiated, with the backend's
    options, for each arch, all at once (one nvcc per file and arch: conv2d.cu's many instances
    take a while); spills are errors. Returns the Builds in file-then-arch order."""
    folder = Path(folder)
    jobs = []
    for filename in cuda_ops.KERNEL_FILES:
        unit = folder / filename
        instances = ", ".join(f"(void*)&{name}" for name in cuda_ops.name_expressions(filename))
        unit.write_text(cuda_ops.kernel_source(filename) + f"\nvoid* instances[] = {{{instances}}};\n")
        for arch in archs:
            keep = folder / f"{unit.stem}.{arch}"
            keep.mkdir()
            command = [nvcc, *cuda_ops.KERNEL_OPTIONS, f"-arch={arch}", "--resource-usage", "-Xptxas",
                       "-warn-spills,-Werror", "-keep", "-keep-dir", str(keep), "-c", str(unit),
                       "-o", str(keep / f"{unit.stem}.o")]
            jobs.append((filename, arch, keep, subprocess.Popen(command, stdout=subprocess.PIPE,
                                                                stderr=subprocess.STDOUT, text=True)))
    builds = []
    for filename, arch, keep, job in jobs:
        output = job.communicate()[0]
        ptx = "".join(p.read_text() for p in keep.glob("*.ptx"))
        shutil.rmtree(keep)  # nvcc's intermediates: tens of MB per build
        builds.append(Build(filename, arch, job.returncode, output, ptx))
    return builds


def mangled(expression):
    """The start of the Itanium-mangled name of a void kernel instance, up to its parameter
    types: 'relu_forward<float>' -> '_Z12relu_forwardIfEv' (of '_Z12relu_forwardIfEvPKT_PS0_x').
    Our kernels take only float, double and int template arguments."""
    name, arguments = re.fullmatch(r"(\w+)<(.*)>", expression).groups()
    codes = []
    for argument in (a.strip() for a in arguments.split(",")):
        if argument in ("float", "double"):
            codes.append(argument[0])
        elif re.fullmatch(r"-?\d+", argument):
            codes.append(f"Li{argument.replace('-', 'n')}E")
        else:
            raise ValueError(f"kernel_resources: cannot mangle template argument {argument!r} of {expression}")
    return f"_Z{len(name)}{name}I{''.join(codes)}Ev"


def _number(pattern, text, default=None):
    found = re.search(pattern, text)
    if found is None and default is None:
        raise ValueError(f"kernel_resources: no {pattern!r} in nvcc's report:\n{text}")
    return int(found.group(1)) if found else default


def resources(build):
    """{mangled entry name: Resources} from one build's ptxas report and kept PTX."""
    threads = {name: int(n) for name, n in re.findall(r"\.entry (\w+)\([^{]*?\.maxntid (\d+)", build.ptx, re.S)}
    found = {}
    chunks = re.split(r"Compiling entry function '(\w+)' for '\w+'", build.output)
    for name, report in zip(chunks[1::2], chunks[2::2]):
        found[name] = Resources(
            registers=_number(r"Used (\d+) registers", report),
            shared=_number(r"(\d+) bytes smem", report, 0),
            stack=_number(r"(\d+) bytes stack frame", report),
            spills=_number(r"(\d+) bytes spill stores", report) + _number(r"(\d+) bytes spill loads", report),
            barriers=_number(r"used (\d+) barriers", report, 0),
            threads=threads[name],
        )
    return found


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
    """{name expression: {arch: Resources}} for every instance, or a ValueError naming what nvcc
    did not report."""
    by_arch = {}
    for build in builds:
        if build.returncode != 0:
            raise ValueError(f"kernel_resources: nvcc failed on {build.filename} ({build.arch}):\n{build.output}")
        by_arch.setdefault(build.arch, {}).update(resources(build))
    rows = {}
    for filename in cuda_ops.KERNEL_FILES:
        for expression in cuda_ops.name_expressions(filename):
            prefix = mangled(expression)
            rows[expression] = {}
            for arch, entries in by_arch.items():
                found = [r for name, r in entries.items() if name.startswith(prefix)]
                if len(found) != 1:
                    raise ValueError(f"kernel_resources: nvcc reported {len(found)} entries {prefix}... "
                                     f"for {expression} ({arch}), not 1")
                rows[expression][arch] = found[0]
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
        f" {a} registers | {a} blocks/SM (limit) | {a} occupancy |" for a in archs)
    lines = [head, "|---" * (3 + 3 * len(archs)) + "|"]
    for expression, per_arch in rows.items():
        first = per_arch[archs[0]]
        shared = {r.shared for r in per_arch.values()}
        cells = [f"`{expression}`", str(first.threads), " / ".join(f"{s} B" for s in sorted(shared))]
        for arch in archs:
            blocks, limiter, occ = occupancy(arch, per_arch[arch])
            cells += [str(per_arch[arch].registers), f"{blocks} ({limiter})", _percent(occ)]
        lines.append("| " + " | ".join(cells) + " |")
    frames = sorted({f"`{e}` ({a}: {r.stack} B stack, {r.spills} B spilled)" for e, p in rows.items()
                     for a, r in p.items() if r.stack or r.spills})
    lines += ["", "Stack frames and spills: " + ("; ".join(frames) if frames else "none, in any instance.")]
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
    rows = table(builds)
    model_text, model_table = model_lines(rows)
    return "\n".join([
        BEGIN,
        f"<!-- Generated by `{REFRESH}` from nvcc {version}; do not edit by hand. -->",
        "",
        _prose(f"**Resources per instance** (nvcc {version}, `--resource-usage`, the backend's "
        f"`KERNEL_OPTIONS`; threads per block: the kernel's `__launch_bounds__`, which its launches "
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
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        parser.error("nvcc is not on PATH")
    with tempfile.TemporaryDirectory() as folder:
        new_block = block(compile_all(folder, nvcc), nvcc_version(nvcc))
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
