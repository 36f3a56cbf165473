"""Per-channel pixel statistics of the training split, combined across workers.

The trainer normalizes every split with these train-only numbers, which fixes the
tutorial bug of fitting a Z-score scaler separately on each split.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from PIL import Image

from data_prep import images

# Rows of the per-channel accumulator.
_SUM, _SUM_SQUARES, _MIN, _MAX = range(4)
# Moments travel in every pointer through the shuffles: a tuple of floats codes faster than an ndarray.
Moments = tuple[tuple[float, ...], ...]
_POWERS = np.stack([np.arange(256, dtype=np.float64), np.square(np.arange(256, dtype=np.float64))], axis=1)


def channel_moments(pixels: Image.Image | np.ndarray) -> Moments:
    """Sum, sum of squares, min and max per channel (4 rows of C) of one uint8 image (PIL, or HxWxC).

    Exact, from PIL's per-channel histogram: far cheaper than numpy reductions over (H*W, C).
    """
    image = images.as_image(pixels)
    counts = np.asarray(image.histogram(), dtype=np.float64).reshape(len(image.getbands()), 256)
    present = counts > 0
    rows = np.concatenate([(counts @ _POWERS).T, [present.argmax(1), 255 - present[:, ::-1].argmax(1)]])
    return tuple(map(tuple, rows.tolist()))


class ChannelStatsFn(beam.CombineFn):
    """Combines (num_pixels, moments) pairs; exact in float64 for any realistic dataset size."""

    def create_accumulator(self):
        return 0, None

    def add_input(self, accumulator, element):
        return self.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators):
        count, total = 0, None
        for n, moments in accumulators:
            if moments is None:
                continue
            count += n
            if total is None:
                total = np.array(moments, dtype=np.float64)
            else:
                total[_SUM] += moments[_SUM]
                total[_SUM_SQUARES] += moments[_SUM_SQUARES]
                total[_MIN] = np.minimum(total[_MIN], moments[_MIN])
                total[_MAX] = np.maximum(total[_MAX], moments[_MAX])
        return count, total

    def extract_output(self, accumulator):
        return summarize(*accumulator)


def summarize(num_pixels: int, moments: np.ndarray | Moments | None) -> dict | None:
    """The metadata form: per-channel mean, std (population), min, max on the stored 0..255 scale."""
    if moments is None or num_pixels == 0:
        return None
    moments = np.asarray(moments, dtype=np.float64)
    mean = moments[_SUM] / num_pixels
    variance = np.maximum(moments[_SUM_SQUARES] / num_pixels - np.square(mean), 0.0)
    return {
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in np.sqrt(variance)],
        "min": [float(v) for v in moments[_MIN]],
        "max": [float(v) for v in moments[_MAX]],
        "num_pixels": int(num_pixels),
    }
