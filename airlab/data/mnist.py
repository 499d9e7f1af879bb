"""`mnist` and `fashion_mnist`: 60,000 train + 10,000 test 28x28 grayscale images in IDX files.

The four canonical files are the gzipped IDX files; their SHA-256 (and the publishers' MD5) are
pinned below. The uncompressed files (`train-images-idx3-ubyte`, ...) are accepted in their place
in a local directory; no digest is published for those, so they are checked structurally only
(shapes, dtypes, counts, label range), `Dataset.source` says so and `Dataset.unverified` lists
them. Gzip or not is decided by a file's first bytes, not its name.
"""

from __future__ import annotations

import numpy as np

from airlab.data.files import RemoteFile, fetch, unverified
from airlab.data.idx import read_idx
from airlab.data.raw import RawData
from airlab.errors import DataError

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)

# name -> (sha256, md5, size in bytes)
_MNIST_PINS = {
    "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                   "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
    "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                   "d53e105ee54ea40749a09fcbcd1e9432", 28_881),
    "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                                  "9fb629c4189551a2d022fa330f9573f3", 1_648_877),
    "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                                  "ec29112dd5afa0611ce80d1b7f02629c", 4_542),
}
_FASHION_PINS = {
    "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                   "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26_421_880),
    "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                   "25c81989df183df01b3e8a0aad5dffbe", 29_515),
    "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                  "bef4ecab320f06d8554ea6380940ec79", 4_422_102),
    "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                                  "bb300cfdad3c16e7a12a480ee83cd310", 5_148),
}

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def _files(pins: dict[str, tuple[str, str, int]], mirrors: tuple[str, ...]) -> list[RemoteFile]:
    return [RemoteFile(name=name, sha256=sha, md5=md5, size=size,
                       urls=tuple(m + name for m in mirrors),
                       alternates=(name.removesuffix(".gz"),))
            for name, (sha, md5, size) in pins.items()]


MNIST_FILES = _files(_MNIST_PINS, _MNIST_MIRRORS)
FASHION_FILES = _files(_FASHION_PINS, _FASHION_MIRRORS)


def _pair(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    # the shape is checked against each header before its data is read
    x = read_idx(images_path, ndim=3, dtype=np.uint8, shape=(None, 28, 28))
    y = read_idx(labels_path, ndim=1, dtype=np.uint8)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images_path} holds {x.shape[0]} images but {labels_path} holds "
                        f"{y.shape[0]} labels")
    if y.size and int(y.max()) > 9:
        raise DataError(f"{labels_path}: labels must be 0..9, found {int(y.max())}")
    return x[:, None], y.astype(np.int64)


def _load(name: str, files: list[RemoteFile], class_names: list[str], path) -> RawData:
    located = fetch(name, files, path)
    x, y = _pair(located[TRAIN_IMAGES].path, located[TRAIN_LABELS].path)
    tx, ty = _pair(located[TEST_IMAGES].path, located[TEST_LABELS].path)
    return RawData(
        kind="image", x=x, y=y, test_x=tx, test_y=ty, class_names=list(class_names),
        source="; ".join(located[f.name].describe() for f in files),
        extra={"files": {f.name: str(located[f.name].path) for f in files},
               "verified": all(located[f.name].verified for f in files)},
        unverified=unverified(located),
    )


def load_mnist(path=None, size=None) -> RawData:
    return _load("mnist", MNIST_FILES, MNIST_CLASSES, path)


def load_fashion_mnist(path=None, size=None) -> RawData:
    return _load("fashion_mnist", FASHION_FILES, FASHION_CLASSES, path)
