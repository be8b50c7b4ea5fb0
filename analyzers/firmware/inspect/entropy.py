"""Block entropy profile of an image (Shannon entropy in bits/byte), for the HTML plot.

Values near 8 mark compressed or encrypted regions, near 0 padding. Large blocks are estimated from
an evenly strided sample; a 4 KiB sample of uniform random data still reads about 7.95, so the plot
keeps its meaning. `entropy_profile` counts with NumPy but adds the terms in the same order and with
the same float operations as `shannon`, so both give bit-identical values.
"""

from __future__ import annotations

import functools
import math
from collections import Counter

import numpy as np

MAX_POINTS = 1024
MIN_BLOCK = 256
SAMPLE_BYTES = 4096


def shannon(buf: bytes) -> float:
    if not buf:
        return 0.0
    n = len(buf)
    return sum(c / n * math.log2(n / c) for c in Counter(buf).values())


def block_size_for(length: int, max_points: int = MAX_POINTS) -> int:
    size = max(MIN_BLOCK, -(-length // max_points))
    return -(-size // 256) * 256  # round up to a multiple of 256 for readable offsets


def entropy_profile(image: bytes, max_points: int = MAX_POINTS) -> tuple[list[float], int]:
    """(entropy per block, block size); at most `max_points` blocks."""
    if not image:
        return [], 0
    size = block_size_for(len(image), max_points)
    array = np.frombuffer(image, dtype=np.uint8)
    full = len(image) // size
    step = max(1, size // SAMPLE_BYTES)
    points = [round(v, 3) for v in _shannon_rows(array[: full * size].reshape(full, size)[:, ::step])]
    if len(image) > full * size:
        block = array[full * size :]
        step = max(1, len(block) // SAMPLE_BYTES)
        points.append(round(_shannon_array(block[::step] if step > 1 else block), 3))
    return points, size


def _shannon_rows(samples: np.ndarray, chunk: int = 128) -> list[float]:
    """`_shannon_array` of every row of a 2-D sample array, `chunk` rows at a time."""
    rows, n = samples.shape
    if not rows or not n:
        return []
    out: list[float] = []
    columns_reversed = np.arange(n - 1, -1, -1, dtype=np.int32)
    for lo in range(0, rows, chunk):
        block = samples[lo : lo + chunk]
        count = len(block)
        keys = (block + (np.arange(count, dtype=np.int32) * 256)[:, None]).ravel()
        counts = np.bincount(keys, minlength=count * 256).reshape(count, 256)
        first = np.full(count * 256, n, dtype=np.int32)
        # reversed, so the last write for each (row, value) is its first occurrence in the row
        first[keys[::-1]] = np.broadcast_to(columns_reversed, (count, n)).ravel()
        # absent values sort last and add 0.0, which leaves a float sum unchanged
        order = np.argsort(first.reshape(count, 256), axis=1, kind="stable")
        terms = _terms(n)[np.take_along_axis(counts, order, axis=1)]
        out.extend(float(v) for v in np.cumsum(terms, axis=1)[:, -1])
    return out


def _shannon_array(sample: np.ndarray) -> float:
    """`shannon(bytes(sample))`, bit for bit: Counter yields byte values in order of first
    occurrence, and sum() adds the terms left to right (np.cumsum does the same)."""
    n = len(sample)
    counts = np.bincount(sample, minlength=256)
    first = np.full(256, n, dtype=np.intp)
    first[sample[::-1]] = np.arange(n - 1, -1, -1)  # the last write, i.e. the first occurrence, wins
    present = np.flatnonzero(counts)
    order = present[np.argsort(first[present], kind="stable")]
    return float(np.cumsum(_terms(n)[counts[order]])[-1])


@functools.lru_cache(maxsize=8)
def _terms(n: int) -> np.ndarray:
    """c / n * log2(n / c) for c = 0..n, with the same float operations as `shannon`."""
    return np.array([0.0] + [c / n * math.log2(n / c) for c in range(1, n + 1)])
