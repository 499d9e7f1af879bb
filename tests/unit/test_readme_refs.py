"""Every README section a message cites exists: `see README: Datasets` must lead somewhere.

Scans every Python file of the package for citations of the forms `README: <Section>` and
`the README's <Section> section`, and checks each against the `## ` and `### ` headings of
README.md (case-insensitive, whole heading).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airlab"
CITATION = re.compile(r"README: ([A-Za-z][^)\"'`\n;]*?)\s*(?=[)\"'`\n;]|$)|README's ([A-Za-z][\w ,/-]*?) section")


def headings(markdown: str) -> set[str]:
    return {m.group(1).strip().lower() for m in re.finditer(r"^#{2,3} +(.+?)\s*#*\s*$", markdown, re.M)}


def citations() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in CITATION.finditer(line):
                found.append((f"{path.relative_to(ROOT)}:{lineno}", lineno, (m.group(1) or m.group(2)).strip()))
    return found


def test_the_scanner_finds_both_forms():
    text = 'hint="see README: Datasets)"\nx = "the README\'s Exit codes section"\n"README: GPU install" '
    assert [(m.group(1) or m.group(2)).strip() for m in CITATION.finditer(text)] == ["Datasets", "Exit codes",
                                                                                      "GPU install"]
    assert headings("# T\n## Quickstart\n### CPU or GPU torch\n#### deeper\nnot ## a heading\n") == {
        "quickstart", "cpu or gpu torch"}


def test_the_package_cites_readme_sections():
    assert citations(), "no README citation found: the scanner is broken or the hints were removed"


@pytest.mark.parametrize("where, lineno, section", citations(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_cited_readme_section_exists(where, lineno, section):
    known = headings((ROOT / "README.md").read_text(encoding="utf-8"))
    assert section.lower() in known, (
        f"{where} cites README section {section!r}, which README.md has no `##`/`###` heading for; "
        f"headings: {sorted(known)}")
