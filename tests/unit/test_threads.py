"""airlab.train.threads: the cores this process may use (affinity and cgroup quota), the thread
count a run uses, the contention warning, and the comparison of numerics facts on resume."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from airlab.train import threads as T

EIGHT = lambda: set(range(8))  # noqa: E731  (an affinity mask of 8 CPUs)


def cgroup(tmp_path: Path, files: dict[str, str], self_cgroup: str = "0::/\n") -> dict:
    """A fake /sys/fs/cgroup tree and /proc/self/cgroup; the keyword arguments for `cores`."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    own = tmp_path / "self-cgroup"
    own.write_text(self_cgroup)
    return {"root": root, "self_cgroup": own}


# --- usable_cores --------------------------------------------------------------------------------

def test_without_a_quota_the_usable_cores_are_the_affinity_mask_not_the_hosts_count(tmp_path):
    where = cgroup(tmp_path, {})
    assert T.usable_cores(affinity=lambda: {3, 5}, **where) == 2
    c = T.cores(affinity=lambda: {3, 5}, **where)
    assert c.quota is None and "2 CPUs in this process's affinity" in c.source


def test_cgroup_v2_quota_caps_the_affinity_rounded_up(tmp_path):
    where = cgroup(tmp_path, {"cpu.max": "150000 100000\n"})
    c = T.cores(affinity=EIGHT, **where)
    assert (c.usable, c.affinity, c.quota) == (2, 8, 1.5)
    assert "cgroup CPU quota 1.5" in c.source and "8 CPUs" in c.source


def test_cgroup_v2_max_means_no_limit(tmp_path):
    assert T.usable_cores(affinity=EIGHT, **cgroup(tmp_path, {"cpu.max": "max 100000\n"})) == 8


def test_cgroup_v2_a_quota_above_this_process_cgroup_applies_too(tmp_path):
    where = cgroup(tmp_path, {"job/cpu.max": "100000 100000", "job/step/cpu.max": "max 100000"}, "0::/job/step\n")
    assert T.usable_cores(affinity=EIGHT, **where) == 1


def test_cgroup_v2_outside_the_namespace_reads_only_its_root(tmp_path):
    where = cgroup(tmp_path, {"cpu.max": "300000 100000"}, "0::/../../elsewhere\n")
    assert T.usable_cores(affinity=EIGHT, **where) == 3


def test_cgroup_v1_quota_and_period(tmp_path):
    where = cgroup(tmp_path, {"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"},
                   "4:cpu,cpuacct:/\n3:memory:/x\n")
    c = T.cores(affinity=EIGHT, **where)
    assert (c.usable, c.quota) == (1, 0.5)  # ceil, at least one


def test_cgroup_v1_combined_controller_directory_and_an_unmounted_own_path(tmp_path):
    # the cgroup's own path (/docker/abc) is not under the mount; the mount's root is the container's
    where = cgroup(tmp_path, {"cpu,cpuacct/cpu.cfs_quota_us": "250000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
                   "4:cpu,cpuacct:/docker/abc\n")
    assert T.usable_cores(affinity=EIGHT, **where) == 3


def test_cgroup_v1_minus_one_means_no_limit(tmp_path):
    where = cgroup(tmp_path, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert T.usable_cores(affinity=EIGHT, **where) == 8


@pytest.mark.parametrize("files", [
    {"cpu.max": "garbage"},
    {"cpu.max": "100000"},
    {"cpu.max": "0 100000"},
    {"cpu.max": "100000 0"},
    {"cpu.max": ""},
    {"cpu/cpu.cfs_quota_us": "lots", "cpu/cpu.cfs_period_us": "100000"},
    {"cpu/cpu.cfs_quota_us": "50000"},  # no period
], ids=["words", "one-field", "zero-quota", "zero-period", "empty", "v1-words", "v1-no-period"])
def test_unreadable_quota_files_are_ignored(tmp_path, files):
    assert T.usable_cores(affinity=EIGHT, **cgroup(tmp_path, files)) == 8


def test_non_utf8_quota_file_is_ignored(tmp_path):
    where = cgroup(tmp_path, {})
    (where["root"] / "cpu.max").write_bytes(b"\xff\xfe 100000")
    assert T.usable_cores(affinity=EIGHT, **where) == 8


def test_a_quota_above_the_affinity_does_not_raise_the_count(tmp_path):
    assert T.usable_cores(affinity=lambda: {0, 1}, **cgroup(tmp_path, {"cpu.max": "800000 100000"})) == 2


def test_without_an_affinity_mask_the_cpu_count_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(T.os, "cpu_count", lambda: 6)
    assert T.usable_cores(affinity=lambda: None, **cgroup(tmp_path, {})) == 6


def test_the_real_machine_gives_at_least_one_core():
    assert T.usable_cores() >= 1


# --- resolve_threads -----------------------------------------------------------------------------

FOUR = T.Cores(4, 8, 3.5, "cgroup CPU quota 3.5 (8 CPUs in this process's affinity)")


def test_configured_threads_win():
    plan = T.plan_threads(6, available=FOUR, env={"OMP_NUM_THREADS": "1"})
    assert (plan.threads, plan.source) == (6, "train.threads")
    assert T.resolve_threads(3, available=FOUR) == 3


def test_default_is_the_usable_cores():
    plan = T.plan_threads(None, available=FOUR, env={})
    assert plan.threads == 4 and "quota" in plan.source
    assert plan.as_dict() == {"requested": None, "resolved": 4, "derived_from": FOUR.source, "usable_cores": 4,
                              "usable_cores_from": FOUR.source, "affinity_cpus": 8, "cgroup_quota": 3.5}
    json.dumps(plan.as_dict())


@pytest.mark.parametrize("omp, expected", [("1", 1), ("2,1", 2), ("16", 4), ("abc", 4), ("0", 4), ("", 4)])
def test_default_is_lowered_by_omp_num_threads(omp, expected):
    plan = T.plan_threads(None, available=FOUR, env={"OMP_NUM_THREADS": omp})
    assert plan.threads == expected
    assert ("OMP_NUM_THREADS" in plan.source) == (expected < 4)


def test_resolve_threads_on_this_machine():
    assert T.resolve_threads(None) >= 1 and T.resolve_threads(2) == 2


# --- contention ----------------------------------------------------------------------------------

def load(other: float, cores: int = 2, steal: float = 0.0) -> callable:
    return lambda: T.CpuLoad(seconds=0.3, cores=cores, other=other, steal=steal)


def test_contended_cores_give_one_warning_line_naming_the_load_and_the_setting():
    text = T.contention_warning(2, measure=load(1.7))
    assert text is not None and "\n" not in text
    assert "other processes used 1.7 of the 2 cores" in text
    assert "train.threads=2" in text and "set train.threads=1" in text and "bitwise" in text


def test_idle_cores_give_no_warning():
    assert T.contention_warning(2, measure=load(0.2)) is None


def test_one_thread_or_a_gpu_run_is_not_measured():
    def never():
        raise AssertionError("measured")

    assert T.contention_warning(1, measure=never) is None
    assert T.contention_warning(4, device="cuda:0", measure=never) is None


def test_no_measurement_no_warning():
    assert T.contention_warning(2, measure=lambda: None) is None


def test_the_suggestion_is_the_spare_cores_and_steal_counts():
    text = T.contention_warning(16, measure=load(3.0, cores=16, steal=1.0))
    assert "used 4.0 of the 16 cores" in text and "hypervisor took 1.0" in text
    assert "set train.threads=12" in text
    # never more than the cores this process may use (a cgroup quota of 2 on a 16-CPU host)
    assert "set train.threads=2" in T.contention_warning(8, usable=2, measure=load(13.0, cores=16))


def test_measure_load_is_short_and_leaves_no_thread_running():
    before = threading.active_count()
    got = T.measure_load(0.05)
    assert threading.active_count() == before
    if got is not None:  # where psutil can read the CPU times
        assert got.cores == len(T.affinity_cpus() or range(got.cores))
        assert got.other >= 0 and got.steal >= 0 and got.seconds >= 0.05


# --- compare_facts -------------------------------------------------------------------------------

def test_compare_facts_names_each_difference_in_the_saved_order():
    saved = {"threads": 2, "torch": "2.13.0", "device": "cpu", "deterministic": True, "mkldnn": True}
    now = {"threads": 1, "torch": "2.14.0", "device": "cpu", "deterministic": False, "mkldnn": True, "new": 1}
    assert T.compare_facts(saved, now) == ["threads 2 -> 1", "torch 2.13.0 -> 2.14.0", "deterministic on -> off"]


def test_compare_facts_ignores_keys_the_checkpoint_did_not_record_and_names_lost_ones():
    assert T.compare_facts({}, {"threads": 1}) == []
    assert T.compare_facts({"threads": 2}, {"threads": 2, "numpy": "2.0"}) == []
    assert T.compare_facts({"cuda": "12.4"}, {}) == ["cuda 12.4 -> not recorded"]
    assert T.compare_facts({"cudnn": None}, {"cudnn": 90100}) == ["cudnn none -> 90100"]


def test_compare_facts_reads_nested_facts():
    assert T.compare_facts({"gpu": {"name": "A100", "count": 1}}, {"gpu": {"name": "H100", "count": 1}}) == \
        ["gpu.name A100 -> H100"]


def test_host_facts_are_json():
    facts = T.host_facts()
    assert set(facts) == {"machine", "cpu", "numpy"}
    json.dumps(facts)
