"""Grid, block and shared memory of every kernel launch, in one place for CuPy and the emulator.

Each function takes the op's sizes and returns a `Launch` (backward-data: one per stride
phase), or None when the output is empty: CUDA refuses a zero-size grid, so the caller
skips the launch and returns the empty output. Kernels loop grid-stride, so grids are
capped and any size still runs.
All shared memory is declared statically in the kernels (`shared_mem` stays 0).
"""
import math
from collections import namedtuple
from dataclasses import dataclass

REDUCE_BLOCK = 256    # conv2d_backward_bias: threads per channel's tree reduction (a power of two)
ELEMENTWISE_BLOCK = 256
MAX_GRID = 65535      # blocks per grid dimension; the grid-stride loops cover the rest
BUSY_BLOCKS = 256     # about what keeps a large GPU busy: the weight gradient's chunking aims there
MIN_CHUNK = 1024      # positions per weight-gradient chunk, at least: partial sums stay few
# pool2d.cu's for_each_element splits a thread's first index, and the grid's width, in 32 bits.
assert MAX_GRID * ELEMENTWISE_BLOCK < 2**32


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
class Tf32Tile:
    """The template arguments of conv2d_tf32.cu's GEMM kernels (tiled_gemm_tf32): a block
    computes rows x cols of the product on tensor cores, k_slice (one m16n8k8 step) values
    of k at a time, each of its warps warp_rows x warp_cols of it in 16 x 8 fragments."""
    rows: int
    cols: int
    warp_rows: int
    warp_cols: int
    k_slice = 8

    @property
    def threads(self):
        return (self.rows // self.warp_rows) * (self.cols // self.warp_cols) * 32

    @property
    def template_args(self):
        return f"{self.rows}, {self.cols}, {self.warp_rows}, {self.warp_cols}"


# Four warps each: a 32 x 32 warp patch (2 x 4 fragments) reads 2 fragments of A and 4 of B
# for 8 products; the narrow tiles serve the same few-column and few-row products as
# GEMM_TILES' do.
TF32_TILES = (
    Tf32Tile(64, 64, 32, 32),   # the general case
    Tf32Tile(128, 16, 32, 16),  # few columns: forward of a layer with 6 or 16 filters
    Tf32Tile(16, 64, 16, 16),   # few rows: weight gradient of a layer with few filters
)
assert all(tile.k_slice <= GEMM_K_SLICE for tile in TF32_TILES)  # weight-gradient chunks hold whole slices


@dataclass(frozen=True)
class Launch:
    grid: tuple
    block: tuple
    shared_mem: int = 0
    tile: GemmTile = None  # the GEMM kernels' instance (a Tf32Tile for the TF32 ones); None for the others


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
    return _least_work(GEMM_TILES, rows, cols)


def tf32_tile(rows, cols):
    """The TF32 tile for a (rows x cols) product, by gemm_tile's estimate. It overstates the
    products' share (a tensor core does them several times faster), which favours the tiles
    that gather least: the right bias for a path bound by its gathers."""
    return _least_work(TF32_TILES, rows, cols)


def _least_work(tiles, rows, cols):
    def work(tile):
        row_tiles, col_tiles = -(-rows // tile.rows), -(-cols // tile.cols)
        gathered = row_tiles * tile.rows * col_tiles + col_tiles * tile.cols * row_tiles
        return row_tiles * tile.rows * col_tiles * tile.cols + GATHER_COST * gathered
    return min(tiles, key=work)


def tiled_gemm(rows, cols, products=1, tf32=False):
    """`products` independent (rows x cols) implicit-GEMM products (a convolution's groups, or
    groups times weight-gradient chunks): blockIdx.x walks row tiles, blockIdx.y column tiles,
    blockIdx.z the products (grid-stride: conv2d.cu's FOR_EACH_GROUP). tf32: on tensor cores,
    one of TF32_TILES."""
    if rows == 0 or cols == 0 or products == 0:
        return None
    tile = tf32_tile(rows, cols) if tf32 else gemm_tile(rows, cols)
    grid = (_blocks(rows, tile.rows), _blocks(cols, tile.cols), min(products, MAX_GRID))
    return Launch(grid, (tile.threads,), tile=tile)


def conv2d_forward(N, O, OH, OW, groups=1, tf32=False):
    """Per group: rows: output pixels (n, oh, ow); columns: the group's output channels."""
    return tiled_gemm(N * OH * OW, O // groups, groups, tf32)


class StridePhase(namedtuple("StridePhase", "first pixels tap taps tap_step q dy_step")):
    """One stride phase of backward-data along one axis: conv2d.cu's StridePhase, field for
    field. Its input rows are first, first + S, ... (pixels of them): those with
    (ih + padding) % S == r. Its taps are those that reach such rows, tap, tap + tap_step, ...
    below the kernel size (taps of them), and its row first + i*S meets dy row
    q + i - j*dy_step through tap tap + j*tap_step."""


def stride_phase(size, kernel, stride, padding, r, dilation=1):
    """Phase r of an axis with size input rows and a kernel of that many taps, dilation apart.

    Tap k reaches the phase's rows when k*dilation = r (mod stride). With d = gcd(dilation,
    stride), none does unless d divides r; else the least one, tap < stride/d, and every
    stride/d-th after it do, and one tap step moves the dy row back by dilation/d.
    """
    first = (r - padding) % stride
    pixels = len(range(first, size, stride))
    d = math.gcd(dilation, stride)
    tap_step, dy_step = stride // d, dilation // d
    tap = next((k for k in range(tap_step) if k * dilation % stride == r), None)
    if tap is None:  # no tap lands on these rows: their dx is 0
        return StridePhase(first, pixels, 0, 0, tap_step, 0, dy_step)
    return StridePhase(first, pixels, tap, len(range(tap, kernel, tap_step)), tap_step,
                       (first + padding - tap * dilation) // stride, dy_step)


def conv2d_backward_data(N, C, H, W, KH, KW, SH, SW, PH, PW, DH=1, DW=1, groups=1, tf32=False):
    """[(phase along H, phase along W, Launch or None)]: one launch per stride phase that holds
    input pixels, SH x SW of them (one at stride 1). Per group: rows: the phase's input pixels
    (n, i, i2); columns: the group's input channels; reduction: (o, j, jx) over the group's
    output channels and the phase's taps only. None where the phase has no taps (stride >
    kernel, or stride and dilation sharing a factor: no window reaches its pixels, whose dx
    is 0) or the batch is empty."""
    phases = []
    for ph in (stride_phase(H, KH, SH, PH, r, DH) for r in range(SH)):
        for pw in (stride_phase(W, KW, SW, PW, r, DW) for r in range(SW)):
            if ph.pixels and pw.pixels:
                config = (tiled_gemm(N * ph.pixels * pw.pixels, C // groups, groups, tf32)
                          if ph.taps and pw.taps else None)
                phases.append((ph, pw, config))
    return phases


def weight_gradient_chunks(O, C, KH, KW, positions, groups=1):
    """(chunk, chunks): the weight gradient's sum over N*OH*OW positions, cut into chunks.
    (O, C, KH, KW) is the weight's shape: C counts a group's input channels.

    Few output tiles (small filters, few groups) would leave most of a GPU idle while each
    block walks the whole batch, so blocks split the positions and their partial sums are
    added after. The cut depends on the shapes alone: the order of additions, and the
    result's bits, never change between runs. An empty batch is one empty chunk, which
    writes zeros.
    """
    tile = gemm_tile(O // groups, C * KH * KW)
    tiles = _blocks(O // groups, tile.rows) * _blocks(C * KH * KW, tile.cols) * groups
    return _chunks(positions, tiles, GEMM_K_SLICE)  # whole k slices


def bias_gradient_chunks(O, positions):
    """(chunk, chunks): the bias gradient's sum over N*OH*OW positions per channel, cut into
    chunks as weight_gradient_chunks cuts the weight gradient's: a layer with 6 channels
    would otherwise run 6 blocks. Chunks are whole multiples of REDUCE_BLOCK positions."""
    return _chunks(positions, max(O, 1), REDUCE_BLOCK)


def _chunks(positions, blocks, unit):
    """Cut positions into chunks of a multiple of unit, enough for blocks x chunks to reach
    about BUSY_BLOCKS, each of at least MIN_CHUNK positions; an empty sum is one chunk."""
    if positions == 0:
        return unit, 1
    wanted = max(1, min(-(-BUSY_BLOCKS // blocks), -(-positions // MIN_CHUNK), MAX_GRID))
    chunk = -(-positions // wanted)
    chunk = -(-chunk // unit) * unit
    return chunk, -(-positions // chunk)


def conv2d_backward_weight(O, C, KH, KW, chunks, groups=1, tf32=False):
    """Per group and chunk of positions (blockIdx.z, group-major): rows: the group's output
    channels; columns: filter taps (c, ky, kx)."""
    return tiled_gemm(O // groups, C * KH * KW, groups * chunks, tf32)


def conv2d_backward_bias(O, chunks):
    """A block per chunk (blockIdx.x) of each output channel (blockIdx.y)."""
    if O == 0:
        return None
    return Launch((min(chunks, MAX_GRID), min(O, MAX_GRID)), (REDUCE_BLOCK,))


def elementwise(total):
    """One thread per element (pooling, ReLU)."""
    if total == 0:
        return None
    return Launch((_blocks(total, ELEMENTWISE_BLOCK),), (ELEMENTWISE_BLOCK,))
