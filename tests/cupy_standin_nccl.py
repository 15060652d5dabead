"""A stand-in for CuPy as far as gpucnn's data-parallel GPU path touches it
(gpucnn/distributed/nccl.py): `cupy.cuda.nccl`, devices, streams and events, and arrays
in host memory. No GPU, no NCCL library; ranks may be threads of one process or processes.

`cupy.cuda.nccl` follows the signatures of CuPy's cupy_backends/cuda/libs/nccl.pyx, and
raises what Cython raises for a wrong argument (checked against the cupy-cuda12x 13.6.0
and 14.2.0 wheels, where the constructor checks its arguments before it touches a GPU):

    CuPy 13.x  get_unique_id() -> tuple of 128 ints, C chars (signed on x86-64, unsigned on aarch64)
               NcclCommunicator(int ndev, tuple commId, int rank)
               bytes -> TypeError "Argument 'commId' has incorrect type (expected tuple, got bytes)";
               another length -> AssertionError; a value no C char holds -> OverflowError
    CuPy 14.x  get_unique_id() -> bytes of 128
               NcclCommunicator(int ndev, bytes commId, int rank, NcclConfig config=None)
               tuple -> TypeError "... (expected bytes, got tuple)"; another length -> ValueError

Without NCCL, `cupy.cuda.nccl` holds only `available = False`, as CuPy's own module does
when libnccl cannot be loaded (cupy/cuda/nccl.py).

NCCL itself is modelled with files in a rendezvous folder, whose path begins the id (random
bytes follow, as NCCL's magic follows the root's address); an id that differs from the one
made is NCCL's "unhandled system error". Joining
blocks until all `ndev` ranks have joined, as ncclCommInitRank does. Two ranks on one GPU
of one host fail as NCCL does ("invalid usage": Duplicate GPU detected). The GPU a rank
joins on is the constructing thread's current device, as in CUDA. reduceScatter and
allGather are enqueued on a stream and run in stream order once every rank has posted
its part, so a rank that never comes leaves the others' events pending; they read and
write the arrays through their pointers, so a buffer freed too early shows.
"""
import atexit
import ctypes
import functools
import importlib.abc
import importlib.util
import json
import operator
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import types

import numpy as np

NCCL_UNIQUE_ID_BYTES = 128
NAMES = ("cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.cuda.nccl")
VERSIONS = {13: "13.6.0", 14: "14.2.0"}
# cupy_backends/cuda/libs/nccl.pyx: ncclFloat32, ncclFloat64, ncclSum.
NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0
DTYPES = {NCCL_FLOAT32: np.float32, NCCL_FLOAT64: np.float64}


class ndarray(np.ndarray):
    """Device memory: a NumPy array whose `.data.ptr` is its address, as CuPy's MemoryPointer."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])


def _host(ptr, nbytes):
    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))


class CUDARuntimeError(RuntimeError):
    pass


class NcclError(RuntimeError):
    """As CuPy's: the NCCL status and its text."""

    def __init__(self, status, text):
        self.status = status
        super().__init__(f"{text} (run with NCCL_DEBUG=INFO for details)")


class StandIn:
    """One CuPy of `version` (13 or 14) with `gpus` GPUs; `nccl=False` is CuPy without libnccl;
    `signed_char` is the platform's C char, which CuPy 13's ids are made of."""

    def __init__(self, version, gpus=1, nccl=True, signed_char=True, host=None):
        self.version, self.gpus, self.signed_char = version, gpus, signed_char
        self.host = host or socket.gethostname()
        self.folders = []           # rendezvous folders made here, removed by cleanup()
        self.streams = {}           # ptr -> Stream, as NCCL takes a stream's handle
        self.current = threading.local()  # CUDA's current device is per host thread
        self.communicators = []
        self.modules = self._modules(nccl)
        self.finder = _Finder(self.modules)

    # ------------------------------------------------------------ cupy, cupy.cuda

    def _modules(self, nccl_available):
        cupy = types.ModuleType("cupy")
        cuda = types.ModuleType("cupy.cuda")
        runtime = types.ModuleType("cupy.cuda.runtime")
        nccl = types.ModuleType("cupy.cuda.nccl")
        cupy.__version__, cupy.ndarray, cupy.cuda = VERSIONS[self.version], ndarray, cuda
        cupy.empty = lambda shape, dtype=float: np.empty(shape, dtype).view(ndarray)
        cupy.zeros_like = lambda a, dtype=None, shape=None: np.zeros_like(a, dtype=dtype, shape=shape).view(ndarray)
        cupy.asarray = lambda a, dtype=None: np.array(a, dtype=dtype).view(ndarray)  # a copy: other memory
        cupy.asnumpy = lambda a: np.array(a.view(np.ndarray))
        runtime.CUDARuntimeError = CUDARuntimeError
        runtime.getDeviceCount = lambda: self.gpus
        runtime.getDevice = lambda: getattr(self.current, "device", 0)
        runtime.setDevice = self._set_device
        runtime.driverGetVersion = runtime.runtimeGetVersion = lambda: 12090  # CUDA 12.9, as cupy-cuda12x
        cuda.runtime, cuda.nccl = runtime, nccl
        cuda.Device = functools.partial(Device, self)
        cuda.Stream = functools.partial(Stream, self)
        cuda.get_current_stream = functools.partial(_current_stream, self)
        nccl.available = nccl_available
        if nccl_available:
            nccl.NcclError, nccl.NCCL_SUM = NcclError, NCCL_SUM
            nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64 = NCCL_FLOAT32, NCCL_FLOAT64
            nccl.get_unique_id = self._get_unique_id
            nccl.NcclCommunicator = functools.partial(NcclCommunicator, self)
        return dict(zip(NAMES, (cupy, cuda, runtime, nccl)))

    def _set_device(self, device):
        if not 0 <= device < self.gpus:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        self.current.device = device

    def install(self):
        """Make `import cupy` in this process find the stand-in (for a whole process: mpiexec's ranks)."""
        sys.meta_path.insert(0, self.finder)
        atexit.register(self.cleanup)

    def cleanup(self):
        """Remove the rendezvous folders made here; a rank still waiting in one then fails, as on a lost peer."""
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.folders = []

    # ------------------------------------------------------------ cupy.cuda.nccl

    def _get_unique_id(self):
        folder = tempfile.mkdtemp(prefix="nccl-standin-")
        self.folders.append(folder)
        raw = folder.encode()
        if len(raw) >= NCCL_UNIQUE_ID_BYTES:
            raise NcclError(2, "unhandled system error: the temporary folder's path is too long for an id")
        # Then random bytes, as NCCL's id holds a random magic after the root's address.
        raw += b"\0" + os.urandom(NCCL_UNIQUE_ID_BYTES - len(raw) - 1)
        _write(os.path.join(folder, "id"), raw)
        if self.version >= 14:
            return raw
        return tuple(np.frombuffer(raw, np.int8 if self.signed_char else np.uint8).tolist())

    def comm_id_bytes(self, comm_id):
        """The id as NcclCommunicator's C struct holds it: Cython's checks on the argument first."""
        if self.version >= 14:
            if not isinstance(comm_id, bytes):
                raise TypeError(f"Argument 'commId' has incorrect type (expected bytes, got {type(comm_id).__name__})")
            if len(comm_id) != NCCL_UNIQUE_ID_BYTES:
                raise ValueError(f"commId length {len(comm_id)} != {NCCL_UNIQUE_ID_BYTES}.")
            return comm_id
        if not isinstance(comm_id, tuple):
            raise TypeError(f"Argument 'commId' has incorrect type (expected tuple, got {type(comm_id).__name__})")
        assert len(comm_id) == NCCL_UNIQUE_ID_BYTES
        low, high = (-128, 127) if self.signed_char else (0, 255)
        for v in comm_id:
            v = operator.index(v)
            if v > high:
                raise OverflowError("value too large to convert to char")
            if v < low:
                raise OverflowError("can't convert negative value to char" if low == 0 else
                                    "value too large to convert to char")
        return bytes(v & 0xFF for v in comm_id)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the stand-in's modules to `import`, so that nothing has imported CuPy until gpucnn does."""

    def __init__(self, modules):
        self.modules = modules

    def find_spec(self, name, path=None, target=None):
        if name in self.modules:
            return importlib.util.spec_from_loader(name, self, is_package=name != "cupy.cuda.nccl")
        return None

    def create_module(self, spec):
        return self.modules[spec.name]

    def exec_module(self, module):
        pass


class Device:
    def __init__(self, standin, device=None):
        self.standin = standin
        self.id = standin.modules["cupy.cuda.runtime"].getDevice() if device is None else device

    def use(self):
        self.standin._set_device(self.id)

    def __enter__(self):
        self.previous = self.standin.modules["cupy.cuda.runtime"].getDevice()
        self.use()
        return self

    def __exit__(self, *exc):
        self.standin._set_device(self.previous)


class Event:
    def __init__(self, stream, ticket):
        self.stream, self.ticket = stream, ticket

    @property
    def done(self):
        """As cudaEventQuery: True once the stream has run everything enqueued before the record."""
        self.stream.advance()
        return self.stream.completed >= self.ticket


class Stream:
    """Work runs in order: an NCCL call runs once every rank has posted its part, and the next waits for it."""

    _next_ptr = 0x5000

    def __init__(self, standin, non_blocking=False):
        Stream._next_ptr += 0x10
        self.ptr = Stream._next_ptr
        self.standin, self.queue, self.completed = standin, [], 0
        standin.streams[self.ptr] = self

    def record(self, event=None):
        return Event(self, self.completed + len(self.queue))

    def wait_event(self, event):
        if not isinstance(event, Event):
            raise TypeError(f"wait_event takes an Event, not {type(event).__name__}")

    def enqueue(self, work):
        self.queue.append(work)
        self.advance()

    def advance(self):
        while self.queue and self.queue[0]():
            self.queue.pop(0)
            self.completed += 1


def _current_stream(standin):
    """The thread's default stream (CuPy's current stream is per thread too)."""
    if not hasattr(standin.current, "stream"):
        standin.current.stream = Stream(standin)
    return standin.current.stream


class NcclCommunicator:
    """One rank of a communicator; its peers are the other joiners of the same rendezvous folder."""

    def __init__(self, standin, ndev, commId, rank, config=None):
        if config is not None and standin.version < 14:
            raise TypeError("__init__() takes exactly 3 positional arguments (4 given)")
        self.standin, self.ndev, self.rank = standin, operator.index(ndev), operator.index(rank)
        self.comm_id = commId
        raw = standin.comm_id_bytes(commId)
        self.folder = raw.split(b"\0")[0].decode(errors="replace")
        try:
            with open(os.path.join(self.folder, "id"), "rb") as f:
                made = f.read()
        except OSError:
            made = None
        if made != raw:  # a mangled id: NCCL would connect nowhere, or to a root that refuses the magic
            raise NcclError(2, "unhandled system error")
        if not 0 <= self.rank < self.ndev:
            raise NcclError(4, "invalid argument")
        self.device = standin.modules["cupy.cuda.runtime"].getDevice()
        self.aborted, self.error, self.seq = False, None, 0
        me = {"host": standin.host, "device": self.device, "pid": os.getpid()}
        _write(os.path.join(self.folder, f"join.{self.rank}"), json.dumps(me).encode())
        while True:  # ncclCommInitRank: every rank must come
            names = self._posted("join")
            if names is None:
                raise NcclError(6, "remote process exited or there was a network error")
            if len(names) == self.ndev:
                break
            time.sleep(1e-3)
        places = {}
        for r in range(self.ndev):
            with open(os.path.join(self.folder, f"join.{r}")) as f:
                peer = json.load(f)
            places.setdefault((peer["host"], peer["device"]), []).append(r)
        if any(len(ranks) > 1 for ranks in places.values()):  # NCCL WARN Duplicate GPU detected
            raise NcclError(5, "invalid usage")
        standin.communicators.append(self)

    def _posted(self, prefix):
        try:
            return [n for n in os.listdir(self.folder) if n.split(".")[0] == prefix and not n.endswith(".tmp")]
        except FileNotFoundError:
            return None

    def device_id(self):
        return self.device

    def abort(self):
        self.aborted = True

    def check_async_error(self):
        if self.aborted:
            raise NcclError(4, "invalid argument")
        if self.error is not None:
            raise self.error

    def reduceScatter(self, sendbuf, recvbuf, recvcount, datatype, op, stream):
        if op != NCCL_SUM:
            raise NcclError(4, "invalid argument")
        dtype = np.dtype(DTYPES[datatype])

        def result(parts):
            ours = [p[self.rank * recvcount:(self.rank + 1) * recvcount] for p in parts]
            return functools.reduce(np.add, ours)  # in rank order: the same bits on every run
        self._collective(sendbuf, self.ndev * recvcount, recvbuf, dtype, stream, result)

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):
        self._collective(sendbuf, count, recvbuf, np.dtype(DTYPES[datatype]), stream, np.concatenate)

    def _collective(self, sendbuf, count, recvbuf, dtype, stream, result):
        """Enqueue on `stream`: post this rank's `count` values, then, once every rank's are there,
        write result(parts in rank order) to recvbuf."""
        if self.aborted:
            raise NcclError(4, "invalid argument")
        seq, self.seq = self.seq, self.seq + 1
        state = {"posted": False}

        def run():
            if self.aborted:
                return False
            prefix = f"op{seq}"
            if not state["posted"]:
                data = _host(sendbuf, count * dtype.itemsize).copy()
                _write(os.path.join(self.folder, f"{prefix}.{self.rank}"), data.tobytes())
                state["posted"] = True
            names = self._posted(prefix)
            if names is None:
                self.error = NcclError(6, "remote process exited or there was a network error")
                return False
            if len(names) < self.ndev:
                return False
            parts = []
            for r in range(self.ndev):
                with open(os.path.join(self.folder, f"{prefix}.{r}"), "rb") as f:
                    parts.append(np.frombuffer(f.read(), dtype))
            out = np.ascontiguousarray(result(parts))
            _host(recvbuf, out.nbytes)[:] = out.view(np.uint8)
            return True
        self.standin.streams[stream].enqueue(run)


def _write(path, data):
    """Whole or not at all: a peer polling the folder never reads half a file."""
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
