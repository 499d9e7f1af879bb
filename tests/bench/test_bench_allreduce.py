"""`airlab bench --nproc N`: the all-reduce across the processes of a run.

The arithmetic (nccl-tests' algorithm and bus bandwidth, the collective's time, the slowest rank)
as pure functions on made-up timings; the runner's process-group path on a fake bench (a rank's
report, verdicts against PCIe, no verdict over NVLink or across hosts); the options the CLI
refuses; and one real run of two processes on gloo, with tiny messages."""

from __future__ import annotations

import json

import pytest
from bench_fakes import FAKE_CPU, TINY, FakeBench, FakeNvml

from airlab.bench import arithmetic, collective, peaks
from airlab.bench.report import Report
from airlab.bench.telemetry import Telemetry, nvlink_links_active
from airlab.errors import EnvironmentProblem, UsageError

MiB = 2**20


# -- arithmetic -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n, factor", [(1, 0.0), (2, 1.0), (4, 1.5), (8, 1.75)])
def test_bus_bandwidth_is_the_algorithm_bandwidth_times_2_n_minus_1_over_n(n, factor):
    algbw = arithmetic.allreduce_algorithm_bandwidth(64 * MiB, 0.01)
    assert algbw == pytest.approx(64 * MiB / 0.01)
    assert arithmetic.allreduce_bus_bandwidth(64 * MiB, 0.01, n) == pytest.approx(algbw * factor)


def test_the_collective_takes_as_long_as_its_slowest_rank_in_each_repeat():
    assert collective.collective_seconds([[1.0, 5.0, 2.0], [3.0, 1.0, 2.5]]) == [3.0, 5.0, 2.5]


def test_the_slowest_rank_and_how_far_it_lags_the_median():
    s = collective.slowest_rank([1.0, 1.0, 1.5, 1.0])
    assert s["rank"] == 2 and s["median_s"] == 1.5 and s["ranks_median_s"] == 1.0
    assert s["lag"] == pytest.approx(0.5) and s["straggler"]
    close = collective.slowest_rank([1.00, 1.05, 1.02], tolerance=0.10)
    assert close["rank"] == 1 and close["lag"] == pytest.approx(1.05 / 1.02 - 1) and not close["straggler"]
    tie = collective.slowest_rank([2.0, 2.0])
    assert tie["rank"] == 0 and tie["lag"] == 0 and not tie["straggler"]
    assert not collective.slowest_rank([3.0])["straggler"]  # one rank is nobody's straggler


def test_summarize_gives_a_row_per_size_and_names_the_straggler_at_the_largest():
    sizes = [1024, 16 * MiB]
    # seconds[rank][size][repeat]: rank 2 is 40 % slower on the large message only
    seconds = [[[1e-4, 1e-4, 1e-4], [0.010, 0.011, 0.010]],
               [[1e-4, 2e-4, 1e-4], [0.010, 0.010, 0.012]],
               [[1e-4, 1e-4, 1e-4], [0.014, 0.014, 0.015]]]
    s = collective.summarize(sizes, seconds)
    assert s["world_size"] == 3 and [r["bytes"] for r in s["rows"]] == sizes
    large = s["rows"][1]
    assert large["seconds"] == [0.014, 0.014, 0.015] and large["median_s"] == 0.014
    assert large["algbw"] == pytest.approx(16 * MiB / 0.014)
    assert large["busbw"] == pytest.approx(16 * MiB / 0.014 * 4 / 3)
    assert large["per_rank_median_s"] == [0.010, 0.010, 0.014]
    assert s["straggler"]["rank"] == 2 and s["straggler"]["bytes"] == 16 * MiB
    assert s["straggler"]["lag"] == pytest.approx(0.4) and s["straggler"]["straggler"]
    with pytest.raises(ValueError):
        collective.summarize([1024, 2048], [[[1e-4]]])


@pytest.mark.parametrize("text, sizes", [("1KiB,64KiB,1MiB", (1024, 65536, MiB)), ("4", (4,)),
                                         ("1M, 2k,1m", (2048, MiB)), ("1GiB", (2**30,)), ("8kb", (8192,))])
def test_sizes_parse_in_binary_units(text, sizes):
    assert collective.parse_sizes(text) == sizes


@pytest.mark.parametrize("text", ["", "1 KiB x", "2", "1TiB", "-1KiB", "1.5MiB", "abc"])
def test_malformed_sizes_are_a_usage_error_naming_the_part(text):
    with pytest.raises(UsageError, match="--sizes"):
        collective.parse_sizes(text)


def test_sizes_are_written_for_people_and_calls_per_repeat_depend_on_the_size_only():
    assert [collective.human_size(n) for n in (512, 1024, 1536, 64 * MiB, 2**30)] == \
        ["512 B", "1 KiB", "1.5 KiB", "64 MiB", "1 GiB"]
    assert collective.inner_iterations(1024) == collective.MAX_INNER
    assert collective.inner_iterations(MiB) == 4
    assert collective.inner_iterations(64 * MiB) == 1


def test_argv_without_drops_the_option_and_its_value():
    argv = ["bench", "--nproc", "2", "--device", "cpu", "--nproc=3", "--json"]
    assert collective.argv_without(argv, ("--nproc",)) == ["bench", "--device", "cpu", "--json"]


# -- the runner in a process of a run, on a fake bench ---------------------------------------------
class FakeProcessBench(FakeBench):
    """Each rank's time per all-reduce is size / rate, `slow` rank `slow_factor` x longer."""

    def __init__(self, world=2, rate=10e9, slow=None, slow_factor=1.0, **kw):
        super().__init__(**kw)
        self.world, self.rate, self.slow_rank, self.slow_factor = world, rate, slow, slow_factor
        self.calls = []

    def process_group_allreduce(self, device_kind, sizes, *, warmup, repeats, inners, seed=0):
        self.calls.append({"kind": device_kind, "sizes": list(sizes), "warmup": warmup, "repeats": repeats,
                           "inners": list(inners)})
        seconds = [[[n / self.rate * (self.slow_factor if r == self.slow_rank else 1.0)] * repeats for n in sizes]
                   for r in range(self.world)]
        return {"rank": 0, "world_size": self.world, "backend": "nccl" if device_kind == "gpu" else "gloo",
                "device": device_kind, "seconds": seconds}


class NvmlLinks(FakeNvml):
    """FakeNvml with NVLink: `links` up, or no NVLink at all (NVML says "not supported")."""

    def __init__(self, links=0, **kw):
        super().__init__(**kw)
        self.links = links

    def nvmlDeviceGetNvLinkState(self, h, link):
        if self.links == 0:
            raise type("NVMLError_NotSupported", (Exception,), {})("Not Supported")
        if link >= self.links:
            raise type("NVMLError_InvalidArgument", (Exception,), {})("Invalid Argument")
        return 1


@pytest.fixture
def in_a_run(monkeypatch):
    """Make this process rank RANK of a run of WORLD on one host (the launcher's variables)."""
    def set_env(rank=0, world=2, local_world=None):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world or world))
    return set_env


def _run(bench, nvml=None, **options):
    from airlab.bench.runner import Options, run_bench

    options.setdefault("plan", TINY)
    options.setdefault("backend", "torch")
    return run_bench(Options(**options), bench_loader=lambda name: bench,
                     clock_probe=lambda threads: pytest.fail("no clock probe in the all-reduce across processes"),
                     cpu_info=lambda: FAKE_CPU, trainer=lambda *a, **k: pytest.fail("no training"),
                     telemetry_factory=lambda gpus: Telemetry(gpus, nvml_module=nvml or NvmlLinks()))


def test_rank_0_reports_the_all_reduce_and_names_the_straggler(in_a_run):
    in_a_run(rank=0, world=4)
    bench = FakeProcessBench(world=4, gpus=(), slow=3, slow_factor=1.5)
    report = _run(bench, device="cpu", sizes=(1024, 4 * MiB))
    assert bench.calls == [{"kind": "cpu", "sizes": [1024, 4 * MiB], "warmup": TINY.allreduce_warmup,
                            "repeats": TINY.allreduce_repeats, "inners": [50, 1]}]
    assert [f.suite for f in report.figures] == ["interconnect", "interconnect"]
    f = report.figures[1]
    assert f.id == f"interconnect/torch/cpu/allreduce-4proc-{4 * MiB}" and f.name.endswith("4 processes, 4 MiB")
    t = 4 * MiB / 10e9 * 1.5  # the slowest rank sets the collective's time
    assert f.stats["median_s"] == pytest.approx(t) and f.value == pytest.approx(4 * MiB / t * 1.5)
    assert f.verdict == "n/a" and f.work["backend"] == "gloo"
    a = report.allreduce
    assert a["world_size"] == 4 and len(a["sizes"]) == 2 and a["sizes"][1]["per_rank_median_s"][3] == pytest.approx(t)
    assert a["straggler"]["rank"] == 3 and a["straggler"]["lag"] == pytest.approx(0.5) and a["straggler"]["straggler"]
    assert any("rank 3 is a straggler" in line for line in report.findings)
    assert report.stragglers == [{"rank": 3, "figure": "interconnect/allreduce", "shortfall": pytest.approx(0.5),
                                  "median_of": 4}]
    assert Report.model_validate(report.to_json()).to_json() == report.to_json()


def test_the_other_ranks_measure_too_but_report_nothing(in_a_run):
    in_a_run(rank=1, world=2)
    bench = FakeProcessBench(world=2, gpus=())
    assert _run(bench, device="cpu") is None
    assert bench.calls and bench.calls[0]["sizes"] == list(TINY.allreduce_cpu_sizes)


def test_gpus_joined_by_pcie_only_are_judged_against_the_link(in_a_run):
    in_a_run(rank=0, world=2)
    pcie5 = peaks.pcie_peak(5, 16)
    bench = FakeProcessBench(world=2, rate=pcie5 * 0.7, gpus=("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"))
    report = _run(bench, nvml=NvmlLinks(links=0), sizes=(64 * MiB,))
    (f,) = report.figures
    assert bench.calls[0]["kind"] == "gpu" and f.device == "cuda" and f.work["backend"] == "nccl"
    assert f.peak == pcie5 and "PCIe gen 5 x16" in f.peak_source
    assert f.fraction_of_peak == pytest.approx(0.7) and f.verdict == "ok"
    slow = FakeProcessBench(world=2, rate=pcie5 * 0.2, gpus=("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"))
    assert _run(slow, nvml=NvmlLinks(links=0), sizes=(64 * MiB,)).figures[0].verdict == "low"


@pytest.mark.parametrize("nvml, local_world, note", [
    (NvmlLinks(links=18), None, "NVLink up (18 links)"),
    (FakeNvml(), None, "NVML could not tell"),
    (NvmlLinks(links=0), 1, "several hosts"),
])
def test_no_verdict_over_nvlink_across_hosts_or_when_nvml_cannot_tell(in_a_run, nvml, local_world, note):
    in_a_run(rank=0, world=2, local_world=local_world)
    report = _run(FakeProcessBench(world=2), nvml=nvml, sizes=(MiB,))
    (f,) = report.figures
    assert f.peak is None and f.verdict == "n/a" and note in report.allreduce["reference"] and note in f.notes[0]


def test_a_run_of_processes_refuses_a_device_of_its_own_and_tensorflow(in_a_run):
    in_a_run(rank=0, world=2)
    with pytest.raises(UsageError, match="local rank"):
        _run(FakeProcessBench(), device="cuda:1")
    with pytest.raises(UsageError, match="PyTorch"):
        _run(FakeProcessBench(), backend="tensorflow")
    in_a_run(rank=0, world=4)
    with pytest.raises(EnvironmentProblem, match="local rank 0 has no GPU|no CUDA device"):
        _run(FakeProcessBench(gpus=()), device="cuda")


def test_nvlink_links_are_counted_from_nvml():
    assert nvlink_links_active(NvmlLinks(links=0), 0) == 0
    assert nvlink_links_active(NvmlLinks(links=4), 0) == 4
    assert nvlink_links_active(FakeNvml(), 0) is None  # no such NVML call: cannot tell


# -- the CLI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--nproc", "2", "--device", "cuda:0"], "--device cuda:0 with --nproc 2"),
    (["--nproc", "2", "--device", "all"], "--device all with --nproc 2"),
    (["--nproc", "2", "--backend", "tensorflow"], "PyTorch"),
    (["--nproc", "2", "--verify"], "--verify"),
    (["--sizes", "1KiB"], "--sizes"),
    (["--nproc", "2", "--sizes", "1KiB,lots"], "'lots'"),
    (["--nproc", "0"], "--nproc"),
    (["--nproc", "2", "--compare", "a.json", "--compare", "b.json"], "--nproc needs a run"),
])
def test_what_nproc_cannot_mean_is_a_usage_error(airlab_cli, argv, message):
    r = airlab_cli("bench", *argv)
    assert r.code == 2 and message in r.err, r.err


def test_nproc_inside_a_launched_run_is_a_usage_error(airlab_cli, in_a_run):
    in_a_run(rank=0, world=2)
    r = airlab_cli("bench", "--nproc", "2")
    assert r.code == 2 and "leave out --nproc" in r.err, r.err


def test_more_processes_than_gpus_is_refused_before_any_starts():
    bench = FakeBench(gpus=("NVIDIA H100", "NVIDIA H100"))
    with pytest.raises(EnvironmentProblem, match="--nproc 3: each process needs a GPU of its own, and 2 are"):
        collective.launch(3, ["bench"], device="auto", bench_loader=lambda name: bench)
    with pytest.raises(EnvironmentProblem, match="no CUDA device"):
        collective.launch(2, ["bench"], device="cuda", bench_loader=lambda name: FakeBench(gpus=()))


def test_one_process_says_no_all_reduce_was_measured(airlab_cli, monkeypatch):
    from airlab.bench import plans

    monkeypatch.setitem(plans.PLANS, "quick", TINY.with_(suites=("memory",)))
    r = airlab_cli("bench", "--backend", "torch", "--device", "cpu")
    assert r.code == 0, r.err
    assert "all-reduce: one process: no all-reduce measured (use --nproc N)" in r.out


def test_two_processes_on_gloo_measure_the_all_reduce_and_name_the_slowest_rank(airlab_proc, tmp_path):
    saved = tmp_path / "allreduce.json"
    r = airlab_proc("bench", "--nproc", "2", "--device", "cpu", "--sizes", "1KiB,64KiB", "--json",
                    "--save", saved, timeout=240)
    assert r.code == 0, r.err
    data = json.loads(r.out)  # rank 0's JSON alone on stdout
    assert json.loads(saved.read_text()) == data
    a = data["allreduce"]
    assert a["world_size"] == 2 and a["backend"] == "gloo" and a["device"] == "cpu"
    assert [row["bytes"] for row in a["sizes"]] == [1024, 65536]
    for row in a["sizes"]:
        assert row["busbw"] > 0 and row["algbw"] > 0 and row["busbw"] == pytest.approx(row["algbw"])  # n = 2
        assert len(row["per_rank_median_s"]) == 2 and all(t > 0 for t in row["per_rank_median_s"])
    assert a["straggler"]["rank"] in (0, 1) and a["straggler"]["bytes"] == 65536 and a["straggler"]["lag"] >= 0
    ids = [f["id"] for f in data["figures"]]
    assert ids == ["interconnect/torch/cpu/allreduce-2proc-1024", "interconnect/torch/cpu/allreduce-2proc-65536"]
    assert "2(n-1)/n" in data["method"]["conventions"]["allreduce_processes"]
    progress = [line for line in r.err.splitlines() if line.startswith("bench [")]
    assert len(progress) == 1, r.err  # progress from rank 0 only
