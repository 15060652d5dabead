"""Where arrays live: NumPy on "cpu", CuPy (or the CPU kernel emulator) on "cuda".

No other module imports CuPy. Layers ask this module which array library an array
belongs to (`get_array_module`), which device it is on (`device_of`) and how to move it
(`to_device`).

With GPUCNN_CUDA_EMULATOR=1, device "cuda" needs no GPU: its arrays are
`EmulatedDeviceArray`s, NumPy memory behaving as CuPy's arrays, and every op on them runs
the real `.cu` kernels, compiled for the CPU by `gpucnn.emulator`. That is how the CUDA path is tested on CI,
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


_COMPARISONS = frozenset({"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"})
IMPLICIT_CONVERSION = ("Implicit conversion to a NumPy array is not allowed. "
                       "Please use `.get()` to construct a NumPy array explicitly.")  # CuPy's words


class EmulatedDeviceArray(np.lib.mixins.NDArrayOperatorsMixin):
    """An array in the emulated device's memory: a NumPy array that only this module, the
    kernel launches and the emulator read as such, and that everyone else sees as CuPy's
    ndarray, refusals included, so that code which would fail on a GPU fails here first.

    Not an ndarray subclass: np.asarray and np.array take a subclass's memory without asking
    it, so a subclass could not refuse them. Instead, as cupy.ndarray does:
    - NumPy's functions and ufuncs reach the array through __array_function__ and
      __array_ufunc__, which run them on the memory and return device arrays; a NumPy array
      mixed in is refused with CuPy's TypeError ("Unsupported type ...").
    - Conversion to NumPy is refused: __array__ raises CuPy's TypeError, so np.asarray,
      np.array, np.asanyarray and np.testing.* fail. It has no __index__.
    - float, int, bool, complex, item(), tolist(), len, printing and iteration (rows as
      device arrays) behave as NumPy's do on the data, as CuPy's do after a copy to the host.
    - Reductions and scalar indexing give 0-d device arrays, not NumPy scalars.
    - Attributes and methods are the memory's, their array results on the device; `get()`
      copies to the host. An attribute that CuPy's ndarray lacks is no error here:
      tests/test_emulated_array.py checks every name the CUDA path uses against CuPy's.
    `get_array_module` gives, for these arrays, `emulated_cupy`: NumPy's namespace with
    results on the device. `as_numpy` and `memory` are the explicit ways out.
    """

    __slots__ = ("_memory", "__weakref__")

    def __init__(self, memory):
        self._memory = memory

    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if ufunc.__name__ in _COMPARISONS:  # as CuPy, which compares with a NumPy 0-d array's value
            inputs = tuple(x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x for x in inputs)
        kwargs = _host(kwargs)
        if out is not None:
            kwargs["out"] = _host(out)
        result = getattr(ufunc, method)(*_host(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _device(result)

    def __array_function__(self, func, types, args, kwargs):
        if not all(issubclass(t, (EmulatedDeviceArray, np.ndarray)) for t in types):
            return NotImplemented
        return _device(func(*_host(args), **_host(kwargs)))

    def __getattr__(self, name):
        if name.startswith("_"):  # NumPy looks for __array_interface__ and the like: none here
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        attribute = getattr(self._memory, name)
        if callable(attribute):
            return lambda *args, **kwargs: _device(attribute(*_host(args), **_host(kwargs)))
        return _device(attribute)

    def get(self):
        """A copy in host memory, as cupy.ndarray.get()."""
        return self._memory.copy()

    def __getitem__(self, key):
        return _device(self._memory[_host(key, copies_host_arrays=True)])

    def __setitem__(self, key, value):
        # As CuPy: through an index array any data is copied in; through plain indices only a
        # device array or a scalar (which fills), as cupy.ndarray.fill takes.
        indices = key if type(key) is tuple else (key,)
        advanced = any(isinstance(k, (list, np.ndarray, EmulatedDeviceArray)) for k in indices)
        if not (advanced or isinstance(value, EmulatedDeviceArray) or np.ndim(value) == 0):
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")  # CuPy's words
        self._memory[_host(key, copies_host_arrays=True)] = _host(value, copies_host_arrays=True)

    def __len__(self):
        return len(self._memory)

    def __iter__(self):
        if self._memory.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        return bool(self._memory)

    def __int__(self):
        return int(self._memory)

    def __float__(self):
        return float(self._memory)

    def __complex__(self):
        return complex(self._memory)

    def __repr__(self):
        return repr(self._memory)

    def __str__(self):
        return str(self._memory)

    def __format__(self, format_spec):
        return format(self._memory, format_spec)

    def __copy__(self):
        return EmulatedDeviceArray(self._memory.copy())

    def __deepcopy__(self, memo):
        return self.__copy__()


def _host(value, copies_host_arrays=False):
    """value with every device array in it replaced by its memory, for NumPy. A NumPy array is
    refused as CuPy refuses one, unless CuPy would copy it to the device (an index, or the
    data of cupy.asarray)."""
    if isinstance(value, EmulatedDeviceArray):
        return value._memory
    if isinstance(value, np.ndarray) and not copies_host_arrays:
        raise TypeError(f"Unsupported type {type(value)}")
    if type(value) in (tuple, list):
        return type(value)(_host(v, copies_host_arrays) for v in value)
    if type(value) is dict:
        return {k: _host(v, copies_host_arrays) for k, v in value.items()}
    return value


def _device(value):
    """NumPy's result as CuPy's: arrays, and NumPy scalars as 0-d arrays, on the device."""
    if isinstance(value, np.ndarray):
        return EmulatedDeviceArray(value)
    if isinstance(value, np.generic):
        return EmulatedDeviceArray(np.asarray(value))
    if type(value) in (tuple, list):
        return type(value)(_device(v) for v in value)
    return value


class _EmulatedCuPy:
    """What `get_array_module` gives for the emulator's arrays, in CuPy's place: NumPy's
    namespace, its functions taking and giving device arrays. Only those that CuPy also uses
    to copy host data to the device (asarray and its kin) accept NumPy arrays. Its `ndarray`
    is EmulatedDeviceArray; other types, ufuncs (which reach device arrays by __array_ufunc__),
    constants and submodules are NumPy's own."""

    ndarray = EmulatedDeviceArray
    _TRANSFERS = frozenset({"array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray"})

    def __getattr__(self, name):
        attribute = getattr(np, name)
        if isinstance(attribute, (type, np.ufunc)) or not callable(attribute):
            return attribute
        copies = name in self._TRANSFERS
        return lambda *args, **kwargs: _device(attribute(*_host(args, copies), **_host(kwargs, copies)))


emulated_cupy = _EmulatedCuPy()


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
    """cupy, numpy, or for the emulator's arrays its stand-in for cupy, `emulated_cupy`."""
    if any(isinstance(a, EmulatedDeviceArray) for a in arrays):
        return emulated_cupy
    cp = cupy_if_loaded()
    if cp is not None and any(isinstance(a, cp.ndarray) for a in arrays):
        return cp
    return np


class DeviceSetupError(RuntimeError):
    """Device "cuda" cannot run here for a reason fixed outside gpucnn (no CuPy, an NVIDIA
    driver older than CuPy's CUDA, a kernel module NVRTC refuses). The message is one line
    that says what to do; the command-line tools print it as it is."""


# cudaErrorInsufficientDriver (CUDA's driver_types.h): also what the runtime returns with no
# driver at all, which driverGetVersion() then reports as 0.
_INSUFFICIENT_DRIVER = 35
_NO_DEVICE = 100  # cudaErrorNoDevice
_EMULATOR_HINT = "set GPUCNN_CUDA_EMULATOR=1 to run the CUDA kernels on the CPU emulator"


def _cuda_version(version):
    return f"{version // 1000}.{version % 1000 // 10}"


def _why_no_gpu():
    """None when CuPy can run kernels on a GPU here, else the reason and its fix, in words.
    An older driver of the same CUDA major version is fine (CUDA's minor version
    compatibility: CuPy compiles to cubin for the GPU, which such a driver loads); an older
    major version is not, and the runtime refuses it."""
    cp = _import_cupy()
    if cp is None:
        return f"CuPy failed to import: {_cupy_error}; {INSTALL_HINT}"
    runtime = cp.cuda.runtime
    try:
        count = runtime.getDeviceCount()
        driver, cupy_cuda = runtime.driverGetVersion(), runtime.runtimeGetVersion()
    except Exception as e:  # CUDARuntimeError, or whatever a broken install raises: never past default_device
        status = getattr(e, "status", None)
        if status == _NO_DEVICE:
            return f"CuPy found no GPU; {_EMULATOR_HINT}"
        if status != _INSUFFICIENT_DRIVER:
            return f"CuPy could not query the GPUs: {e}"
        count, driver, cupy_cuda = 0, runtime.driverGetVersion(), runtime.runtimeGetVersion()
    if driver == 0:
        return f"CuPy found no NVIDIA driver; {_EMULATOR_HINT}"
    if driver // 1000 < cupy_cuda // 1000:
        return (f"the NVIDIA driver supports CUDA {_cuda_version(driver)}, older than the CUDA "
                f"{_cuda_version(cupy_cuda)} that CuPy is built for: upgrade the NVIDIA driver, or install the "
                f"cupy wheel for your CUDA (cupy-cuda{driver // 1000}x)")
    return None if count > 0 else f"CuPy found no GPU; {_EMULATOR_HINT}"


def gpu_available():
    """True when device "cuda" can run: the emulator is on, or CuPy sees a GPU it can use."""
    return emulator_enabled() or _why_no_gpu() is None


def default_device():
    return "cuda" if gpu_available() else "cpu"


def check_device(device):
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', but got {device!r}")
    if device == "cuda" and not emulator_enabled():
        reason = _why_no_gpu()
        if reason is not None:
            raise DeviceSetupError(f"device 'cuda' is not available: {reason}")
    return device


def memory(x):
    """The NumPy array that is an emulated device array's memory, not a copy: what the
    emulator's kernels read and write."""
    return x._memory


def as_numpy(x):
    """A plain NumPy array with the data of x, wherever x lives (the emulator's memory itself)."""
    if isinstance(x, EmulatedDeviceArray):
        return memory(x)
    cp = cupy_if_loaded()
    if cp is not None and isinstance(x, cp.ndarray):
        return cp.asnumpy(x)
    return np.asarray(x)


def zero_d(value, like):
    """value, the result of a full reduction of `like` (a 0-d array, or NumPy's scalar), as a
    0-d array on like's device: where a loss lives until someone asks for its number."""
    return get_array_module(like).asarray(value)


def scalars(arrays):
    """The values of 0-d arrays of one device and dtype as one NumPy array, in a single
    transfer: the one synchronization with the device where a loop reports on its steps."""
    if not arrays:
        return np.zeros(0)
    return as_numpy(get_array_module(*arrays).stack(arrays))


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
        return EmulatedDeviceArray(np.array(host, order="C"))
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
