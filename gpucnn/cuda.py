"""Where arrays live: NumPy on "cpu", CuPy (or the CPU kernel emulator) on "cuda".

No other module imports CuPy. Layers ask this module which array library an array
belongs to (`get_array_module`), which device it is on (`device_of`) and how to move it
(`to_device`).

With GPUCNN_CUDA_EMULATOR=1, device "cuda" needs no GPU: its arrays are NumPy arrays of
the subclass `EmulatedDeviceArray`, and every op on them runs the real `.cu` kernels,
compiled for the CPU by `gpucnn.emulator`. That is how the CUDA path is tested on CI,
and how a kernel is debugged without a GPU.
"""
import os
import sys

import numpy as np

_cupy = None
_cupy_error = None

# gpucnn is not on PyPI: its extras install from a clone. README.md, "On a GPU", says the same.
INSTALL_HINT = (
    'install CuPy for your CUDA toolkit: pip install -e ".[cuda12]" (or ".[cuda13]") in a clone '
    "of gpucnn, or pip install cupy-cuda12x (or cupy-cuda13x); or set GPUCNN_CUDA_EMULATOR=1 "
    "to run the CUDA kernels on the CPU emulator"
)


class EmulatedDeviceArray(np.ndarray):
    """A NumPy array standing for device memory when the CUDA emulator is on."""

    def __array_finalize__(self, obj):
        pass


def emulator_enabled():
    return os.environ.get("GPUCNN_CUDA_EMULATOR", "") not in ("", "0")


def _import_cupy():
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            _cupy = cupy
        except Exception as e:  # ImportError, or a CuPy built for another CUDA
            _cupy_error = e
    return _cupy


def cupy_if_loaded():
    """CuPy when it has been imported already, else None: checking an array's type must not import it."""
    return _cupy if _cupy is not None else sys.modules.get("cupy")


def is_cuda_array(x):
    cp = cupy_if_loaded()
    return isinstance(x, EmulatedDeviceArray) or (cp is not None and isinstance(x, cp.ndarray))


def device_of(x):
    return "cuda" if is_cuda_array(x) else "cpu"


def get_array_module(*arrays):
    """numpy or cupy, whichever the arrays belong to (the emulator's arrays are NumPy's)."""
    cp = cupy_if_loaded()
    if cp is not None and any(isinstance(a, cp.ndarray) for a in arrays):
        return cp
    return np


def gpu_available():
    """True when device "cuda" can run: the emulator is on, or CuPy sees a GPU."""
    if emulator_enabled():
        return True
    cp = _import_cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def default_device():
    return "cuda" if gpu_available() else "cpu"


def check_device(device):
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', but got {device!r}")
    if device == "cuda" and not gpu_available():
        reason = f" (CuPy failed to import: {_cupy_error})" if _cupy_error else " (CuPy found no GPU)"
        raise RuntimeError(f"device 'cuda' is not available{reason}: {INSTALL_HINT}")
    return device


def as_numpy(x):
    """A plain NumPy array with the data of x, wherever x lives."""
    if isinstance(x, EmulatedDeviceArray):
        return x.view(np.ndarray)
    cp = cupy_if_loaded()
    if cp is not None and isinstance(x, cp.ndarray):
        return cp.asnumpy(x)
    return np.asarray(x)


def zero_d(value, like):
    """value, the result of a full reduction of `like` (a 0-d array, or NumPy's scalar), as a
    0-d array on like's device: where a loss lives until someone asks for its number."""
    if isinstance(like, EmulatedDeviceArray):
        return np.asarray(value).view(EmulatedDeviceArray)
    return get_array_module(like).asarray(value)


def scalars(arrays):
    """The values of 0-d arrays of one device and dtype as one NumPy array, in a single
    transfer: the one synchronization with the device where a loop reports on its steps."""
    if not arrays:
        return np.zeros(0)
    stacked = get_array_module(*arrays).stack(arrays)
    if isinstance(arrays[0], EmulatedDeviceArray):  # NumPy's stack drops the subclass: still device memory
        stacked = stacked.view(EmulatedDeviceArray)
    return as_numpy(stacked)


def to_device(x, device):
    """x as an array on `device` ("cpu" or "cuda"); no copy when it is there already."""
    check_device(device)
    if device_of(x) == device:
        return x
    host = as_numpy(x)
    # Moving copies, as between host and GPU memory (cupy.asnumpy, cupy.asarray): the
    # emulator's device arrays are NumPy memory too, but must not share it with the host.
    if device == "cpu":
        return host.copy() if isinstance(x, EmulatedDeviceArray) else host
    if emulator_enabled():
        return np.array(host, order="C").view(EmulatedDeviceArray)
    return _import_cupy().asarray(host)


def check_same_device(where, **arrays):
    """Raise a clear error when arrays passed to one call live on different devices."""
    devices = {name: device_of(a) for name, a in arrays.items() if a is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(
            f"{where}: expected all arrays on one device, but got {listing}; "
            f"move them with .to(device) or gpucnn.cuda.to_device"
        )
