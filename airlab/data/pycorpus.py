"""`pycorpus`: a character corpus built offline from the docstrings of the standard library.

The docstrings of a fixed, sorted list of standard-library modules are collected in a fixed
order: for each module, its own docstring, then its public functions and classes in name order
(only those the module defines itself), and for each class its methods and properties in name
order. Each entry is written as its qualified name on one line, the cleaned docstring, then a
blank line. Text is normalized to printable ASCII plus newline (accents are stripped, tabs become
spaces, anything else becomes '?') and capped at `size` characters (default 1,000,000).

The corpus is deterministic for one Python version and platform; another Python version has
other docstrings, so `Dataset.source` records the version. Modules that fail to import (e.g.
sqlite3 on a minimal build) are skipped and listed in `Dataset.extra["skipped"]`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import platform
import subprocess
import sys
import unicodedata
import warnings

DEFAULT_SIZE = 1_000_000

MODULES = sorted("""
abc argparse array ast asyncio.base_events asyncio.events asyncio.futures asyncio.locks
asyncio.queues asyncio.streams asyncio.subprocess asyncio.tasks base64 binascii bisect builtins
bz2 calendar cmath cmd code codecs codeop collections collections.abc colorsys
concurrent.futures configparser contextlib contextvars copy csv dataclasses datetime decimal
difflib dis doctest email.headerregistry email.message email.policy email.utils enum filecmp
fnmatch fractions ftplib functools getopt gettext glob graphlib gzip hashlib heapq hmac html
html.parser http.client http.cookies http.server imaplib inspect io ipaddress itertools json
json.decoder json.encoder keyword linecache locale logging logging.handlers lzma mailbox math
mimetypes multiprocessing.managers multiprocessing.pool netrc numbers operator optparse os
os.path pathlib pkgutil platform plistlib poplib pprint profile pstats pydoc queue
quopri random re reprlib runpy sched secrets selectors shlex shutil smtplib socket
socketserver sqlite3 ssl stat statistics string struct subprocess symtable tarfile tempfile
textwrap threading time timeit tokenize tomllib trace traceback types typing unittest.case
unittest.mock urllib.parse urllib.request urllib.robotparser uuid wave weakref xml.dom.minidom
xml.etree.ElementTree xml.sax.handler xml.sax.saxutils zipfile zipimport zlib zoneinfo
""".split())


def _normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    if text.isascii():
        out = text
    else:
        decomposed = unicodedata.normalize("NFKD", text)
        out = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return "".join(ch if (" " <= ch <= "~" or ch == "\n") else "?" for ch in out)


def _walk(modules: list[str]) -> tuple[list[str], list[str]]:
    parts: list[str] = []
    skipped: list[str] = []
    seen: set[int] = set()
    keep_alive: list[object] = []  # ids are only unique while the objects live

    def add(name: str, obj: object) -> None:
        doc = getattr(obj, "__doc__", None)
        if not isinstance(doc, str) or not doc.strip() or id(obj) in seen:
            return
        seen.add(id(obj))
        keep_alive.append(obj)
        parts.append(f"{name}\n{inspect.cleandoc(doc)}\n\n")

    for modname in modules:
        try:
            mod = importlib.import_module(modname)
        except Exception:  # noqa: BLE001 - any failure: skip the module
            skipped.append(modname)
            continue
        add(modname, mod)
        members = vars(mod)
        for name in sorted(members):
            if name.startswith("_"):
                continue
            obj = members[name]
            # only what the module defines under this very name: no re-exports, no aliases, and
            # nothing a test harness or an earlier import has swapped in
            if getattr(obj, "__module__", None) != mod.__name__ or getattr(obj, "__name__", None) != name:
                continue
            if inspect.isclass(obj):
                add(f"{modname}.{name}", obj)
                attrs = vars(obj)
                for attr in sorted(attrs):
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    member = attrs[attr]
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if (inspect.isfunction(member) or inspect.ismethoddescriptor(member)
                            or inspect.isbuiltin(member) or isinstance(member, property)):
                        add(f"{modname}.{name}.{attr}", member)
            elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
                add(f"{modname}.{name}", obj)
    return parts, skipped


def _build_here(size: int) -> tuple[str, list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts, skipped = _walk(MODULES)
    text = _normalize("".join(parts))
    return text[:size], skipped


def build_text(size: int = DEFAULT_SIZE) -> tuple[str, list[str]]:
    """The corpus (at most `size` characters) and the modules skipped.

    Built in a fresh interpreter with only the standard library (`python -I -S`), because
    imported packages patch standard modules (torch replaces `inspect.getfile`, for one) and
    the corpus must not depend on what this process happened to import.
    """
    try:
        out = subprocess.run([sys.executable, "-I", "-S", __file__, str(int(size))], capture_output=True,
                             timeout=120, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        from airlab.errors import DataError

        detail = getattr(e, "stderr", b"") or b""
        raise DataError(f"pycorpus: building the corpus in a subprocess failed: {e} "
                        f"{detail.decode(errors='replace')[-300:]}") from None
    data = json.loads(out.stdout)
    return data["text"], data["skipped"]


def load(path=None, size: int | None = None):
    from airlab.data.raw import RawData

    cap = DEFAULT_SIZE if size is None else int(size)
    text, skipped = build_text(cap)
    version = platform.python_version()
    return RawData(
        kind="text", text=text,
        source=(f"generated: docstrings of {len(MODULES) - len(skipped)} standard-library modules "
                f"of Python {version}, {len(text):,} characters"),
        extra={"python": version, "skipped": skipped, "size": cap},
    )


if __name__ == "__main__":  # the isolated builder that build_text runs
    text, skipped = _build_here(int(sys.argv[1]))
    sys.stdout.write(json.dumps({"text": text, "skipped": skipped}))
