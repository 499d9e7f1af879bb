"""Image augmentation as data: what `data.augment` does to a training image is a pure function of
(seed, epoch, the image's index in the training split), so a resumed run, a run of several
processes (each computing its share of a batch) and the streaming path all see the same images.

The parameters are drawn here, on the host, with a counter-based hash (splitmix64 over the four
numbers), not from a generator with state: nothing is checkpointed and any image can be augmented
alone. The backends apply them on the device (torch: one gather; TensorFlow: the same), after the
pixels are scaled to [0, 1] and before `data.normalize`:

- random_crop: P > 0 pads each side with P zero pixels and crops back to (H, W) at offset
  (dy, dx), each uniform in 0..2P (the CIFAR recipe: P = 4);
- horizontal_flip: mirrors the image left-right when the image's flip bit is 1 (probability 1/2).

`apply_numpy` is the reference the backends' tests compare with.
"""

from __future__ import annotations

import numpy as np

_M = np.uint64(0xFFFFFFFFFFFFFFFF)
_SALT_Y, _SALT_X, _SALT_FLIP = 0x5EED_C407, 0x5EED_C408, 0x5EED_F11B


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _draw(seed: int, epoch: int, index: np.ndarray, salt: int) -> np.ndarray:
    """A uint64 per index: a hash of (seed, epoch, index, salt)."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * golden + np.uint64(salt))
        z = _mix(z ^ (np.uint64(epoch & 0xFFFFFFFFFFFFFFFF) * golden))
        return _mix(z ^ (np.asarray(index, dtype=np.uint64) * golden))


def params(seed: int, epoch: int, index: np.ndarray, *, crop: int, flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dy, dx, flip) int64 arrays, one entry per index: the crop offsets in 0..2*crop (crop
    for none, i.e. the image in place) and 1 where the image is mirrored."""
    index = np.asarray(index, dtype=np.int64)
    n = index.shape[0]
    if crop > 0:
        span = np.uint64(2 * crop + 1)
        dy = (_draw(seed, epoch, index, _SALT_Y) % span).astype(np.int64)
        dx = (_draw(seed, epoch, index, _SALT_X) % span).astype(np.int64)
    else:
        dy = dx = np.zeros(n, dtype=np.int64)
    fl = ((_draw(seed, epoch, index, _SALT_FLIP) >> np.uint64(63)).astype(np.int64) if flip
          else np.zeros(n, dtype=np.int64))
    return dy, dx, fl


def source_grid(dy: np.ndarray, dx: np.ndarray, fl: np.ndarray, h: int, w: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """For each image, the rows (B, H) and columns (B, W) of the zero-padded image (H+2P, W+2P)
    that the output reads: a backend pads by `crop` and gathers these (one gather does crop and
    flip together)."""
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    cols = np.where(fl[:, None] == 1, cols[:, ::-1], cols)
    return rows.astype(np.int64), cols.astype(np.int64)


def apply_numpy(x: np.ndarray, seed: int, epoch: int, index: np.ndarray, *, crop: int, flip: bool) -> np.ndarray:
    """The reference: images (B, C, H, W) augmented as the backends do."""
    b, c, h, w = x.shape
    dy, dx, fl = params(seed, epoch, index, crop=crop, flip=flip)
    padded = np.pad(x, ((0, 0), (0, 0), (crop, crop), (crop, crop)))
    rows, cols = source_grid(dy, dx, fl, h, w, crop)
    return padded[np.arange(b)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def active(augment) -> bool:
    """Whether a `data.augment` section changes any image."""
    return augment is not None and (augment.random_crop > 0 or augment.horizontal_flip)


__all__ = ["active", "apply_numpy", "params", "source_grid"]
