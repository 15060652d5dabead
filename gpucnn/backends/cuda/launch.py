"""Grid, block and shared memory of every kernel launch, in one place for CuPy and the emulator.

Each function takes the op's sizes and returns a `Launch` (backward-data: one per stride
phase), or None when the output is empty: CUDA refuses a zero-size grid, so the caller
skips the launch and returns the empty output. Kernels loop grid-stride, so grids are
capped and any size still runs.
All shared memory is declared statically in the kernels (`shared_mem` stays 0).
"""
from collections import namedtuple
from dataclasses import dataclass

REDUCE_BLOCK = 256    # conv2d_backward_bias: threads per channel's tree reduction (a power of two)
ELEMENTWISE_BLOCK = 256
MAX_GRID = 65535      # blocks per grid dimension; the grid-stride loops cover the rest
BUSY_BLOCKS = 256     # about what keeps a large GPU busy: the weight gradient's chunking aims there
MIN_CHUNK = 1024      # positions per weight-gradient chunk, at least: partial sums stay few


@dataclass(frozen=True)
class GemmTile:
    """The template arguments of conv2d.cu's GEMM kernels: a block computes rows x cols of the
    product, staging k_slice values of k at a time in shared memory, and each of its threads
    computes thread_rows x thread_cols of them in registers."""
    rows: int
    cols: int
    k_slice: int
    thread_rows: int
    thread_cols: int

    @property
    def threads(self):
        return (self.rows // self.thread_rows) * (self.cols // self.thread_cols)

    @property
    def template_args(self):
        return f"{self.rows}, {self.cols}, {self.k_slice}, {self.thread_rows}, {self.thread_cols}"


# Every tile is instantiated for every GEMM kernel (conv.py), so one tile shape can serve any
# pass. 4 x 4 per thread: 16 multiply-adds for 8 operands read from shared memory (2 wide
# reads in float32); one accumulator per thread needs 2 reads per multiply-add. Per slice a
# thread gathers rows * k_slice / threads elements of A (cols * k_slice / threads of B), each
# row's address part held in registers: the narrow tiles take k_slice 4 to keep that at 4.
GEMM_TILES = (
    GemmTile(64, 64, 8, 4, 4),   # the general case, 256 threads
    GemmTile(256, 16, 4, 4, 4),  # few columns: forward of a layer with 6 or 16 filters, 256 threads
    GemmTile(256, 4, 4, 1, 4),   # fewer: backward-data of a 1- or 3-channel input, 256 threads
    GemmTile(16, 64, 4, 4, 4),   # few rows: weight gradient of a layer with few filters, 64 threads
)
GEMM_K_SLICE = max(tile.k_slice for tile in GEMM_TILES)  # weight-gradient chunks hold whole slices
# One gathered operand element costs about as many issue slots as 30 multiply-adds: the 64x64
# forward's main loop (sm_90 SASS) spends ~130 instructions on a thread's 4 gathers per slice,
# and 128 FFMA on its products, and one warp instruction does 32 of either.
GATHER_COST = 30


@dataclass(frozen=True)
class Launch:
    grid: tuple
    block: tuple
    shared_mem: int = 0
    tile: GemmTile = None  # the GEMM kernels' instance; None for the others


def _blocks(items, per_block):
    return min(-(-items // per_block), MAX_GRID)


def gemm_tile(rows, cols):
    """The tile with the least estimated work for a (rows x cols) product, per k: its padded
    multiply-adds, plus GATHER_COST for every element of A and B it gathers (each column tile
    gathers the rows' A again, each row tile the columns' B). The earliest of GEMM_TILES wins
    a tie.

    A 64 x 64 tile over a product with 6 columns (a LeNet layer's 6 filters) would spend 90% of
    its multiply-adds on columns that do not exist; 4-wide tiles would gather its input
    patches twice.
    """
    def work(tile):
        row_tiles, col_tiles = -(-rows // tile.rows), -(-cols // tile.cols)
        gathered = row_tiles * tile.rows * col_tiles + col_tiles * tile.cols * row_tiles
        return row_tiles * tile.rows * col_tiles * tile.cols + GATHER_COST * gathered
    return min(GEMM_TILES, key=work)


def tiled_gemm(rows, cols):
    """A (rows x cols) implicit-GEMM product: blockIdx.x walks row tiles, blockIdx.y column tiles."""
    if rows == 0 or cols == 0:
        return None
    tile = gemm_tile(rows, cols)
    return Launch((_blocks(rows, tile.rows), _blocks(cols, tile.cols)), (tile.threads,), tile=tile)


def conv2d_forward(N, O, OH, OW):
    """Rows: output pixels (n, oh, ow); columns: output channels."""
    return tiled_gemm(N * OH * OW, O)


class StridePhase(namedtuple("StridePhase", "first pixels r taps q")):
    """One stride phase of backward-data along one axis: conv2d.cu's StridePhase, field for
    field. Its input rows are first, first + S, ... (pixels of them): those with
    (ih + padding) % S == r. Its taps are r, r + S, ... below the kernel size (taps of them),
    and its row first + i*S meets dy row q + i - j through tap r + j*S."""


def stride_phase(size, kernel, stride, padding, r):
    """Phase r of an axis with size input rows and a kernel of that many taps."""
    first = (r - padding) % stride
    return StridePhase(first, len(range(first, size, stride)), r, len(range(r, kernel, stride)),
                       (first + padding - r) // stride)


def conv2d_backward_data(N, C, H, W, KH, KW, SH, SW, PH, PW):
    """[(phase along H, phase along W, Launch or None)]: one launch per stride phase that holds
    input pixels, SH x SW of them (one at stride 1). Rows: the phase's input pixels (n, i, i2);
    columns: input channels; reduction: (o, j, jx) over the phase's taps only. None where the
    phase has no taps (stride > kernel: no window reaches its pixels, whose dx is 0) or the
    batch is empty."""
    phases = []
    for ph in (stride_phase(H, KH, SH, PH, r) for r in range(SH)):
        for pw in (stride_phase(W, KW, SW, PW, r) for r in range(SW)):
            if ph.pixels and pw.pixels:
                phases.append((ph, pw, tiled_gemm(N * ph.pixels * pw.pixels, C) if ph.taps and pw.taps else None))
    return phases


def weight_gradient_chunks(O, C, KH, KW, positions):
    """(chunk, chunks): the weight gradient's sum over N*OH*OW positions, cut into chunks.

    Few output tiles (small filters) would leave most of a GPU idle while each block walks
    the whole batch, so blocks split the positions and their partial sums are added after.
    The cut depends on the shapes alone: the order of additions, and the result's bits,
    never change between runs. An empty batch is one empty chunk, which writes zeros.
    """
    if positions == 0:
        return GEMM_K_SLICE, 1
    tile = gemm_tile(O, C * KH * KW)
    tiles = _blocks(O, tile.rows) * _blocks(C * KH * KW, tile.cols)
    wanted = max(1, min(-(-BUSY_BLOCKS // tiles), -(-positions // MIN_CHUNK), MAX_GRID))
    chunk = -(-positions // wanted)
    chunk = -(-chunk // GEMM_K_SLICE) * GEMM_K_SLICE  # whole k slices
    return chunk, -(-positions // chunk)


def conv2d_backward_weight(O, C, KH, KW, chunks):
    """Rows: output channels; columns: filter taps (c, ky, kx); blockIdx.z: the chunk of positions."""
    config = tiled_gemm(O, C * KH * KW)
    return config and Launch(config.grid + (chunks,), config.block, tile=config.tile)


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
