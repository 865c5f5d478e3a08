# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The tiling engine: the detection and the combinations band by band, in bounded memory or on dask.

A tile is a band of whole rows.  Every step of the method is either per pixel
(the statistics, the seeds, the combinations), a sum over pixels (the
histograms of the data and of the simulations), a quantile of samples (the
flux factors, the over-dispersion, the mismatch scale), or a neighbourhood
operation (the derivative of the reference, the growth and dilation of the
per-exposure masks).  So the image is processed in bands of rows, each read
with a *halo* of rows above and below for the neighbourhood operations, and
the results are joined: per-pixel results are written into whole-image
boolean masks, histograms are added, samples are concatenated in image order.
The dilation of MEDIANCR/MEANCRT and the labelling of CR features are done
once on the joined boolean masks, so features that cross tile borders are
handled exactly.

Nothing depends on the tiling or on who runs the tiles:

* tile heights are whole numbers of simulation blocks and each block of
  each simulation draws from ``SeedSequence(seed, spawn_key=(simulation,
  block))`` with the block numbered in the whole image;
* the samples are a fixed subsample of the whole image (every
  ``stride``-th pixel in row-major order, `sample_mask`);
* the halo is at least as wide as the neighbourhood operations reach.

The tests compare the tiled results with the one-tile run, which is the
whole-image computation.

With ``scheduler`` (or dask array inputs) each tile of each step is a
`dask.delayed` task computed with `dask.compute`, so the same code runs on the
threaded scheduler or on a `dask.distributed` cluster.
"""

import numpy as np

__all__ = []


#: Values (exposures x pixels) simulated at once by one thread.
VALUES_PER_BLOCK = 3 * 2 ** 18


def rows_per_block(n, nx):
    """Rows of a simulated block for ``n`` exposures of width ``nx``."""
    return max(1, VALUES_PER_BLOCK // (max(n, 1) * max(nx, 1)))


#: Largest number of values (exposures x pixels) kept as samples for the
#: flux factors, the over-dispersion and the mismatch scale.
MAX_SAMPLE_VALUES = 4_000_000


# Memory model of `plan_tiles` (bytes), measured with tracemalloc per step on
# tiles of N = 3, 10 and 20 exposures of 2048 columns (the fit of bytes =
# per_value * N + per_pixel, rounded up): whole-image arrays kept throughout
# (the masks: N + 5 boolean planes, the distance, the labels, temporaries);
# per pixel of a tile, in the heaviest step; per pixel of a simulated block
# (one block per thread); per pixel of a combination tile.
FIXED_PER_PIXEL = 20


#: ``mem_limit='auto'``: this many bytes, or the least the stack needs if more.
AUTO_MEM_LIMIT = 400e6


TILE_PER_VALUE = 28


TILE_PER_PIXEL = 112


BLOCK_PER_VALUE = 9


BLOCK_PER_PIXEL = 76


COMBINE_PER_VALUE = 23


COMBINE_PER_PIXEL = 88


def sample_stride(n_exposures, shape):
    """Every how many pixels a sample is kept (1 for stacks of up to 4 million values)."""
    return max(1, -(-n_exposures * shape[0] * shape[1] // MAX_SAMPLE_VALUES))


def sample_mask(first_row, rows, nx, stride):
    """True at the sampled pixels of rows ``first_row:first_row + rows``; None for all."""
    if stride == 1:
        return None
    keep = np.zeros(rows * nx, dtype=bool)
    keep[(-first_row * nx) % stride::stride] = True
    return keep.reshape(rows, nx)


def plan_tiles(n_exposures, shape, *, mem_limit=None, halo=0, threads=1, combine=False,
               outputs=1):
    """Row bands ``[(start, stop), ...]`` whose processing fits in ``mem_limit`` bytes.

    ``threads`` tiles are processed at once (and, in the simulations,
    ``threads`` blocks), so each gets its share of the limit.  ``'auto'`` is
    `AUTO_MEM_LIMIT`, or the least the stack needs when that is more.  Without a
    limit the image is cut into about ``2 * threads`` bands (one band for
    ``threads=1``), for the threads.  Tile heights are multiples of the
    simulation block (`crcombine._core.tiles.rows_per_block`).  ``combine``:
    for the combinations (``outputs`` of them at once), which hold no
    simulations.

    Raises
    ------
    ValueError
        ``mem_limit`` below what the masks and one block need.
    """
    ny, nx = shape
    n = n_exposures
    step = rows_per_block(n, nx)
    if mem_limit is None:
        if threads <= 1:
            return [(0, ny)]
        rows = -(-ny // (2 * threads))            # ceil(ny / (2 threads))
        rows = -(-rows // step) * step            # a whole number of blocks
        return [(r0, min(r0 + rows, ny)) for r0 in range(0, ny, rows)]
    if combine:
        # the masks (n + 3 + 2 bytes) and 9 bytes of each combination's outputs
        fixed = ny * nx * (n + 5 + 9 * outputs)
        per_row = nx * (n * COMBINE_PER_VALUE + COMBINE_PER_PIXEL)
        blocks = 0
    else:
        fixed = ny * nx * (n + FIXED_PER_PIXEL)
        per_row = nx * (n * TILE_PER_VALUE + TILE_PER_PIXEL)
        blocks = threads * min(step, ny) * nx * (n * BLOCK_PER_VALUE + BLOCK_PER_PIXEL)

    def peak(rows):  # one tile and the simulated blocks, or `threads` tiles at once
        band = (rows + 2 * halo) * per_row
        return fixed + max(band + blocks, min(threads, -(-ny // rows)) * band)

    if mem_limit == "auto":
        mem_limit = max(AUTO_MEM_LIMIT, peak(min(step, ny)))
    if peak(ny) <= mem_limit:
        return [(0, ny)]
    rows = step
    if peak(min(rows, ny)) > mem_limit:
        raise ValueError(f"mem_limit={mem_limit:.4g} bytes is too small for {n} exposures of "
                         f"{ny} x {nx} pixels with {threads} thread(s): at least "
                         f"{peak(min(rows, ny)):.4g} bytes are needed (the masks alone take "
                         f"{fixed:.4g}); raise mem_limit, lower threads, or leave mem_limit "
                         "out (None).")
    while rows + step < ny and peak(rows + step) <= mem_limit:
        rows += step
    return [(r0, min(r0 + rows, ny)) for r0 in range(0, ny, rows)]


def uses_dask(stack, scheduler):
    """Whether the tiles run as dask tasks: with a scheduler, or for a stack of a dask array."""
    return scheduler is not None or getattr(stack, "is_dask", False)


def run_tiles(stack, tiles, func, *, halo=0, planes=(), scheduler=None, progress=None,
              reduce=None, collect=None, workers=1, **kwargs):
    """``func(rows, inner, first_row, *plane_rows, **kwargs)`` for every tile.

    ``rows`` is ``stack.read_rows`` of the tile and its halo, ``inner`` the
    slice of those rows that belongs to the tile, ``first_row`` its first
    row in the image, ``plane_rows`` the same rows (with halo) of each
    whole-image array in ``planes``.  Locally up to ``workers`` tiles run at
    once in threads (numpy releases the GIL), the results handed over in
    tile order (``progress(done, total)`` after each); with dask, as one
    graph computed with ``scheduler``.

    Returns
    -------
    The results in tile order; or, with ``reduce(a, b)``, their reduction
    (folded as they come, or a tree in the dask graph), so that only one
    result is held at a time; or, with ``collect(index, result)``, None
    after handing each result over as it comes.
    """
    ny = stack.shape[0]
    bands = []
    for start, stop in tiles:
        lo, hi = max(start - halo, 0), min(stop + halo, ny)
        bands.append((lo, hi, slice(start - lo, stop - lo), start))
    if not uses_dask(stack, scheduler):
        def one(band):
            lo, hi, inner, start = band
            return func(stack.read_rows(lo, hi), inner, start,
                        *[p[..., lo:hi, :] for p in planes], **kwargs)

        out, total = [], None
        for index, result in enumerate(_ordered_map(one, bands, workers)):
            if reduce is not None:
                total = result if index == 0 else reduce(total, result)
            elif collect is not None:
                collect(index, result)
            else:
                out.append(result)
            del result
            if progress is not None:
                progress(index + 1, len(bands))
        return total if reduce is not None else (None if collect is not None else out)
    import dask
    tasks = [dask.delayed(func, pure=True)(stack.delayed_rows(lo, hi), inner, start,
                                           *[p[..., lo:hi, :] for p in planes], **kwargs)
             for lo, hi, inner, start in bands]
    if reduce is not None:
        while len(tasks) > 1:  # a binary tree of reductions, computed on the workers
            pairs = [dask.delayed(reduce, pure=True)(a, b)
                     for a, b in zip(tasks[::2], tasks[1::2])]
            tasks = pairs + ([tasks[-1]] if len(tasks) % 2 else [])
        return dask.compute(tasks[0], scheduler=scheduler)[0]
    out = list(dask.compute(*tasks, scheduler=scheduler))
    if collect is None:
        return out
    for index, result in enumerate(out):
        collect(index, result)
    return None


def _ordered_map(func, items, workers):
    """``map(func, items)`` on ``workers`` threads, in order, at most ``workers`` in flight."""
    if workers <= 1 or len(items) <= 1:
        yield from map(func, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque()
        for item in items:
            if len(pending) >= workers:
                yield pending.popleft().result()
            pending.append(pool.submit(func, item))
        while pending:
            yield pending.popleft().result()


def inner_rows(value, inner):
    return rows_of(value, inner.start, inner.stop)


def rows_of(value, start, stop):
    """Rows ``start:stop`` of an image-shaped detector value; a scalar as it is."""
    return value[start:stop] if np.ndim(value) == 2 else value
