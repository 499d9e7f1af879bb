"""The TensorFlow backend on data as the datasets now give it (issue 12): uint8 images kept as
bytes (memory-mapped, a split's `rows` of a shared cache), tables, memory-mapped token ids; the
fast path (every split on the device) and streaming (batches gathered on the host, prefetched in
the run loop's order) give the same bits; augmentation on the device is airlab.data.augment's
reference bit for bit; normalisation follows it; streaming resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from airlab.config import validate  # noqa: E402
from airlab.data import augment as augment_module  # noqa: E402
from airlab.data.base import Dataset, Split  # noqa: E402
from airlab.tasks import get_task  # noqa: E402
from airlab.train.order import BatchOrder  # noqa: E402

SEED, BATCH = 3, 8
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
AUGMENT = {"random_crop": 2, "horizontal_flip": True}


def backend_cls():
    from airlab.backends.tensorflow.backend import TensorFlowBackend

    return TensorFlowBackend


def memmap(tmp_path, name: str, array: np.ndarray) -> np.ndarray:
    """`array` written as a .npy and read back memory-mapped, as the data cache gives it."""
    out = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=array.dtype, shape=array.shape)
    out[...] = array
    out.flush()
    del out
    return np.load(tmp_path / f"{name}.npy", mmap_mode="r")


def images(tmp_path, *, normalize: bool = True, n_train: int = 48, n_val: int = 16, hw=(7, 6)) -> Dataset:
    """uint8 images (N, 3, H, W) in one memory-mapped file, the splits as `rows` of it (the
    validation rows first: a split's rows need not start at 0). Not square, and 3*7*6 bytes are
    no whole number of the fast path's 8-byte words."""
    rng = np.random.default_rng(0)
    n = n_train + n_val
    x = memmap(tmp_path, "images", rng.integers(0, 256, (n, 3, *hw), dtype=np.uint8))
    y = rng.integers(0, 4, n).astype(np.int64)
    train_rows, val_rows = np.arange(n_val, n, dtype=np.int64), np.arange(n_val, dtype=np.int64)
    train_split, val_split = Split(x, y[train_rows], rows=train_rows), Split(x, y[val_rows], rows=val_rows)
    return Dataset("toy-images", "image", train_split, val_split, num_classes=4,
                   mean=MEAN if normalize else None, std=STD if normalize else None)


def table() -> Dataset:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((56, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
    return Dataset("toy-table", "table", Split(x[:40], y[:40]), Split(x[40:], y[40:]), num_classes=3)


def text(tmp_path) -> Dataset:
    rng = np.random.default_rng(2)
    ids = memmap(tmp_path, "tokens", rng.integers(0, 11, 600).astype(np.int32))
    return Dataset("toy-text", "text", Split(ids[:480]), Split(ids[480:]), vocab=[chr(97 + i) for i in range(11)])


MODELS = {  # model section, data section, task
    "cnn": ({"name": "cnn", "channels": [4, 8], "dense": [16]},
            {"name": "npz", "path": "toy.npz", "augment": AUGMENT, "normalize": True}, "classification"),
    "autoencoder": ({"name": "autoencoder", "channels": [4, 4]}, {"name": "npz", "path": "toy.npz"}, "reconstruction"),
    "mlp": ({"name": "mlp", "hidden": [16], "dropout": 0.5}, {"name": "csv", "path": "toy.csv"}, "classification"),
    "transformer": ({"name": "transformer", "n_layer": 1, "n_embd": 16, "n_head": 2, "context_length": 8,
                     "dropout": 0.1}, {"name": "text", "path": "toy.txt"}, "lm"),
}


def build(model: str, dataset: Dataset, placement: str, *, accum: int = 1, steps: int = 6, order: bool = True):
    """A backend for `model` on `dataset`, with the run loop's BatchOrder (as loop.py sets it)."""
    model_section, data_section, task_name = MODELS[model]
    cfg = validate({"name": f"paths-{model}", "seed": SEED, "device": "cpu", "backend": "tensorflow",
                    "model": model_section, "data": {**data_section, "batch_size": BATCH, "placement": placement},
                    "train": {"steps": steps, "precision": "fp32", "grad_accum": accum, "optimizer": "adamw"}})
    task = get_task(task_name)
    backend = backend_cls()(cfg, dataset, task)
    context = model_section.get("context_length")
    n = len(dataset.train)
    per_epoch = task.epoch_size(n, context) // BATCH if context else n // BATCH
    batch_order = BatchOrder(task, n, SEED, context, BATCH, per_epoch, steps)
    if order:
        backend.set_order(batch_order)
    return backend, batch_order


def train(backend, order: BatchOrder, first: int, last: int) -> None:
    for step in range(first, last + 1):  # 1-based, as the run loop counts
        backend.train_step(order.at(step - 1)[1], 1e-2, step=step)


def weights(backend) -> dict[str, np.ndarray]:
    return dict(backend.named_weights())


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not differ, f"weights differ: {differ}"


# -- what the device computes from a stored batch ------------------------------------------------


def reference(x8: np.ndarray, index: np.ndarray, epoch: int, *, augment: bool, normalize: bool) -> np.ndarray:
    """airlab.data's float32 scaling, augment.apply_numpy, then (x - mean[c]) / std[c]."""
    x = x8.astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    if augment:
        x = augment_module.apply_numpy(x, SEED, epoch, index, crop=AUGMENT["random_crop"],
                                       flip=AUGMENT["horizontal_flip"])
    if normalize:
        x = (x - np.asarray(MEAN, np.float32)[None, :, None, None]) / np.asarray(STD, np.float32)[None, :, None, None]
    return x


def model_input(backend, split: str, feed: dict):
    """What the traced step (or evaluation) gives the model for `feed`, computed eagerly."""
    import tensorflow as tf

    return backend._batch_of(split, {k: v if tf.is_tensor(v) else tf.constant(v) for k, v in feed.items()})[0]


@pytest.mark.parametrize("placement", ["device", "stream"])
def test_the_device_batch_is_the_reference_bit_for_bit(tmp_path, placement):
    """uint8 -> [0, 1] -> augment (keyed to the step's epoch) -> normalise, as apply_numpy; the
    evaluation batch is normalised, never augmented."""
    import tensorflow as tf

    ds = images(tmp_path)
    backend, order = build("cnn", ds, placement, steps=12)
    assert backend.placement == placement and backend.placement_reason.startswith(f"data.placement: {placement}")
    step = 7  # the first of the second epoch (6 steps an epoch): the augmentation is keyed to epoch 1
    epoch, index = order.at(step - 1)
    assert epoch == 1
    stored = ds.train.gather(index)[0]
    want = reference(stored, index, epoch, augment=True, normalize=True)
    assert not np.array_equal(want, reference(stored, index, 0, augment=True, normalize=True))  # the epoch matters
    for _ in range(2):  # asked again (a step retried after running out of memory): the same batch
        got = model_input(backend, "train", backend._train_feed(index, step))
        assert got.dtype == tf.float32 and np.array_equal(got.numpy(), want)
    eval_idx = np.arange(5, dtype=np.int64)
    eval_feed = ({"idx": eval_idx} if placement == "device" else backend._host_batch("val", eval_idx))
    got = model_input(backend, "val", eval_feed).numpy()
    assert np.array_equal(got, reference(ds.val.gather(eval_idx)[0], eval_idx, 0, augment=False, normalize=True))
    backend.close()


def test_float_images_are_augmented_as_the_reference_too(tmp_path):
    """The built-in datasets' float32 images: no scaling, the same crop and flip."""
    ds = images(tmp_path, normalize=False)
    x = ds.train.materialize().astype(np.float32) * np.float32(1.0 / 255.0)
    ds = Dataset("toy-float", "image", Split(x, ds.train.y), ds.val, num_classes=4)
    backend, order = build("cnn", ds, "device")
    assert backend._x_dtype == np.float32  # a split of floats: every split as float32
    epoch, index = order.at(2)
    got = model_input(backend, "train", backend._train_feed(index, 3))
    want = augment_module.apply_numpy(x[index], SEED, epoch, index, crop=2, flip=True)
    assert np.array_equal(got.numpy(), want)
    backend.close()


@pytest.mark.parametrize("placement", ["device", "stream"])
def test_each_micro_batch_reads_its_own_images(tmp_path, placement):
    """With train.grad_accum 2 each micro-batch is augmented by the grid of its own examples."""
    ds = images(tmp_path)
    backend, order = build("cnn", ds, placement, accum=2, steps=8)
    micro, update, seeds, n_vars = backend._micro_fns(False, False)
    seen = []

    def recording(feed, seed, share):
        seen.append(feed)
        return micro(feed, seed, share)

    backend._fns[("micro", False, False)] = (recording, update, seeds, n_vars)
    epoch, index = order.at(6)
    backend.train_step(index, 1e-2, step=7)
    assert len(seen) == 2
    for feed, chunk in zip(seen, np.array_split(index, 2)):
        got = model_input(backend, "train", feed).numpy()
        assert np.array_equal(got, reference(ds.train.gather(chunk)[0], chunk, epoch, augment=True, normalize=True))
    backend.close()


# -- the fast path and streaming give the same weights -------------------------------------------


@pytest.mark.parametrize("model, accum", [("cnn", 1), ("cnn", 2), ("autoencoder", 1), ("mlp", 2), ("transformer", 1)])
def test_fast_path_and_streaming_give_the_same_weights(tmp_path, model, accum):
    """uint8 images with augment + normalize (and 2 micro-batches), uint8 images an autoencoder
    reconstructs, a table on the MLP, memory-mapped token ids on the Transformer: the same bits."""
    ds = {"cnn": lambda: images(tmp_path), "autoencoder": lambda: images(tmp_path, normalize=False, hw=(8, 8)),
          "mlp": table, "transformer": lambda: text(tmp_path)}[model]()
    steps = 4
    fast, order = build(model, ds, "device", accum=accum, steps=steps)
    stream, _ = build(model, ds, "stream", accum=accum, steps=steps)
    assert (fast.placement, stream.placement) == ("device", "stream")
    assert stream._splits == {}  # nothing of the data on the device
    train(fast, order, 1, steps)
    train(stream, order, 1, steps)
    assert_same(weights(fast), weights(stream))
    assert fast.evaluate("val") == stream.evaluate("val")
    assert all(np.isfinite(v) for v in stream.evaluate("val").values())
    assert stream._prefetch is not None  # the batches came from the prefetch thread
    if accum == 1:  # one trace, whatever the batches: fixed shapes, an input signature (one batch size)
        assert [k for k in stream._fns if k[0] == "fused"] == [("fused", False, False, BATCH)]
    fast.close()
    stream.close()
    assert stream._prefetch is None


def test_streaming_without_the_run_loops_order_gathers_each_batch(tmp_path):
    """Without set_order (a benchmark, a test) or for a batch the order did not foresee, the batch
    is gathered when asked for: the same weights as the fast path."""
    ds = images(tmp_path)
    fast, order = build("cnn", ds, "device", steps=3, order=False)
    stream, _ = build("cnn", ds, "stream", steps=3, order=False)
    foreseen, _ = build("cnn", ds, "stream", steps=3)
    other = [np.arange(8, dtype=np.int64) * 5, np.arange(8, dtype=np.int64) + 3, np.arange(8, dtype=np.int64)[::-1]]
    for step, index in enumerate(other, start=1):
        for backend in (fast, stream, foreseen):
            backend.train_step(index, 1e-2, step=step)
    assert stream._prefetch is None
    assert_same(weights(fast), weights(stream))
    assert_same(weights(fast), weights(foreseen))
    for backend in (fast, stream, foreseen):
        backend.close()


def test_streaming_resumes_bit_for_bit(tmp_path):
    """8 steps straight, or 4, save_state, a new backend, load_state and 4 more (across the
    epoch boundary, so the augmentation's epoch changes after the resume): the same weights."""
    ds = images(tmp_path)
    straight, order = build("cnn", ds, "stream", steps=8)
    train(straight, order, 1, 8)
    first, _ = build("cnn", ds, "stream", steps=8)
    train(first, order, 1, 4)
    (tmp_path / "ckpt").mkdir()
    first.save_state(tmp_path / "ckpt")
    first.close()
    second, _ = build("cnn", ds, "stream", steps=8)
    second.load_state(tmp_path / "ckpt")
    train(second, order, 5, 8)
    assert_same(weights(straight), weights(second))
    straight.close()
    second.close()


# -- placement -----------------------------------------------------------------------------------


def test_auto_placement_measures_the_host_memory_on_the_cpu(tmp_path):
    ds = table()
    backend, _ = build("mlp", ds, "auto", steps=2)
    free = backend._memory_free()
    assert isinstance(free, int) and free > ds.nbytes
    assert backend.placement == "device"
    assert " of data fits in 50% of the " in backend.placement_reason
    assert backend.placement_reason.endswith(" free on cpu")
    backend.close()
