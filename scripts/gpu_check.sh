#!/usr/bin/env bash
# Everything that needs a real GPU, in one command: the `gpu` tests (the emulator's parity
# checks again on CuPy arrays, and GPU-vs-emulator bit equality), the benchmark against
# PyTorch/cuDNN, a training run on device "cuda", and the sanitizer's bug kernels under
# NVIDIA's compute-sanitizer. Results land in $OUT (default runs/gpu-check) for the note and
# docs/benchmarks.md.
#
# Needs CuPy (gpucnn[cuda12] or gpucnn[cuda13]) and PyTorch with CUDA. On a machine with no
# network, first fill a wheel folder where there is one, and bring it along:
#   pip download -d .wheels safetensors tqdm threadpoolctl pytest hypothesis matplotlib pillow scikit-learn mpi4py mpich
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"

if [ -d .wheels ]; then
  python -m pip install --quiet --no-index --find-links .wheels -e ".[test]"
else
  python -m pip install --quiet -e ".[test]"
fi

python - <<'EOF' | tee "$OUT/device.txt"
import cupy, torch
props = cupy.cuda.runtime.getDeviceProperties(0)
print(props["name"].decode(), "| CuPy", cupy.__version__, "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
      "| PyTorch", torch.__version__, "| cuDNN", torch.backends.cudnn.version())
EOF
python -m pytest -q -ra -m gpu 2>&1 | tee "$OUT/gpu-tests.txt"
python -m gpucnn.bench --device cuda --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
python -m gpucnn.train --device cuda --out "$OUT/train" 2>&1 | tee "$OUT/train.txt"
# Data parallel through NCCL: one rank per GPU, on every GPU of this machine, started by
# the MPICH wheel's mpiexec (the `mpi` extra), not whatever MPI the system has.
MPIEXEC=$(python -c 'from gpucnn.distributed.launch import mpiexec; print(mpiexec())')
"$MPIEXEC" -n "$(python -c 'import cupy; print(cupy.cuda.runtime.getDeviceCount())')" \
  python -m gpucnn.train --distributed --device cuda --epochs 5 --out "$OUT/train-nccl" 2>&1 | tee "$OUT/train-nccl.txt"
# The sanitizer's bug kernels under NVIDIA's compute-sanitizer, beside the emulator's reports.
python scripts/sanitizer_bugs.py --out "$OUT/sanitizer.md" 2>&1 | tee "$OUT/sanitizer.txt" \
  || echo "compute-sanitizer comparison did not run" | tee -a "$OUT/sanitizer.txt"
