"""The bias gradient with many blocks per channel: chunks cut by the shapes alone, covering
every position once, and the two-pass sum against NumPy on the emulator, plain and in its
checking mode, on shapes that make several chunks, chunks that end mid-image, and images
smaller than a block."""
import numpy as np
import pytest

import gpucnn.backends.cuda as cuda_ops
from gpucnn import cuda
from gpucnn.backends.cuda import _kernels, launch


def test_bias_gradient_chunks_cover_every_position_once():
    for O, positions in [(6, 64 * 28 * 28), (1, 10**7), (512, 10**6), (3, 5), (6, 0), (2, 2304)]:
        chunk, chunks = launch.bias_gradient_chunks(O, positions)
        assert chunk % launch.REDUCE_BLOCK == 0 and chunks <= max(1, -(-positions // launch.MIN_CHUNK))
        assert (chunks - 1) * chunk < max(positions, 1) <= chunks * chunk
    assert launch.bias_gradient_chunks(6, 64 * 28 * 28)[1] == 40  # LeNet's first layer: 240 blocks, not 6
    assert launch.bias_gradient_chunks(512, 10**6)[1] == 1  # enough channels already


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "checking"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(4, 3, 24, 24), (3, 2, 1, 700), (5, 1, 7, 300), (70, 2, 3, 5)])
def test_two_pass_bias_gradient_matches_numpy(monkeypatch, sanitize, dtype, shape):
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    monkeypatch.setenv("GPUCNN_EMULATOR_SANITIZE", "1" if sanitize else "0")
    monkeypatch.setattr(_kernels, "_modules", {})
    N, O, OH, OW = shape
    assert launch.bias_gradient_chunks(O, N * OH * OW)[1] > 1  # the second pass runs
    dy = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    db = cuda_ops.conv2d_backward_bias(cuda.to_device(dy, "cuda"))
    np.testing.assert_allclose(cuda.as_numpy(db), dy.astype(np.float64).sum(axis=(0, 2, 3)),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4 if dtype == np.float32 else 1e-12)
