"""Every way the NumPy path splits its work (tiles of samples or positions, chunks of
planes or elements, two threads sharing them out) gives the definition's numbers, and the
threads hand back every result and every error."""
import threading
import time

import numpy as np
import pytest

from gpucnn.backends import cpu
from gpucnn.backends.cpu import _common as cpu_common, conv as cpu_conv


def _reference_conv(x, w, stride, padding, groups):
    """Direct sum over the kernel offsets, group by group, in float64: the definition, with no im2col."""
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    (O, CG, KH, KW), OG = w.shape, w.shape[0] // groups
    OH, OW = (xp.shape[2] - KH) // sh + 1, (xp.shape[3] - KW) // sw + 1
    y = np.zeros((x.shape[0], O, OH, OW))
    for g in range(groups):
        for ky in range(KH):
            for kx in range(KW):
                patch = xp[:, g * CG : (g + 1) * CG, ky : ky + sh * (OH - 1) + 1 : sh, kx : kx + sw * (OW - 1) + 1 : sw]
                y[:, g * OG : (g + 1) * OG] += np.einsum("nchw,oc->nohw", patch, w[g * OG : (g + 1) * OG, :, ky, kx])
    return y


@pytest.mark.parametrize("tile_bytes", [64, 4096, cpu_conv.TILE_BYTES])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((3, 2, 9, 11), (4, 2, 3, 3), (1, 1), (1, 1)),
    ((2, 3, 11, 10), (5, 3, 5, 3), (3, 2), (2, 0)),   # uneven strides
    ((2, 1, 7, 4), (2, 1, 2, 1), (2, 3), (0, 1)),     # stride > kernel: phases of backward-data that no tap reaches
    ((2, 2, 1, 40), (3, 2, 1, 7), (1, 4), (0, 3)),    # 1D, as Conv1d runs it
    ((2, 30, 4, 4), (40, 30, 3, 3), (1, 1), (1, 1)),  # stride 1 on exact positions: a small map, many taps
    ((2, 4, 9, 10), (6, 2, 3, 2), (1, 1), (2, 1)),    # two groups, stride 1: folded gathers per group
])
@pytest.mark.parametrize("fold", [False, True], ids=["whole gather", "folded gather"])
def test_tiled_threaded_convolution_is_the_definition(monkeypatch, tile_bytes, x_shape, w_shape, stride, padding, fold):
    """Every way the fast path splits the work (samples, positions, two threads) and gathers
    it (every tap, or one filter row's) gives the same numbers."""
    monkeypatch.setattr(cpu_conv, "_folds", lambda *args, **kwargs: fold)
    monkeypatch.setattr(cpu_conv, "TILE_BYTES", tile_bytes)
    monkeypatch.setattr(cpu_conv, "TILE_POSITIONS", 1)
    monkeypatch.setattr(cpu_common, "_threads", 2)
    monkeypatch.setattr(cpu_common, "PARALLEL_MACS", 0)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    options = (stride, padding, (1, 1), x_shape[1] // w_shape[1])
    y = cpu.conv2d_forward(x, w, None, *options)
    np.testing.assert_allclose(y, _reference_conv(x, w, stride, padding, options[-1]), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    # The adjoint identities <dy, conv(x)> = <dx, x> = <dw, w> pin both backward ops down.
    np.testing.assert_allclose(np.vdot(cpu.conv2d_backward_data(dy, w, x.shape, *options), x), np.vdot(dy, y), rtol=1e-12)
    np.testing.assert_allclose(np.vdot(cpu.conv2d_backward_weight(x, dy, w.shape, *options), w), np.vdot(dy, y), rtol=1e-12)


@pytest.mark.parametrize("chunk_bytes", [1, 200, cpu_common.CHUNK_BYTES])
def test_chunked_max_pooling_is_the_whole_array_op(monkeypatch, chunk_bytes):
    """Max pooling cut into chunks of planes, on two threads, gives the bits of the unchunked
    op: each element is computed from the same values in the same order."""
    monkeypatch.setattr(cpu_common, "_threads", 2)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 9, 8)).astype(np.float32)
    x[0, 1, :3, :3] = np.nan  # chunks see NaNs, or not
    whole = {}
    for bytes_ in (1 << 40, chunk_bytes):
        monkeypatch.setattr(cpu_common, "CHUNK_BYTES", bytes_)
        y, argmax = cpu.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1), True)
        dy = rng.standard_normal(y.shape).astype(np.float32) if not whole else whole["dy"]
        got = {"dy": dy, "y": y, "argmax": argmax,
               "dx": cpu.max_pool2d_backward(dy, argmax, x.shape, (3, 3), (2, 2), (1, 1), True)}
        if not whole:
            whole = got
    for name, want in whole.items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_results_survive_later_calls():
    """The scratch memory the NumPy path reuses between calls never backs a returned array."""
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((2, 4, 3, 9, 9), dtype=np.float32)
    w = rng.standard_normal((5, 3, 3, 3), dtype=np.float32)
    y1 = cpu.conv2d_forward(x1, w, None, (1, 1), (1, 1))
    dx1 = cpu.conv2d_backward_data(y1, w, x1.shape, (1, 1), (1, 1))
    dw1 = cpu.conv2d_backward_weight(x1, y1, w.shape, (1, 1), (1, 1))
    kept = [a.copy() for a in (y1, dx1, dw1)]
    y2 = cpu.conv2d_forward(x2, w, None, (1, 1), (1, 1))
    cpu.conv2d_backward_data(y2, w, x2.shape, (1, 1), (1, 1))
    cpu.conv2d_backward_weight(x2, y2, w.shape, (1, 1), (1, 1))
    for a, b in zip((y1, dx1, dw1), kept):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [2, 3])
def test_share_out_does_every_item_once_in_order(monkeypatch, threads):
    monkeypatch.setattr(cpu_common, "_threads", threads)
    done, lock = [], threading.Lock()

    def work(i):
        time.sleep(0.001 * (i % 3))  # items finish out of order
        with lock:
            done.append((i, threading.get_ident()))
        return i * i

    assert cpu_common.share_out(work, list(range(40))) == [i * i for i in range(40)]
    assert sorted(i for i, _ in done) == list(range(40))
    assert len({t for _, t in done}) > 1  # the pool's threads took items too, not the caller alone


def test_share_out_raises_a_helpers_error_after_every_thread_stopped(monkeypatch):
    monkeypatch.setattr(cpu_common, "_threads", 2)
    running, started = [0], []

    def work(i):
        started.append(i)
        running[0] += 1
        time.sleep(0.002)
        running[0] -= 1
        if i == 3:
            raise ArithmeticError(f"item {i}")
        return i

    with pytest.raises(ArithmeticError, match="item 3"):
        cpu_common.share_out(work, list(range(100)))
    assert running[0] == 0  # no thread still writes into the caller's arrays
    assert len(started) < 100  # the others stopped taking items


@pytest.mark.parametrize("chunk_bytes", [4, 200, cpu_common.CHUNK_BYTES])
def test_threaded_relu_is_relu_cu_to_the_bit(monkeypatch, chunk_bytes):
    """ReLU by chunks on two threads: y is np.maximum(x, 0)'s whole-array bits (NaN kept),
    and dx = dy where y > 0, else +0.0 even where dy is negative, NaN or inf, as relu.cu's select."""
    monkeypatch.setattr(cpu_common, "_threads", 2)
    monkeypatch.setattr(cpu_common, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((4, 3, 7, 5)).astype(dtype)
        x.reshape(-1)[:4] = [np.nan, -0.0, 0.0, -np.inf]
        dy = rng.standard_normal(x.shape).astype(dtype)
        dy.reshape(-1)[4:8] = [np.nan, np.inf, -np.inf, -1.0]
        y = cpu.relu_forward(x)
        want_y = np.maximum(x, 0)
        np.testing.assert_array_equal(y.view(f"i{y.itemsize}"), want_y.view(f"i{y.itemsize}"))
        dx = cpu.relu_backward(dy, y)
        want_dx = np.where(y > 0, dy, dtype(0))  # relu.cu: y > 0 ? dy : 0
        assert dx.dtype == dtype
        np.testing.assert_array_equal(dx.view(f"i{dx.itemsize}"), want_dx.view(f"i{dx.itemsize}"))


def test_threaded_batch_norm_is_the_one_block_op_to_the_bit(monkeypatch):
    """BatchNorm's passes by blocks of samples, shared out over two threads, give the bits of
    one block on one thread: each (sample, channel) row is summed alone, then the rows in order."""
    from gpucnn.backends.cpu import batchnorm as cpu_batchnorm
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((9, 4, 30)) * 3 + 5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    weight, bias = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)

    def passes():
        mean, var = cpu.batch_norm_statistics(x)
        invstd = cpu.batch_norm_invstd(var, 1e-5)
        y = cpu.batch_norm_forward(x, mean, invstd, weight, bias)
        dweight, dbias = cpu.batch_norm_backward_reduce(dy, x, mean, invstd)
        dx = cpu.batch_norm_backward_data(dy, x, mean, invstd, weight, dweight, dbias, True)
        return mean, var, y, dweight, dbias, dx

    monkeypatch.setattr(cpu_batchnorm, "BLOCK_BYTES", 1 << 40)
    whole = passes()
    monkeypatch.setattr(cpu_common, "_threads", 2)
    monkeypatch.setattr(cpu_batchnorm, "SHARED_BYTES", 0)
    for block_bytes in (1, 2 * x[:1].nbytes):  # one sample a block, or two
        monkeypatch.setattr(cpu_batchnorm, "BLOCK_BYTES", block_bytes)
        for name, got, want in zip(("mean", "var", "y", "dweight", "dbias", "dx"), passes(), whole):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_work_that_shares_out_again_runs_on_its_own_thread(monkeypatch):
    """A work item that calls share_out itself (a layer inside a layer) finishes: its items
    run on the thread that took it, not on a pool thread queued behind that one."""
    monkeypatch.setattr(cpu_common, "_threads", 2)

    def outer(i):
        return cpu_common.share_out(lambda j: 10 * i + j, list(range(5)))

    got = []
    runner = threading.Thread(target=lambda: got.append(cpu_common.share_out(outer, list(range(6)))), daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "share_out inside share_out deadlocked"
    assert got == [[[10 * i + j for j in range(5)] for i in range(6)]]
