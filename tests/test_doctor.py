"""`python -m gpucnn.doctor`: the README's first GPU command passes every family on the
emulator, in its checking mode too; a family computing wrong numbers, or failing as an old
driver fails, makes it exit 1 with the cause in one line and the fix; and the families it runs
(gpucnn.backends.families) call every op of the backends' contract."""
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpucnn.backends.cuda as cuda_ops
from gpucnn import doctor
from gpucnn.backends import cpu, families

from conftest import gpu_present

ROOT = Path(__file__).resolve().parents[1]


def readme_gpu_command():
    """The first command of the README's GPU section."""
    section = re.search(r"\n## On a GPU\n(.*?)\n## ", (ROOT / "README.md").read_text(), re.S).group(1)
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return shlex.split(block.splitlines()[0].split("#")[0])


def table(output):
    """{family: result} from the doctor's table."""
    return dict(re.findall(r"^(\S.*?)\s{2,}(passed|FAILED|skipped)\b", output, re.M))


def doctor_process(*args):
    """`python -m gpucnn.doctor *args` on the emulator, as a user runs it: (exit status, output)."""
    env = {**os.environ, "GPUCNN_CUDA_EMULATOR": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "gpucnn.doctor", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    return done.returncode, done.stdout + done.stderr


def assert_every_family_passed(status, out):
    assert status == 0, out
    assert out.startswith("gpucnn doctor: the kernels run on the CPU emulator"), out
    assert table(out) == {family.name: "passed" for family in families.FAMILIES}
    n = len(families.FAMILIES)
    assert out.endswith(f"\n{n} of {n} kernel families passed on the CPU emulator\n"), out


def test_readme_command_passes_every_family_on_the_emulator():
    assert readme_gpu_command() == ["python", "-m", "gpucnn.doctor"]
    assert_every_family_passed(*doctor_process())


def test_checking_mode_passes_every_family():
    status, out = doctor_process("--sanitize")
    assert "\n  in the emulator's checking mode (GPUCNN_EMULATOR_SANITIZE=1)\n" in out
    assert_every_family_passed(status, out)


@pytest.fixture
def only_relu(monkeypatch, capsys):
    """The doctor on the emulator, running the relu family alone; returns (exit status, output)."""
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    monkeypatch.setattr(families, "FAMILIES", tuple(f for f in families.FAMILIES if f.name == "relu"))

    def run():
        status = doctor.main([])
        return status, capsys.readouterr().out
    return run


def test_wrong_numbers_fail_their_family_with_a_one_line_cause(only_relu, monkeypatch):
    right = cuda_ops.relu_forward
    monkeypatch.setattr(cuda_ops, "relu_forward", lambda x: right(x) * 2)
    status, out = only_relu()
    assert status == 1
    assert table(out) == {"relu": "FAILED"}
    cause = re.search(r"^    (relu_forward \(float32\): .*)$", out, re.M).group(1)
    assert "values differ from NumPy's exactly" in cause and "worst at" in cause
    assert "    fix: a kernel computes wrong numbers on this device" in out
    assert "0 of 1 kernel families passed on the CPU emulator, 1 FAILED" in out


def test_an_old_driver_is_named_with_its_fix(only_relu, monkeypatch):
    def old_driver(dy, y):
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime "
                           "version\n(second line of a long message)")
    monkeypatch.setattr(cuda_ops, "relu_backward", old_driver)
    status, out = only_relu()
    assert status == 1
    assert "    relu_backward (float32): RuntimeError: cudaErrorInsufficientDriver: CUDA driver version is " \
           "insufficient for CUDA runtime version\n" in out
    assert "second line" not in out
    assert f"    fix: {doctor.DRIVER_FIX}\n" in out


def test_passing_family_reports_its_times(only_relu):
    status, out = only_relu()
    assert status == 0
    assert re.search(r"^relu\s+passed\s+\d+\.\d\ds\s+\d+\.\d{3}s$", out, re.M), out


@pytest.mark.skipif(gpu_present(), reason="checks the refusal where there is no GPU")
def test_device_cuda_without_a_gpu_exits_1_saying_why(monkeypatch, capsys):
    monkeypatch.delenv("GPUCNN_CUDA_EMULATOR", raising=False)
    assert doctor.main(["--device", "cuda"]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("gpucnn doctor: no GPU: device 'cuda' is not available")


def test_nccl_version_reads_as_nccl_prints_it():
    assert doctor.nccl_version(22703) == "2.27.3" and doctor.nccl_version(2804) == "2.8.4"


def test_every_family_compares_to_numpy_on_the_cpu():
    """Each call's NumPy reference passes its own comparison, so a case NumPy refuses fails
    here rather than in a user's doctor; and the TF32 tolerance is tight enough that strict
    float32 products, with operands not rounded to TF32, fail it."""
    for family in families.FAMILIES:
        for call in family.calls():
            got = families.outputs(call.run(cpu, *(a.copy() for a in call.inputs)))
            want = families.outputs(call.run(cpu, *(a.copy() for a in (call.reference or call.inputs))))
            problems = [families.mismatch(g, np.asarray(w).astype(g.dtype), call.tolerance) for g, w in zip(got, want)]
            if call.reference is None:
                assert problems == [None] * len(got), (family.name, call.name)
            else:
                assert all(problems), (family.name, call.name)


def test_the_families_call_every_op_of_the_contract():
    """Every op that both backends define is in some family, so the doctor and
    test_gpu_bits.py reach a new kernel family once its calls are added."""
    contract = {name for name, f in inspect.getmembers(cuda_ops, inspect.isfunction)
                if not name.startswith("_") and inspect.isfunction(getattr(cpu, name, None))}
    assert contract == {call.op for family in families.FAMILIES for call in family.calls()}
