#!/usr/bin/env bash
# Everything that needs a real GPU, in one command: first `python -m gpucnn.doctor` (versions,
# and every kernel family once on this GPU against NumPy), then the `gpu` tests (the
# emulator's parity checks again on CuPy arrays, and GPU-vs-emulator bit equality), the
# bit-for-bit and TF32 checks, the benchmark against PyTorch/cuDNN in both precisions, a
# training run on device "cuda", data parallel through NCCL, and the sanitizer's bug kernels
# under NVIDIA's compute-sanitizer. Results land in $OUT (default runs/gpu-check) for the note and
# docs/benchmarks.md, one file per stage.
#
# Each stage runs whatever the others did: a missing mpiexec or compute-sanitizer fails its own
# stage only. The end prints which stages passed (also in $OUT/summary.txt), and the exit status
# is 1 if any failed.
#
# Needs CuPy (gpucnn[cuda12] or gpucnn[cuda13]) and PyTorch with CUDA. gpucnn itself is
# installed without dependencies where they are already importable (a GPU machine with no
# network). Otherwise, on a machine with no network, first fill a wheel folder where there is
# one, and bring it along:
#   pip download -d .wheels safetensors tqdm threadpoolctl pytest hypothesis matplotlib pillow scikit-learn mpi4py mpich
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
# A failed editable install must not hide the checkout: run its gpucnn either way.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

results=() failures=0
# record NAME STATUS: what the command just before it returned (pipefail: any part of a pipe).
record() {
  if [ "$2" -eq 0 ]; then
    results+=("  passed  $1")
  else
    results+=("  FAILED  $1 (exit $2)")
    failures=$((failures + 1))
  fi
}

# What the tests and the bench import, besides CuPy and PyTorch (checked in the stages that use them).
if python -c 'import numpy, safetensors, threadpoolctl, tqdm, pytest, hypothesis' 2>/dev/null; then
  python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | tee "$OUT/install.txt"
elif [ -d .wheels ]; then
  python -m pip install --quiet --no-index --find-links .wheels -e ".[test]" 2>&1 | tee "$OUT/install.txt"
else
  python -m pip install --quiet -e ".[test]" 2>&1 | tee "$OUT/install.txt"
fi
record install $?

# What a GPU user runs first: versions, and every kernel family on this GPU against NumPy.
# --device cuda: a GPU that CuPy cannot use fails here, rather than passing on the emulator.
python -m gpucnn.doctor --device cuda 2>&1 | tee "$OUT/doctor.txt"
record doctor $?

python - <<'EOF' 2>&1 | tee "$OUT/device.txt"
import cupy, torch
props = cupy.cuda.runtime.getDeviceProperties(0)
print(props["name"].decode(), "| CuPy", cupy.__version__, "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
      "| PyTorch", torch.__version__, "| cuDNN", torch.backends.cudnn.version())
EOF
record device $?

python -m pytest -q -ra -m gpu 2>&1 | tee "$OUT/gpu-tests.txt"
record gpu-tests $?

# Our kernels on the GPU bit for bit against the emulator, and the TF32 path's checks.
python -m pytest -q -ra tests/test_gpu_bits.py tests/test_conv_tf32.py 2>&1 | tee "$OUT/bits-tf32.txt"
record bits-tf32 $?

# The bench on a GPU runs both precisions (strict float32 against PyTorch with TF32 off, TF32
# against PyTorch's defaults): a table each, both in bench.json.
python -m gpucnn.bench --device cuda --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
record bench $?
python -m gpucnn.train --device cuda --out "$OUT/train" 2>&1 | tee "$OUT/train.txt"
record train $?

# Data parallel through NCCL: one rank per GPU, on every GPU of this machine, started by
# the MPICH wheel's mpiexec (the `mpi` extra), not whatever MPI the system has.
if MPIEXEC=$(python -c 'from gpucnn.distributed.launch import mpiexec; print(mpiexec())' 2>"$OUT/train-nccl.txt") \
   && RANKS=$(python -c 'import cupy; print(cupy.cuda.runtime.getDeviceCount())' 2>>"$OUT/train-nccl.txt"); then
  "$MPIEXEC" -n "$RANKS" \
    python -m gpucnn.train --distributed --device cuda --epochs 5 --out "$OUT/train-nccl" 2>&1 | tee -a "$OUT/train-nccl.txt"
  record train-nccl $?
else
  cat "$OUT/train-nccl.txt"
  record train-nccl 1
fi

# The sanitizer's bug kernels under NVIDIA's compute-sanitizer, beside the emulator's reports.
python scripts/sanitizer_bugs.py --out "$OUT/sanitizer.md" 2>&1 | tee "$OUT/sanitizer.txt"
record sanitizer $?

{
  echo "gpu_check: $((${#results[@]} - failures)) of ${#results[@]} stages passed (output in $OUT)"
  printf '%s\n' "${results[@]}"
} | tee "$OUT/summary.txt"
[ "$failures" -eq 0 ]
