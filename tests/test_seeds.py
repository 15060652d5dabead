"""The worked examples of the seed notes (digested in shared/SEEDS.md), one test each."""
import numpy as np

from gpucnn import nn
from gpucnn.backends import cpu
from gpucnn.checks import output_size


def correlate_valid(x, w):
    """The seeds' convolution of one 2D map with one filter, written out as loops."""
    KH, KW = w.shape
    OH, OW = x.shape[0] - KH + 1, x.shape[1] - KW + 1
    return np.array([[np.sum(x[i:i + KH, j:j + KW] * w) for j in range(OW)] for i in range(OH)])


def test_seed000_tiny_1d_net_gradient_by_hand():
    """X of length 5 zero-padded to X0..X6, Z1 = W1 * X + b1 (length 5), A1 = ReLU(Z1),
    A2 = W2^T A1, L = (A2 - y)^2. dZ1/dW1 is the 3x5 matrix with rows (X0..X4), (X1..X5), (X2..X6)."""
    X = np.array([0.0, 0.5, -1.0, 2.0, 1.5, -0.5, 0.0])  # X0 and X6 are the zero padding
    W1, b1 = np.array([0.3, -0.7, 0.4]), 0.1
    W2, y = np.array([0.2, -0.5, 1.0, 0.7, -0.3]), 0.25

    Z1 = np.array([W1 @ X[i:i + 3] + b1 for i in range(5)])
    A1 = np.maximum(Z1, 0)
    A2 = W2 @ A1
    assert (Z1 > 0).any() and (Z1 < 0).any(), "the example must exercise both sides of ReLU"
    dL_dA2 = 2 * (A2 - y)
    dL_dZ1 = dL_dA2 * W2 * (Z1 > 0)
    dZ1_dW1 = np.array([X[0:5], X[1:6], X[2:7]])  # rows (X0..X4), (X1..X5), (X2..X6)
    dL_dW1 = dZ1_dW1 @ dL_dZ1

    net = nn.Sequential(nn.Conv1d(1, 1, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5, 1, bias=False)).double()
    net.load_state_dict({"0.weight": W1.reshape(1, 1, 3), "0.bias": np.array([b1]), "3.weight": W2.reshape(1, 5)})
    loss_fn = nn.MSELoss()
    loss = loss_fn(net(X[1:6].reshape(1, 1, 5)), np.array([[y]]))
    net.backward(loss_fn.backward())

    np.testing.assert_allclose(loss, (A2 - y) ** 2, rtol=1e-14)
    np.testing.assert_allclose(net[0].weight.grad.reshape(3), dL_dW1, rtol=1e-13)
    np.testing.assert_allclose(net[0].bias.grad, [dL_dZ1.sum()], rtol=1e-13)  # the bias gradient sums the deltas
    np.testing.assert_allclose(net[3].weight.grad.reshape(5), dL_dA2 * A1, rtol=1e-13)


def test_seed003_28x28_conv5x5_gives_24x24_then_pool2x2_gives_12x12():
    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    z = nn.Conv2d(1, 6, 5)(x)
    assert z.shape == (1, 6, 24, 24)
    assert nn.MaxPool2d(2)(z).shape == (1, 6, 12, 12)


def test_seed002_5x5_image_3x3_filter_stride_1_and_2():
    """W2 = (W1 - F + 2P) / S + 1: 3x3 with stride 1, 2x2 with stride 2; the values are
    the stride-1 map's values on every second row and column."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 5)), rng.standard_normal((3, 3))
    assert output_size(5, 3, 1, 0) == 3 and output_size(5, 3, 2, 0) == 2
    full = correlate_valid(x, w)
    stride1 = cpu.conv2d_forward(x[None, None], w[None, None], None, (1, 1), (0, 0))[0, 0]
    stride2 = cpu.conv2d_forward(x[None, None], w[None, None], None, (2, 2), (0, 0))[0, 0]
    assert stride1.shape == (3, 3) and stride2.shape == (2, 2)
    np.testing.assert_allclose(stride1, full, rtol=1e-13)
    np.testing.assert_allclose(stride2, full[::2, ::2], rtol=1e-13)


def test_seed002_4x4_max_pool_2x2_stride_2_routes_each_delta_to_its_window_max():
    x = np.array([[1.0, 5.0, 2.0, 0.0],
                  [3.0, 4.0, 8.0, 1.0],
                  [9.0, 0.5, 6.0, 7.0],
                  [2.0, 1.5, 3.0, 6.5]]).reshape(1, 1, 4, 4)
    pool = nn.MaxPool2d(2, stride=2).double()
    y = pool(x)
    np.testing.assert_array_equal(y[0, 0], [[5.0, 8.0], [9.0, 7.0]])
    dx = pool.backward(np.array([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 1, 2, 2))
    np.testing.assert_array_equal(dx[0, 0], [[0, 10, 0, 0],
                                             [0, 0, 20, 0],
                                             [30, 0, 0, 40],
                                             [0, 0, 0, 0]])


def test_seed001_mean_pool_backward_is_a_kronecker_product():
    """Non-overlapping mean pooling spreads delta / (k*k) over its window: kron(delta, ones(k, k)) / k^2."""
    delta = np.random.default_rng(0).standard_normal((2, 3))
    pool = nn.AvgPool2d(2)
    pool(np.zeros((1, 1, 4, 6)))
    dx = pool.backward(delta.reshape(1, 1, 2, 3))
    np.testing.assert_allclose(dx[0, 0], np.kron(delta, np.ones((2, 2))) / 4, rtol=1e-15)


def test_seed003_rot180_of_a_3x3_filter():
    w = np.arange(1.0, 10.0).reshape(3, 3)  # w11 .. w33 row by row
    np.testing.assert_array_equal(cpu.rot180(w), [[9, 8, 7], [6, 5, 4], [3, 2, 1]])
    np.testing.assert_array_equal(cpu.rot180(cpu.rot180(w)), w)


def test_seed003_input_33_reaches_A11_through_w33_and_A33_through_w11():
    """The 5x5 input's center (3, 3) reaches output A11 through w33, A12 through w32, ...,
    A33 through w11: convolving the one-hot center gives the filter turned by 180 degrees,
    and the gradient A_ab -> x33 is rot180(w)_ab."""
    w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    center = np.zeros((1, 1, 5, 5))
    center[0, 0, 2, 2] = 1.0
    A = cpu.conv2d_forward(center, w, None, (1, 1), (0, 0))
    np.testing.assert_array_equal(A, cpu.rot180(w))
    for a in range(3):
        for b in range(3):
            delta = np.zeros((1, 1, 3, 3))
            delta[0, 0, a, b] = 1.0
            dx = cpu.conv2d_backward_data(delta, w, center.shape, (1, 1), (0, 0))
            assert dx[0, 0, 2, 2] == w[0, 0, 2 - a, 2 - b]


def test_seed003_backward_data_is_the_full_convolution_with_the_rotated_filter():
    """delta_prev[c] = sum over filters o of full-mode conv(delta[o], rot180(w[o, c]))."""
    rng = np.random.default_rng(1)
    O, C, K = 3, 2, 3
    w = rng.standard_normal((O, C, K, K))
    delta = rng.standard_normal((1, O, 4, 5))
    x_shape = (1, C, 4 + K - 1, 5 + K - 1)
    padded = np.pad(delta[0], ((0, 0), (K - 1, K - 1), (K - 1, K - 1)))  # "full" mode
    want = np.array([sum(correlate_valid(padded[o], cpu.rot180(w[o, c])) for o in range(O)) for c in range(C)])
    got = cpu.conv2d_backward_data(delta, w, x_shape, (1, 1), (0, 0))
    np.testing.assert_allclose(got[0], want, rtol=1e-12)


def test_seed002_spread_to_stride1_inserts_zeros():
    dy = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(cpu.spread_to_stride1(dy, (2, 2))[0, 0], [[1, 0, 2], [0, 0, 0], [3, 0, 4]])
    np.testing.assert_array_equal(cpu.spread_to_stride1(dy, (1, 3))[0, 0], [[1, 0, 0, 2], [3, 0, 0, 4]])
    assert cpu.spread_to_stride1(dy, (1, 1)) is dy


def test_seed002_stride_2_backward_is_stride_1_backward_of_the_spread_delta():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((2, 3, 3, 3))
    delta = rng.standard_normal((1, 2, 2, 2))  # 5x5 input, 3x3 filter, stride 2
    x_shape = (1, 3, 5, 5)
    strided = cpu.conv2d_backward_data(delta, w, x_shape, (2, 2), (0, 0))
    spread = cpu.conv2d_backward_data(cpu.spread_to_stride1(delta, (2, 2)), w, x_shape, (1, 1), (0, 0))
    np.testing.assert_allclose(strided, spread, rtol=1e-13)


def test_seed004_5x5x2_flattens_to_50():
    x = np.arange(50.0).reshape(1, 2, 5, 5)
    flat = nn.Flatten()(x)
    assert flat.shape == (1, 50)
    np.testing.assert_array_equal(flat[0], np.arange(50.0))
