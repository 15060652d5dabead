"""The devices every layer-level test runs on: one suite, parametrized by backend.

`device` is "cpu", then "cuda" on the CPU kernel emulator (GPUCNN_CUDA_EMULATOR=1), then
"cuda" on a real GPU through CuPy; `cuda_device` is the last two only, for tests of the
CUDA path itself. Tests marked `gpu` skip only where CuPy finds no GPU, and the run ends
with a line counting them, so a green CI run says what it did not test.
"""
import functools

import pytest

CUDA_DEVICES = ["cuda-emulator", pytest.param("cuda", marks=pytest.mark.gpu)]


@functools.cache
def gpu_present():
    try:
        import cupy
    except Exception:  # not installed, or built for another CUDA
        return False
    return cupy.cuda.is_available()


def _select(device, monkeypatch):
    """Turn the named device's implementation on; return its gpucnn name, "cpu" or "cuda"."""
    if device == "cuda-emulator":
        monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
        return "cuda"
    monkeypatch.delenv("GPUCNN_CUDA_EMULATOR", raising=False)
    return device


@pytest.fixture(params=["cpu"] + CUDA_DEVICES)
def device(request, monkeypatch):
    return _select(request.param, monkeypatch)


@pytest.fixture(params=CUDA_DEVICES)
def cuda_device(request, monkeypatch):
    return _select(request.param, monkeypatch)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") and not gpu_present():
        pytest.skip("needs CuPy and a CUDA GPU")


def pytest_terminal_summary(terminalreporter):
    def gpu_reports(outcome):  # a module skipped whole (no torch) reports no keywords
        return [r for r in terminalreporter.stats.get(outcome, []) if "gpu" in getattr(r, "keywords", {})]
    skipped = len(gpu_reports("skipped"))
    ran = sum(1 for outcome in ("passed", "failed") for r in gpu_reports(outcome) if r.when == "call")
    if skipped:
        why = "" if gpu_present() else " (no CUDA GPU); device 'cuda' was tested on the CPU emulator"
        terminalreporter.write_line(f"gpu tests: {skipped} skipped{why}")
    if ran:
        terminalreporter.write_line(f"gpu tests: {ran} ran on a CUDA GPU")
