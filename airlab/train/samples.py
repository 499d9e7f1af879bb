"""Samples from generative models, written as files people can look at."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one (H', W', C) uint8 image with the N tiles in a grid."""
    n, c, h, w = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = np.transpose(images[i], (1, 2, 0))
    return (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(array: np.ndarray, path: Path, scale: int = 3) -> Path:
    from PIL import Image

    if array.shape[-1] == 1:
        img = Image.fromarray(array[..., 0], mode="L")
    else:
        img = Image.fromarray(array, mode="RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_reconstructions(inputs: np.ndarray, outputs: np.ndarray, path: Path) -> Path:
    """Inputs in odd columns, their reconstructions beside them."""
    n = inputs.shape[0]
    pairs = np.empty((2 * n, *inputs.shape[1:]), dtype=np.float32)
    pairs[0::2], pairs[1::2] = inputs, outputs
    ncols = 2 * max(1, int(math.ceil(math.sqrt(n))))
    ncols = ncols if ncols <= 2 * n else 2 * n
    return save_png(image_grid(pairs, ncols=ncols), path)


def write(backend, dataset, task, out_dir: Path, *, n: int, seed: int, tag: str) -> list[Path]:
    """Write `n` samples for the task into out_dir; return the files written (none for classifiers)."""
    if task.samples is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    if task.samples == "images":
        return [save_png(image_grid(backend.generate_images(n, seed)), out_dir / f"{tag}-generated.png")]
    if task.samples == "reconstructions":
        split = dataset.test if dataset.test is not None else dataset.val
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(split), size=min(n, len(split)), replace=False))
        x = split.x[idx]
        return [save_reconstructions(x, backend.reconstruct(x), out_dir / f"{tag}-reconstructions.png")]
    if task.samples == "text":
        paths = []
        prompt = dataset.encode("\n") if "\n" in (dataset.vocab or []) else np.zeros(1, dtype=np.int32)
        chunks = []
        for i in range(max(1, n)):
            ids = backend.generate_tokens(prompt, 400, temperature=0.8, top_k=None, seed=seed + i)
            chunks.append(f"--- sample {i + 1} (temperature 0.8) ---\n" + dataset.decode(ids))
        path = out_dir / f"{tag}-text.txt"
        path.write_text("\n\n".join(chunks) + "\n", encoding="utf-8")
        paths.append(path)
        return paths
    raise ValueError(f"unknown sample kind {task.samples!r}")
