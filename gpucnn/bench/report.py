"""The benchmark's report: the machine it ran on, the tables on stdout, the JSON file."""
import json
import math
import os
import platform
import sys

import numpy as np
from threadpoolctl import threadpool_info

from .. import __version__
from .cases import FORWARD_BACKWARD

# Dense peak rates of the GPUs we run on (NVIDIA data sheets): fp32 and TF32 FLOP/s, bytes/s.
GPU_PEAKS = {
    "H100 PCIe": {"fp32": 51e12, "tf32": 378e12, "bandwidth": 2.0e12},
    "H100": {"fp32": 67e12, "tf32": 495e12, "bandwidth": 3.35e12},  # SXM
    "H200": {"fp32": 67e12, "tf32": 495e12, "bandwidth": 4.8e12},
}


def gpu_peaks(device_name):
    for key, peaks in GPU_PEAKS.items():
        if key in device_name:
            return peaks
    return None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info():
    """The BLAS libraries NumPy (and PyTorch) loaded, as threadpoolctl sees them."""
    return [{k: lib.get(k) for k in ("internal_api", "version", "num_threads", "filepath")} for lib in threadpool_info()]


def machine(device, device_name, threads, torch_version, cupy_version):
    return {
        "device": device,
        "device_name": device_name,
        "threads": threads,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "gpucnn": __version__,
        "torch": torch_version,
        "cupy": cupy_version,
        "platform": platform.platform(),
        "blas": blas_info(),
    }


def load_average():
    """The OS's 1-minute load average: other work on the machine skews CPU timings."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def layer_table(results, rivals, peaks, precision=None):
    """Markdown table of the layer timings: ms per rival, ratio gpucnn/rival, FLOP/s, GB/s;
    on a GPU also the share of its peak, TF32's under precision "high", else fp32's."""
    peak = "tf32" if precision == "high" else "fp32"
    unit, scale = ("TFLOP/s", 1e12) if peaks else ("GFLOP/s", 1e9)
    header = ["layer", "shape", "op", "gpucnn ms"]
    for r in rivals:
        header += [f"{r} ms", f"gpucnn/{r}"]
    header += [f"gpucnn {unit}", "gpucnn GB/s"]
    if peaks:
        header += [f"% {peak} peak", "% bandwidth"]
    rows = []
    for res in results:
        row = [res["case"], res["shape"], res["op"], _fmt(res["ms"]["gpucnn"], ".3f")]
        for r in rivals:
            row += [_fmt(res["ms"].get(r), ".3f"), _fmt(res["ratio"].get(r), ".2f")]
        flops = res["flop_per_s"] / scale if res["flop_per_s"] else None
        row += [_fmt(flops, ".2f"), _fmt(res["bytes_per_s"] / 1e9, ".1f")]
        if peaks:
            row += [_fmt(100 * res["flop_per_s"] / peaks[peak] if res["flop_per_s"] else None, ".1f"),
                    _fmt(100 * res["bytes_per_s"] / peaks["bandwidth"], ".1f")]
        rows.append(row)
    return _table(header, rows)


def train_table(results, rivals):
    header = ["network", "input", "gpucnn ms/step", "gpucnn img/s"]
    for r in rivals:
        header += [f"{r} ms/step", f"{r} img/s", f"gpucnn/{r}"]
    header += ["loss gpucnn", "loss " + rivals[0]] if rivals else ["loss gpucnn"]
    rows = []
    for res in results:
        row = [res["case"], res["shape"], _fmt(res["ms"]["gpucnn"], ".2f"), _fmt(res["images_per_s"]["gpucnn"], ".0f")]
        for r in rivals:
            row += [_fmt(res["ms"].get(r), ".2f"), _fmt(res["images_per_s"].get(r), ".0f"), _fmt(res["ratio"].get(r), ".2f")]
        row += [" ".join(f"{l:.6f}" for l in res["losses"]["gpucnn"])]
        if rivals:
            row += [" ".join(f"{l:.6f}" for l in res["losses"].get(rivals[0], []))]
        rows.append(row)
    return _table(header, rows)


def geometric_mean_line(run, rival):
    """The geometric mean of gpucnn / rival over a run's layers (forward and backward added
    up) and training steps: the one number that says who is faster on these cases."""
    layers = [r["ratio"][rival] for r in run["layers"] if r["op"] == FORWARD_BACKWARD]
    steps = [r["ratio"][rival] for r in run["training"]]
    if not layers + steps:
        return ""
    mean = math.exp(sum(math.log(r) for r in layers + steps) / len(layers + steps))
    precision = f", precision {run['precision']}" if run.get("precision") else ""
    return (f"{run['threads']} thread{'s' * (run['threads'] > 1)}{precision}: geometric mean of gpucnn/{rival} over "
            f"{len(layers)} layers (forward+backward) and {len(steps)} training steps: {mean:.2f}")


def write_json(path, report):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
