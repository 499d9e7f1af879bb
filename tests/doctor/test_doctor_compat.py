"""Walk the compat table: every row parses, orders sensibly, agrees with the reference, and the
rules built on it (loadability, coverage) give the documented answers at every boundary."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airlab.doctor.compat import (ArchEntry, Compat, coverage, load, parse_arch_list, parse_cc, parse_version,
                                  python_in_range, toolkit_variant, variant_toolkit, version_at_least)

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "compat.yaml"
compat = load()
TOOLKITS = compat.data["cuda_toolkit_driver_min"]
ARCHS = {k: v for k, v in {**compat.data["torch_cuda_arch_list_older"], **compat.data["torch_cuda_arch_list"]}.items()
         if k.startswith("cu")}  # not the aarch64_rule note


def test_the_table_is_package_data(repo):
    import tomllib

    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    assert "compat.yaml" in pyproject["tool"]["setuptools"]["package-data"]["airlab.doctor"]
    assert (repo / "airlab" / "doctor" / "compat.yaml").is_file()


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"reference file not present at {REFERENCE}")
def test_the_copied_facts_agree_with_the_reference():
    ref = yaml.safe_load(REFERENCE.read_text())
    for key, value in ref.items():
        assert compat.data[key] == value, key


# --- CUDA toolkits and drivers ------------------------------------------------------------------


@pytest.mark.parametrize("key", list(TOOLKITS))
def test_every_toolkit_row_parses(key):
    linux, windows = TOOLKITS[key]
    assert parse_version(linux) is not None
    assert windows is None or parse_version(windows) is not None
    assert parse_version(key.split("u")[0]) is not None


@pytest.mark.parametrize("column", ["linux", "windows"])
def test_driver_minimums_never_decrease_with_the_toolkit(column):
    def order(key):  # "12.6u3" -> ((12, 6), 3); updates of one release in order
        base, _, update = key.partition("u")
        return parse_version(base), int(update or 0)

    rows = sorted(((order(k), (lin if column == "linux" else win)) for k, _, lin, win in compat.toolkit_rows()),
                  key=lambda r: r[0])
    last = None
    for version, need in rows:
        if need is None:
            continue
        if last is not None:
            assert version_at_least(need, last), (version, need, last)
        last = need


@pytest.mark.parametrize("major", ["11", "12", "13"])
@pytest.mark.parametrize("column", ["linux", "windows"])
def test_minor_compat_minimum_is_at_most_every_full_minimum_of_its_major(major, column):
    # except the major's first release (11.0.2; 12.0 on Windows): NVIDIA's minor-version
    # compatibility minimum is the driver of a later update, as the table records
    minor = compat.minor_compat_min(major, column)
    for key, version, lin, win in compat.toolkit_rows():
        need = lin if column == "linux" else win
        first = version[1] == 0 and "u" not in key
        if str(version[0]) == major and need is not None and not first:
            assert version_at_least(need, minor), (version, need, minor)


@pytest.mark.parametrize("key", [k for k in TOOLKITS if "u" not in k])
def test_loadability_at_each_toolkits_boundaries(key):
    toolkit = ".".join(key.split(".")[:2])
    for column, need in zip(("linux", "windows"), TOOLKITS[key]):
        if need is None:
            continue
        assert compat.loadability(toolkit, need, column) == ("full", need)
        below = _just_below(need)
        minor = compat.minor_compat_min(toolkit.split(".")[0], column)
        rule, _ = compat.loadability(toolkit, below, column)
        if minor is not None and version_at_least(below, minor):
            assert rule == "minor"
        else:
            assert rule == "no"
    assert compat.loadability(toolkit, None)[0] == "unknown"


def _just_below(version: str) -> str:
    v = list(parse_version(version))
    for i in range(len(v) - 1, -1, -1):
        if v[i] > 0:
            v[i] -= 1
            return ".".join(str(x) for x in v)
    raise AssertionError(version)


@pytest.mark.parametrize("driver, column, expected", [
    ("525.60.13", "linux", "12.0"), ("535.104.05", "linux", "12.2"), ("570.124.06", "linux", "12.8"),
    ("580.65.06", "linux", "13.0"), ("470.82.01", "linux", "11.4"), ("560.94", "windows", "12.6"),
    ("400.0", "linux", None)])
def test_max_toolkit_for_driver(driver, column, expected):
    assert compat.max_toolkit_for_driver(driver, column) == expected


def test_the_issues_minor_version_rules():
    # "any 12.x build on a driver >= 525.60.13, 13.x on >= 580"
    assert compat.loadability("12.9", "525.60.13")[0] == "minor"
    assert compat.loadability("12.9", "525.60.12")[0] == "no"
    assert compat.loadability("13.0", "580")[0] == "minor"
    assert compat.loadability("13.0", "575.57.08")[0] == "no"
    assert compat.driver_min("11.0") == "450.51.05"  # listed as 11.0.2


# --- PyTorch arch lists and releases ------------------------------------------------------------


@pytest.mark.parametrize("variant", list(ARCHS))
def test_every_arch_list_parses_and_covers_its_own_ccs(variant):
    entries, verified = compat.torch_arch_list(variant)
    assert verified == (variant in compat.data["torch_cuda_arch_list"])
    for item in ARCHS[variant]:
        cc = parse_cc(item.replace("+PTX", ""))
        assert coverage(cc, entries)[0] == "native"
    assert variant_toolkit(variant) in {".".join(k.split(".")[:2]) for k in TOOLKITS}, "no driver row for it"


@pytest.mark.parametrize("release", compat.torch_releases())
def test_every_release_row(release):
    row = compat.torch_release(release)
    assert parse_version(release)
    for tk in row["cuda"]:
        assert compat.driver_min(tk) is not None, f"torch {release} cu{tk}: no driver minimum"
    if row.get("py"):
        assert python_in_range("3.9", row["py"]) is not None
    low, _ = compat.torch_python_range(release)
    assert low is not None


def test_python_lower_bounds_never_decrease():
    lows = [compat.torch_python_range(r)[0] for r in sorted(compat.torch_releases(), key=parse_version)]
    assert lows == sorted(lows)


def test_arch_list_forms_match():
    table = parse_arch_list(["8.0", "9.0", "12.0+PTX"])
    torch_form = parse_arch_list(["sm_80", "sm_90", "sm_120", "compute_120"])
    assert table == torch_form
    assert str(torch_form[-1]) == "compute_120"


@pytest.mark.parametrize("cc, arch, expected", [
    ("8.6", ["sm_80"], "native"),            # same major, newer minor runs older SASS
    ("8.0", ["sm_86"], "none"),              # not the other way round
    ("9.0", ["sm_80"], "none"),              # SASS never crosses a major
    ("9.0", ["sm_80", "compute_80"], "ptx"),  # PTX JITs forward
    ("7.5", ["compute_80"], "none"),         # but never backward
    ("9.0", ["sm_90a"], "native"),           # arch-specific runs on exactly its CC
    ("10.0", ["sm_90a", "compute_90a"], "none"),  # and neither SASS nor PTX 'a' carries forward
    ("10.3", ["sm_100f"], "native"),         # family-specific within the major
    ("12.1", ["sm_120"], "native"),
    ("12.0", ["8.0", "9.0", "12.0+PTX"], "native"),
    ("13.0", ["8.0", "12.0+PTX"], "ptx"),
])
def test_coverage_rules(cc, arch, expected):
    assert coverage(parse_cc(cc), parse_arch_list(arch))[0] == expected


def test_aarch64_rule_drops_archs_and_cu130_adds_11_0():
    x86, _ = compat.torch_arch_list("cu128")
    arm, _ = compat.torch_arch_list("cu128", "aarch64")
    assert ArchEntry("sass", (8, 6)) in x86 and ArchEntry("sass", (8, 6)) not in arm
    assert ArchEntry("sass", (11, 0)) in compat.torch_arch_list("cu130", "aarch64")[0]
    assert ArchEntry("sass", (11, 0)) not in compat.torch_arch_list("cu130")[0]


def test_variant_names():
    assert variant_toolkit("cu128") == "12.8" and variant_toolkit("cu118") == "11.8"
    assert variant_toolkit("cu130") == "13.0" and variant_toolkit("cpu") is None
    assert toolkit_variant("12.6") == "cu126"
    assert compat.torch_index_url("cu128") == "https://download.pytorch.org/whl/cu128"


# --- TensorFlow ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version, py, cudnn, cuda", compat.tf_configs())
def test_every_tensorflow_row(version, py, cudnn, cuda):
    assert parse_version(version) and parse_version(cudnn)
    assert compat.driver_min(cuda) is not None, f"TensorFlow {version}: CUDA {cuda} has no driver row"
    assert python_in_range("3.7", py) is not None
    assert compat.tf_config(version)[0] == version


def test_tensorflow_lines_and_rules():
    assert compat.tf_config("2.21.3")[0] == "2.21.0"
    assert compat.tf_config("2.16.2")[3] == "12.3"
    assert compat.tf_config("1.15.0") is None
    rules = compat.tf_rules
    assert rules["driver_min"]["linux"] == compat.minor_compat_min(12, "linux")
    assert rules["driver_min"]["wsl"] == compat.minor_compat_min(12, "windows")
    assert compat.toolkit_max_cc("12.5") == (9, 0) and compat.toolkit_max_cc("12.8") == (12, 0)


def test_python_ranges():
    assert python_in_range("3.11", "3.9-3.13") is True
    assert python_in_range("3.14", "3.9-3.13") is False
    assert python_in_range("2.7", "2.7,3.5-3.7") is True
    assert python_in_range("3.6", "2.7,3.5-3.7") is True
    assert python_in_range("3.8", "2.7,3.5-3.7") is False
    assert python_in_range("3.11", None) is None


# --- security advisories ------------------------------------------------------------------------


def test_every_advisory_is_well_formed():
    for a in compat.data["security_advisories"]:
        assert {"package", "id", "fixed_in", "severity", "what"} <= set(a)
        assert a["severity"] in ("warn", "fail")
        assert parse_version(a["fixed_in"])
    assert {a["package"] for a in compat.data["security_advisories"]} == {"torch", "pyyaml", "keras"}


def test_versions():
    assert parse_version("2.13.0+cpu") == (2, 13, 0)
    assert parse_version("570.124.06") == (570, 124, 6)
    assert version_at_least("570.124.06", "570.26")
    assert not version_at_least("570.26", "570.124.06")
    assert version_at_least("580", "580.0.0") and not version_at_least("579.99", "580")
    assert version_at_least(None, "1") is False


def test_a_table_with_a_new_toolkit_is_read_without_code_changes():
    data = yaml.safe_load(yaml.safe_dump(compat.data))
    data["cuda_toolkit_driver_min"]["14.0"] = ["610.10", None]
    data["minor_version_compat_min"]["14"] = {"linux": "610", "windows": "610"}
    c = Compat(data)
    assert c.loadability("14.0", "610.5")[0] == "minor"
    assert c.max_toolkit_for_driver("611.0") == "14.0"
