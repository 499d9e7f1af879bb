"""Samples, written as files people can look at: generated and reconstructed images, generated
text, and a classifier's predictions on held-out examples (named by the class names)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from airlab.errors import UsageError


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


def save_predictions(images: np.ndarray, predicted: list[str], true: list[str], path: Path) -> Path:
    """Images (N, C, H, W) in [0, 1] in a grid, each captioned with the predicted class, green
    when it is the true one, red with the true one beside it when not."""
    from PIL import Image, ImageDraw

    from airlab.data.inspect import draw_label, label_font

    n, c, h, w = images.shape
    scale = max(1, -(-96 // max(h, w)))
    tw, th, cap, pad = w * scale, h * scale, 30, 4
    ncols = min(n, 8)
    nrows = -(-n // ncols)
    canvas = Image.new("RGB", (ncols * (tw + pad) + pad, nrows * (th + cap + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = label_font(11)
    pixels = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        x0, y0 = pad + col * (tw + pad), pad + r * (th + cap + pad)
        tile = np.transpose(pixels[i], (1, 2, 0))
        img = Image.fromarray(np.ascontiguousarray(tile[..., :3] if c >= 3 else tile[..., 0]))
        canvas.paste(img.resize((tw, th), Image.NEAREST).convert("RGB"), (x0, y0))
        ok = predicted[i] == true[i]
        lines = [predicted[i][:16]] if ok else [predicted[i][:16], f"(true: {true[i][:10]})"]
        for k, text in enumerate(lines):
            draw_label(draw, (x0, y0 + th + 2 + 13 * k), text, font, fill=(0, 128, 0) if ok else (200, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def write_predictions(backend, dataset, out_dir: Path, *, n: int, seed: int, tag: str) -> list[Path]:
    """A classifier's predictions on `n` held-out examples (test, else val, else train; chosen by
    a Generator seeded with `seed`), named by the class names: a text file, and for images a
    captioned grid."""
    splits = dataset.splits()
    name = next(s for s in ("test", "val", "train") if s in splits and len(splits[s]))
    split = splits[name]
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(split), size=min(n, len(split)), replace=False)).astype(np.int64)
    predicted = np.asarray(backend.predict(name, idx))
    x, y = split.gather(idx)
    k = int(dataset.num_classes or (max(int(predicted.max()), int(y.max())) + 1))
    names = list(dataset.class_names or [str(i) for i in range(k)])
    pred_names, true_names = [names[int(p)] for p in predicted], [names[int(t)] for t in y]
    right = sum(p == t for p, t in zip(pred_names, true_names))
    lines = [f"# {len(idx)} examples of the {name} split, predicted by the model: {right} right",
             "index\tpredicted\ttrue"]
    lines += [f"{int(i)}\t{p}\t{t}" for i, p, t in zip(idx, pred_names, true_names)]
    text = out_dir / f"{tag}-predictions.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written = [text]
    if dataset.kind == "image":
        images = x.astype(np.float32) * np.float32(1.0 / 255.0) if x.dtype == np.uint8 else x
        written.append(save_predictions(images, pred_names, true_names, out_dir / f"{tag}-predictions.png"))
    return written


def confusion(backend, dataset, *, batch: int) -> dict | None:
    """A classifier's confusion matrix on its test split (else val): rows the true class, columns
    the predicted one, with each class's accuracy (its recall) and the overall accuracy. None when
    there is no held-out split."""
    splits = dataset.splits()
    name = next((s for s in ("test", "val") if s in splits and len(splits[s])), None)
    if name is None:
        return None
    split = splits[name]
    n = len(split)
    k = int(dataset.num_classes or 0)
    true = np.empty(n, dtype=np.int64)
    predicted = np.empty(n, dtype=np.int64)
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch), dtype=np.int64)
        predicted[idx] = np.asarray(backend.predict(name, idx))
        true[idx] = split.y[idx] if split.rows is None else split.gather(idx)[1]
    k = max(k, int(true.max()) + 1, int(predicted.max()) + 1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    support = matrix.sum(axis=1)
    names = list(dataset.class_names or [str(i) for i in range(k)])
    return {"split": name, "examples": n, "classes": names[:k],
            "matrix": matrix.tolist(),  # matrix[true][predicted]
            "per_class_accuracy": [float(matrix[i, i] / support[i]) if support[i] else None for i in range(k)],
            "support": support.tolist(),
            "accuracy": float(np.trace(matrix) / n)}


def sample_seed(seed: int, i: int) -> int:
    """The seed of sample `i` of a request seeded `seed`: 63 bits drawn from numpy's SeedSequence of
    the pair (seed, i), so each sample's stream depends on both and different seeds never share a
    sample (seed + i would make seed 1's first sample seed 0's second). Fits torch's manual_seed
    and TensorFlow's int64 stateless seeds."""
    if seed < 0 or i < 0:
        raise ValueError(f"Expected `seed` and `i` non-negative. Received: seed={seed}, i={i}")
    state = np.random.SeedSequence([int(seed), int(i)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def encode_prompt(dataset, prompt: str) -> np.ndarray:
    """`prompt` as token ids of the dataset's vocabulary; a UsageError naming every character that
    is not in it (the model has no id for them)."""
    if not prompt:
        raise UsageError("--prompt: empty; give at least one character, or leave --prompt out")
    tokenizer = getattr(dataset, "tokenizer", None)
    index = {ch: i for i, ch in enumerate(dataset.vocab or [])}
    if tokenizer is not None:
        unknown = sorted(set(tokenizer.unknown(prompt)))
    else:
        unknown = sorted({ch for ch in prompt if ch not in index})
    if unknown:
        shown = ", ".join(repr(ch) for ch in unknown[:10])
        if len(unknown) > 10:
            shown += f" and {len(unknown) - 10} more"
        raise UsageError(f"--prompt: {len(unknown)} character(s) not in the vocabulary of {dataset.name}: {shown}",
                         hint=f"use only characters that occur in the {dataset.name} text "
                              f"({len(index)} distinct characters)")
    if tokenizer is not None:
        return np.asarray(tokenizer.encode(prompt), dtype=np.int32)
    return np.array([index[ch] for ch in prompt], dtype=np.int32)


def write(backend, dataset, task, out_dir: Path, *, n: int, seed: int, tag: str, prompt: str | None = None,
          length: int = 400, temperature: float = 0.8, top_k: int | None = None) -> list[Path]:
    """Write `n` samples for the task into out_dir; return the files written (none for classifiers).

    Text sample i is drawn from its own stream, seeded by `sample_seed(seed, i)`. A `prompt` (text
    of the dataset's vocabulary) starts every text sample; `length` new tokens follow it. Images
    draw their latents from one stream seeded by `seed`; reconstructions pick test images with a
    numpy Generator seeded by `seed`."""
    if task.samples is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    if task.samples == "predictions":
        return write_predictions(backend, dataset, out_dir, n=n, seed=seed, tag=tag)
    if task.samples == "images":
        return [save_png(image_grid(backend.generate_images(n, seed)), out_dir / f"{tag}-generated.png")]
    if task.samples == "reconstructions":
        split = next(s for s in (dataset.test, dataset.val, dataset.train) if s is not None and len(s))
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(split), size=min(n, len(split)), replace=False))
        x = split.gather(idx)[0]
        if x.dtype == np.uint8:  # the user's images are kept as bytes; the model reads [0, 1]
            x = x.astype(np.float32) * np.float32(1.0 / 255.0)
        return [save_reconstructions(x, backend.reconstruct(x), out_dir / f"{tag}-reconstructions.png")]
    if task.samples == "text":
        if prompt is None:
            ids = (dataset.encode("\n") if "\n" in (dataset.vocab or []) or getattr(dataset, "tokenizer", None)
                   else np.zeros(1, dtype=np.int32))
            prefix = ""
        else:
            ids, prefix = encode_prompt(dataset, prompt), prompt
        label = f"temperature {temperature:g}" + (f", top-k {top_k}" if top_k is not None else "")
        chunks = []
        for i in range(max(1, n)):
            new = backend.generate_tokens(ids, length, temperature=temperature, top_k=top_k,
                                          seed=sample_seed(seed, i))
            chunks.append(f"--- sample {i + 1} ({label}) ---\n" + prefix + dataset.decode(new))
        path = out_dir / f"{tag}-text.txt"
        path.write_text("\n\n".join(chunks) + "\n", encoding="utf-8")
        return [path]
    raise ValueError(f"unknown sample kind {task.samples!r}")
