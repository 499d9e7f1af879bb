"""`tinyshakespeare`: Karpathy's 1,115,394-character Shakespeare corpus (65 distinct characters).

The text is tokenized by character; the vocabulary is the sorted list of distinct characters.
`load_dataset` splits it the usual way: the first 90 % for training, the rest for validation.
"""

from __future__ import annotations

from airlab.data.files import RemoteFile, fetch, unverified
from airlab.data.raw import RawData
from airlab.errors import DataError

TINYSHAKESPEARE_FILES = [
    RemoteFile(
        name="input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        md5="6fb458f1232090904fb40fe944165e91",
        size=1_115_394,
        urls=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
    )
]


def load_tinyshakespeare(path=None, size=None) -> RawData:
    found = fetch("tinyshakespeare", TINYSHAKESPEARE_FILES, path)
    located = found["input.txt"]
    try:
        text = located.path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {located.path} as UTF-8 text: {exc}") from exc
    if not text:
        raise DataError(f"{located.path} is empty")
    return RawData(kind="text", text=text, source=located.describe(),
                   extra={"files": {"input.txt": str(located.path)}, "verified": located.verified},
                   unverified=unverified(found))
