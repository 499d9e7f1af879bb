"""The PyTorch backend on data as the datasets give it (issue 12): uint8 images kept as bytes and
scaled on the device, memory-mapped splits with `rows`, tables, int32 token ids; augmentation and
normalisation on the device; the fast path (every split on the device) and the streaming path
(batches gathered on the host and prefetched) giving the same weights, bit for bit; and resume on
the streaming path exact.

Every dataset is generated here into tmp_path; the models are tiny and train a few steps on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from airlab.backends.torch.backend import TorchBackend  # noqa: E402
from airlab.config import validate  # noqa: E402
from airlab.data import augment as augment_module  # noqa: E402
from airlab.data.base import Dataset, Split  # noqa: E402
from airlab.tasks import get_task  # noqa: E402
from airlab.train.order import BatchOrder  # noqa: E402

SEED = 3
N, C, H, W = 40, 3, 10, 10  # images: 40 of 3 x 10 x 10, 28 for training, 12 for validation
N_TRAIN = 28
BATCH = 8
STEPS_PER_EPOCH = 3  # so a run of 6 steps crosses an epoch: the augmentation's draws change
MEAN, STD = [0.45, 0.5, 0.55], [0.2, 0.25, 0.3]
CNN = {"name": "cnn", "channels": [4, 8], "dense": [16]}
MLP = {"name": "mlp", "hidden": [16], "dropout": 0.5}
LM = {"name": "transformer", "n_layer": 1, "n_embd": 16, "n_head": 2, "context_length": 8, "dropout": 0.1}


# -- generated data --------------------------------------------------------------------------------


def _bytes(tmp_path, name: str, shape: tuple, seed: int) -> np.ndarray:
    """A uint8 array written as a .npy file and read back memory-mapped (as a data cache is)."""
    out = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape)
    out[:] = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    out.flush()
    del out
    return np.load(tmp_path / f"{name}.npy", mmap_mode="r")


def images(tmp_path, *, normalize: bool = False, as_float: bool = False) -> Dataset:
    """uint8 images in one memory-mapped file holding both splits (each split's `rows`), plus a
    test split of its own; `as_float`: the same images as float32 in [0, 1], in memory."""
    x = _bytes(tmp_path, "images", (N, C, H, W), 0)
    y = np.random.default_rng(1).integers(0, 4, size=N).astype(np.int64)
    test_x = _bytes(tmp_path, "test", (10, C, H, W), 2)
    test_y = np.random.default_rng(3).integers(0, 4, size=10).astype(np.int64)
    order = np.random.default_rng(4).permutation(N)
    train_rows, val_rows = np.sort(order[:N_TRAIN]), np.sort(order[N_TRAIN:])
    if as_float:
        train = Split(as_unit(x[train_rows]), y[train_rows])
        val = Split(as_unit(x[val_rows]), y[val_rows])
        test = Split(as_unit(test_x), test_y)
    else:
        train, val, test = Split(x, y[train_rows], train_rows), Split(x, y[val_rows], val_rows), Split(test_x, test_y)
    ds = Dataset(name="generated", kind="image", train=train, val=val, test=test, num_classes=4)
    if normalize:
        ds.mean, ds.std = MEAN, STD
    return ds


def as_unit(x: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] as airlab.data does it on the host."""
    out = np.asarray(x).astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


def table(tmp_path) -> Dataset:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((36, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return Dataset(name="generated", kind="table", train=Split(x[:N_TRAIN], y[:N_TRAIN]),
                   val=Split(x[N_TRAIN:], y[N_TRAIN:]), num_classes=2)


def text(tmp_path) -> Dataset:
    ids = np.random.default_rng(6).integers(0, 11, size=600).astype(np.int32)
    np.save(tmp_path / "tokens.npy", ids)
    tokens = np.load(tmp_path / "tokens.npy", mmap_mode="r")
    return Dataset(name="generated", kind="text", train=Split(tokens[:480]), val=Split(tokens[480:]),
                   vocab=[chr(97 + i) for i in range(11)])


# -- backends and runs -----------------------------------------------------------------------------


def config(model: dict, *, placement: str = "auto", augment: bool = False, normalize: bool = False,
           grad_accum: int = 1, lm: bool = False):
    data = {"name": "pycorpus" if lm else "shapes", "batch_size": BATCH, "eval_batch_size": 6,
            "placement": placement, "normalize": normalize}
    if augment:
        data["augment"] = {"random_crop": 2, "horizontal_flip": True}
    return validate({"name": "paths", "seed": SEED, "device": "cpu", "backend": "torch", "model": model,
                     "data": data, "train": {"steps": 6, "precision": "fp32", "grad_accum": grad_accum,
                                             "optimizer": "adam", "lr": 0.01}})


def task_of(model: dict):
    return get_task("lm" if model["name"] == "transformer" else "classification")


def order_for(backend: TorchBackend, total: int = 6) -> BatchOrder:
    context = backend._context
    return BatchOrder(backend.task, len(backend.dataset.train), SEED, context, BATCH, STEPS_PER_EPOCH, total)


def build(cfg, dataset, model: dict, *, order: bool = True) -> TorchBackend:
    backend = TorchBackend(cfg, dataset, task_of(model))
    if order:
        backend.set_order(order_for(backend))
    return backend


def train(backend: TorchBackend, first: int, last: int) -> None:
    """Steps first+1..last (1-based) of the backend's order, as the run loop calls them."""
    for k in range(first, last):
        backend.train_step(backend.order.at(k)[1], 0.01, step=k + 1)


def weights(backend: TorchBackend) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in backend.named_weights()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{k} differs"


# -- what the data is on the device ----------------------------------------------------------------


def test_uint8_images_train_to_the_bits_of_their_float32_values(tmp_path):
    """Bytes stay bytes on the device (a quarter of the memory) and are scaled there with the
    host path's multiply: the same weights and metrics as the float32 images of airlab.data."""
    cfg = config(CNN, placement="device")
    stored = build(cfg, images(tmp_path), CNN)
    assert stored.placement == "device" and stored._splits["train"][0].dtype == torch.uint8
    train(stored, 0, 4)
    a, a_val = weights(stored), stored.evaluate("val")
    floats = build(cfg, images(tmp_path, as_float=True), CNN)
    assert floats._splits["train"][0].dtype == torch.float32
    train(floats, 0, 4)
    assert_same_weights(a, weights(floats))
    assert a_val == floats.evaluate("val") and 0.0 <= a_val["accuracy"] <= 1.0


@pytest.mark.parametrize("placement", ["device", "stream"])
def test_augmentation_and_normalisation_on_the_device_equal_the_reference(tmp_path, placement):
    """A training micro-batch is apply_numpy's augmented images (keyed to the step's epoch),
    then normalised, bit for bit; an evaluation batch is only normalised."""
    cfg = config(CNN, placement=placement, augment=True, normalize=True)
    backend = build(cfg, images(tmp_path, normalize=True), CNN)
    assert backend.placement == placement
    floats = images(tmp_path, as_float=True)
    mean = np.asarray(MEAN, dtype=np.float32)[None, :, None, None]
    std = np.asarray(STD, dtype=np.float32)[None, :, None, None]
    for k in (1, 4):  # epochs 0 and 1
        epoch, index = backend.order.at(k)
        assert epoch == k // STEPS_PER_EPOCH
        held = backend._train_batch(index, k + 1) if placement == "stream" else None
        x, y = backend._micro_batch(index, 0, k + 1, held)
        reference = augment_module.apply_numpy(floats.train.x[index], SEED, epoch, index, crop=2, flip=True)
        expected = (reference - mean) / std
        assert x.dtype == torch.float32 and np.array_equal(x.numpy(), expected)
        assert np.array_equal(y.numpy(), floats.train.y[index])
        if k == 1:
            assert not np.array_equal(reference, floats.train.x[index])  # the draws moved some images
    x, _ = backend._batch("val", np.arange(5))
    assert np.array_equal(x.numpy(), (floats.val.x[:5] - mean) / std)


def test_a_second_micro_batch_uses_the_augmentation_of_its_own_examples(tmp_path):
    cfg = config(CNN, placement="device", augment=True)
    backend = build(cfg, images(tmp_path), CNN)
    floats = images(tmp_path, as_float=True)
    epoch, index = backend.order.at(2)
    x, _ = backend._micro_batch(index[5:], 5, 3, None)
    reference = augment_module.apply_numpy(floats.train.x[index[5:]], SEED, epoch, index[5:], crop=2, flip=True)
    assert np.array_equal(x.numpy(), reference)


# -- the fast path and the streaming path ----------------------------------------------------------

CASES = {
    "cnn-uint8-rows-augment-normalize-accum2": (CNN, dict(augment=True, normalize=True, grad_accum=2)),
    "mlp-table": (MLP, {}),
    "transformer-int32-memmap": (LM, dict(lm=True)),
}


def data_for(model: dict, tmp_path, options: dict) -> Dataset:
    if model["name"] == "transformer":
        return text(tmp_path)
    if model["name"] == "mlp":
        return table(tmp_path)
    return images(tmp_path, normalize=options.get("normalize", False))


@pytest.mark.parametrize("case", list(CASES))
def test_streaming_trains_to_the_bits_of_the_fast_path(tmp_path, case):
    model, options = CASES[case]
    results = {}
    for placement in ("device", "stream"):
        backend = build(config(model, placement=placement, **options), data_for(model, tmp_path, options), model)
        assert backend.placement == placement and "data.placement" in backend.placement_reason
        assert bool(backend._splits) == (placement == "device")  # streaming puts nothing on the device
        train(backend, 0, 6)
        if placement == "stream":
            assert backend._feed is not None  # the batches came from the prefetch thread
        results[placement] = weights(backend), backend.evaluate("val")
        backend.close()
        assert backend._feed is None
    assert_same_weights(results["device"][0], results["stream"][0])
    assert results["device"][1] == results["stream"][1]
    assert all(np.isfinite(v) for v in results["stream"][1].values())


def test_streaming_evaluates_every_split_as_the_fast_path(tmp_path):
    figures = {}
    for placement in ("device", "stream"):
        backend = build(config(CNN, placement=placement, normalize=True), images(tmp_path, normalize=True), CNN)
        train(backend, 0, 2)
        figures[placement] = [backend.evaluate(s) for s in ("val", "test", "val")]
        assert backend._eval_feed is None  # each evaluation's prefetch ends with it
        assert backend._split_length("train") == N_TRAIN and backend._split_length("test") == 10
    assert figures["device"] == figures["stream"]


def test_streaming_gathers_now_what_the_prefetch_did_not_prepare(tmp_path):
    """No order (the benchmark), or indices other than the order's: the batch is gathered on the
    spot, and the weights are those of the fast path on the same indices."""
    rng = np.random.default_rng(7)
    batches = [np.sort(rng.choice(N_TRAIN, size=BATCH, replace=False)) for _ in range(3)]
    results = []
    for placement, order in (("device", False), ("stream", False), ("stream", True)):
        backend = build(config(CNN, placement=placement, augment=True), images(tmp_path), CNN, order=order)
        for k, index in enumerate(batches):
            backend.train_step(index, 0.01, step=k + 1)
        results.append(weights(backend))
        backend.close()
    assert_same_weights(results[0], results[1])
    # with the order set, the epoch of each step keys the augmentation (all in epoch 0 here)
    assert_same_weights(results[0], results[2])


def test_streaming_resumes_to_the_bit(tmp_path):
    """6 steps straight against 3 steps, a checkpoint, a new backend and 3 more steps."""
    cfg = config(CNN, placement="stream", augment=True, normalize=True, grad_accum=2)
    straight = build(cfg, images(tmp_path, normalize=True), CNN)
    train(straight, 0, 6)
    expected = weights(straight)
    straight.close()

    first = build(cfg, images(tmp_path, normalize=True), CNN)
    train(first, 0, 3)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    first.save_state(ckpt)
    first.close()
    torch.manual_seed(12345)  # the process's generator moved on: load_state must put it back
    second = build(cfg, images(tmp_path, normalize=True), CNN)
    second.load_state(ckpt)
    train(second, 3, 6)
    assert_same_weights(expected, weights(second))
    second.close()


# -- placement -------------------------------------------------------------------------------------


def test_auto_placement_reads_the_free_memory(tmp_path, monkeypatch):
    data = images(tmp_path)
    backend = build(config(CNN), data, CNN)
    free = backend._memory_free()
    assert isinstance(free, int) and free > 0
    assert backend.placement == "device" and "fits in" in backend.placement_reason
    monkeypatch.setattr(TorchBackend, "_memory_free", lambda self: data.nbytes)  # twice the fraction allowed
    backend = build(config(CNN), images(tmp_path), CNN)
    assert backend.placement == "stream" and "does not fit in" in backend.placement_reason
    assert not backend._splits
    train(backend, 0, 2)
    assert all(np.isfinite(v).all() for v in weights(backend).values())
    backend.close()


def test_a_sampling_backend_leaves_the_data_on_the_host(tmp_path):
    cfg = config(CNN)
    backend = TorchBackend(cfg, images(tmp_path), task_of(CNN), training=False)
    assert backend.placement == "stream" and not backend._splits
    assert backend.summary().params > 0  # the probing pass reads its two images from the host


def test_predictions_read_the_examples_as_evaluation_does(tmp_path):
    """A classifier's predicted classes (what `airlab sample` writes): the same in both placements,
    and as many right as the evaluated accuracy of the same examples says."""
    predicted = {}
    for placement in ("device", "stream"):
        backend = build(config(CNN, placement=placement, augment=True, normalize=True),
                        images(tmp_path, normalize=True), CNN)
        train(backend, 0, 3)
        predicted[placement] = backend.predict("test", np.arange(10))
        accuracy = backend.evaluate("test")["accuracy"]
        backend.close()
    labels = images(tmp_path).test.y
    assert predicted["device"].dtype == np.int64 and predicted["device"].shape == (10,)
    assert np.array_equal(predicted["device"], predicted["stream"])
    assert int((predicted["stream"] == labels).sum()) == round(accuracy * 10)
