"""python -m gpucnn.bench.scaling: the paper model of data-parallel scaling in docs/benchmarks.md.

Ring all-reduce time against compute time per step, for LeNet-5, the VGG-style CIFAR net
and ResNet-20, on up to 8 GPUs joined by NVLink and on 2 such nodes joined by InfiniBand.
Nothing here is measured: the link numbers are published ones (sources in the docs), the
compute rates are stated assumptions, and the table says what follows from them.
"""
import numpy as np

from .. import nn
from . import cases

# Links: bytes/second per direction per GPU, and latency per ring step (seconds).
NVLINK = ("NVLink 4", 380e9, 2e-6)  # measured 380 GB/s of the nominal 450 (DESIGN-NOTES 4.6, [S46]); latency assumed
INFINIBAND = ("InfiniBand NDR", 50e9, 5e-6)  # 400 Gb/s per port, one port per GPU ([S48]); latency assumed
FP32_PEAK = 67e12  # H100/H200 SXM FP32 without tensor cores, NVIDIA's datasheet
LAUNCH = 10e-6  # seconds per kernel launched from Python through CuPy: an assumption
GPUS = (1, 2, 4, 8, 16)
GLOBAL_BATCHES = (256, 1024)
LOCAL_BATCH = 128


def measured_net(name, build, shape, utilization):
    """Parameters and forward FLOPs per image of a gpucnn net, by one forward of one image."""
    model = build(nn)
    x, flops, layers = np.zeros((1, *shape), np.float32), 0, 0
    for m in model:
        x = m(x)
        weight = getattr(m, "weight", None)
        if weight is not None:  # convolution or linear: 2 flops per multiply-add
            flops += 2 * x.size * weight.data.size // weight.data.shape[0]
            layers += 1
    params = sum(p.data.size for p in model.parameters())
    return {"name": name, "params": params, "forward_flops": flops, "weighted_layers": layers,
            "modules": len(model), "utilization": utilization}


def resnet20():
    """ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2: 3 stages of 3 basic blocks, 16/32/64
    channels, identity shortcuts with zero padding), with BatchNorm after every convolution."""
    convs = [(3, 16, 32)]  # (in channels, out channels, output side) of each 3x3 convolution
    for c_in, c, side in ((16, 16, 32), (16, 32, 16), (32, 64, 8)):
        convs += [(c_in, c, side)] + [(c, c, side)] * 5
    params = sum(ci * co * 9 + 2 * co for ci, co, _ in convs) + 64 * 10 + 10
    flops = sum(2 * ci * co * 9 * s * s for ci, co, s in convs) + 2 * 64 * 10
    modules = len(convs) * 3 + 9 + 3  # conv, BN, ReLU each; 9 additions; pool, flatten, linear
    return {"name": "ResNet-20", "params": params, "forward_flops": flops, "weighted_layers": len(convs) + 1,
            "modules": modules, "utilization": 0.10}


def nets():
    return [measured_net("LeNet-5", cases.lenet5, (1, 28, 28), 0.05),
            measured_net("VGG-style", cases.vgg_cifar, (3, 32, 32), 0.25),
            resnet20()]


def compute_seconds(net, batch):
    """One training step: 3x the forward FLOPs (forward, backward-data, backward-weight) at the
    assumed share of the FP32 peak, but never below the launches: 3 per module and 1 per tensor
    the optimizer updates."""
    flops = 3 * net["forward_flops"] * batch
    launches = 3 * net["modules"] + 2 * net["weighted_layers"]
    return max(flops / (net["utilization"] * FP32_PEAK), launches * LAUNCH)


def allreduce_seconds(net, gpus):
    """Ring all-reduce of the fp32 gradients: 2(p-1)/p * bytes / bandwidth + 2(p-1) latencies;
    over 2 nodes the slowest link, InfiniBand, sets the ring's pace."""
    if gpus == 1:
        return 0.0
    _, bandwidth, latency = NVLINK if gpus <= 8 else INFINIBAND
    size = 4 * net["params"]
    return 2 * (gpus - 1) / gpus * size / bandwidth + 2 * (gpus - 1) * latency


def _gpus(p):
    return f"{p} GPU{'s' if p > 1 else ''}"


def main():
    print(f"| net | parameters | gradient MB | train GFLOP/image | assumed share of {FP32_PEAK / 1e12:.0f} TFLOP/s | "
          f"compute ms/step, batch {LOCAL_BATCH} | all-reduce ms: " + " / ".join(f"{p}" for p in GPUS[1:]) + " GPUs |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for net in nets():
        ar = " / ".join(f"{allreduce_seconds(net, p) * 1e3:.3f}" for p in GPUS[1:])
        print(f"| {net['name']} | {net['params']:,} | {4 * net['params'] / 1e6:.2f} | {3 * net['forward_flops'] / 1e9:.4f} | "
              f"{net['utilization']:.0%} | {compute_seconds(net, LOCAL_BATCH) * 1e3:.3f} | {ar} |")
    for batch in GLOBAL_BATCHES:
        print(f"\nStrong scaling, global batch {batch} split over p GPUs, no overlap: "
              "step = compute(batch / p) + all-reduce(p); speed-up over 1 GPU (efficiency)\n")
        print("| net | " + " | ".join(map(_gpus, GPUS)) + " | most images/s at |")
        print("|---|" + "---:|" * len(GPUS) + "---|")
        for net in nets():
            steps = [compute_seconds(net, batch // p) + allreduce_seconds(net, p) for p in GPUS]
            cells = [f"{steps[0] / s:.2f} ({steps[0] / s / p:.0%})" for s, p in zip(steps, GPUS)]
            print(f"| {net['name']} | " + " | ".join(cells) + f" | {_gpus(GPUS[int(np.argmin(steps))])} |")
    print(f"\nWeak scaling, batch {LOCAL_BATCH} per GPU: share of the step spent computing, compute / (compute + all-reduce)\n")
    print("| net | " + " | ".join(f"{p} GPUs" for p in GPUS[1:]) + " |")
    print("|---|" + "---:|" * (len(GPUS) - 1))
    for net in nets():
        c = compute_seconds(net, LOCAL_BATCH)
        print(f"| {net['name']} | " + " | ".join(f"{c / (c + allreduce_seconds(net, p)):.1%}" for p in GPUS[1:]) + " |")


if __name__ == "__main__":
    main()
