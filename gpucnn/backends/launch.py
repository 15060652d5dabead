"""Grid, block and shared memory of every kernel launch, in one place for CuPy and the emulator.

Each function takes the op's sizes and returns a `Launch`, or None when the output is
empty: CUDA refuses a zero-size grid, so the caller skips the launch and returns the
empty output. Kernels loop grid-stride, so grids are capped and any size still runs.
All shared memory is declared statically in the kernels (`shared_mem` stays 0).
"""
from dataclasses import dataclass

GEMM_TILE = 16        # conv2d.cu's tiled_gemm: TILE x TILE threads, one element of the product each
REDUCE_BLOCK = 256    # conv2d_backward_bias: threads per channel's tree reduction (a power of two)
ELEMENTWISE_BLOCK = 256
MAX_GRID = 65535      # blocks per grid dimension; the grid-stride loops cover the rest
BUSY_BLOCKS = 256     # about what keeps a large GPU busy: the weight gradient's chunking aims there
MIN_CHUNK = 64 * GEMM_TILE  # positions per weight-gradient chunk, at least: partial sums stay few


@dataclass(frozen=True)
class Launch:
    grid: tuple
    block: tuple
    shared_mem: int = 0


def _blocks(items, per_block):
    return min(-(-items // per_block), MAX_GRID)


def tiled_gemm(rows, cols):
    """A (rows x cols) implicit-GEMM product: blockIdx.x walks row tiles, blockIdx.y column tiles."""
    if rows == 0 or cols == 0:
        return None
    return Launch((_blocks(rows, GEMM_TILE), _blocks(cols, GEMM_TILE)), (GEMM_TILE, GEMM_TILE))


def conv2d_forward(N, O, OH, OW):
    """Rows: output pixels (n, oh, ow); columns: output channels."""
    return tiled_gemm(N * OH * OW, O)


def conv2d_backward_data(N, C, H, W):
    """Rows: input pixels (n, ih, iw); columns: input channels."""
    return tiled_gemm(N * H * W, C)


def weight_gradient_chunks(O, C, KH, KW, positions):
    """(chunk, chunks): the weight gradient's sum over N*OH*OW positions, cut into chunks.

    Few output tiles (small filters) would leave most of a GPU idle while each block walks
    the whole batch, so blocks split the positions and their partial sums are added after.
    The cut depends on the shapes alone: the order of additions, and the result's bits,
    never change between runs. An empty batch is one empty chunk, which writes zeros.
    """
    if positions == 0:
        return GEMM_TILE, 1
    tiles = _blocks(O, GEMM_TILE) * _blocks(C * KH * KW, GEMM_TILE)
    wanted = max(1, min(-(-BUSY_BLOCKS // tiles), -(-positions // MIN_CHUNK), MAX_GRID))
    chunk = -(-positions // wanted)
    chunk = -(-chunk // GEMM_TILE) * GEMM_TILE  # whole k-tiles
    return chunk, -(-positions // chunk)


def conv2d_backward_weight(O, C, KH, KW, chunks):
    """Rows: output channels; columns: filter taps (c, ky, kx); blockIdx.z: the chunk of positions."""
    config = tiled_gemm(O, C * KH * KW)
    return config and Launch(config.grid + (chunks,), config.block)


def conv2d_backward_bias(O):
    """One block per output channel."""
    if O == 0:
        return None
    return Launch((min(O, MAX_GRID),), (REDUCE_BLOCK,))


def elementwise(total):
    """One thread per element (pooling, ReLU)."""
    if total == 0:
        return None
    return Launch((_blocks(total, ELEMENTWISE_BLOCK),), (ELEMENTWISE_BLOCK,))
