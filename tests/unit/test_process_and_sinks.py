"""The run loop's two seams: the process role (who writes, decisions taken together) and the
metric sinks (every record, the resume and close hooks).

Several processes are played by threads over a fake collective (`FakeCollective`): the role
only needs the Collective protocol, so the same loop code runs as it will over torch.distributed
or tf.distribute. The two "processes" train separately here (no gradient all-reduce): what is
checked is who writes, what every process decides, and that they meet at the same points.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
from rich.console import Console

from airlab.errors import AirlabError, EnvironmentProblem, Interrupted
from airlab.train import loop, process, sinks
from airlab.train.progress import Reporter

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["data.name=shapes", "data.size=512", "data.limit=256", "device=cpu", "train.threads=1"]


# -- a fake collective: N threads, each one "process" -----------------------------------------

class Board:
    """What the threads of a fake run share: a barrier, one slot per rank, and the calls made."""

    def __init__(self, n: int):
        self.n = n
        self.barrier = threading.Barrier(n, timeout=120)  # a mismatched call fails, never hangs
        self.slots: list = [None] * n
        self.calls: list[list[tuple]] = [[] for _ in range(n)]


class FakeCollective:
    """The Collective protocol over threads: what a backend supplies over its process group."""

    def __init__(self, board: Board, rank: int):
        self.board, self.rank, self.world_size = board, rank, board.n

    def _exchange(self, value):
        b = self.board
        b.slots[self.rank] = value
        b.barrier.wait()
        seen = list(b.slots)
        b.barrier.wait()  # every rank has read before any writes the next value
        return seen

    def all_reduce(self, values, op):
        self.board.calls[self.rank].append(("all_reduce", op, len(values)))
        reduce = {"sum": sum, "max": max, "min": min}[op]
        return [reduce(column) for column in zip(*self._exchange(list(values)))]

    def broadcast(self, data: bytes) -> bytes:
        self.board.calls[self.rank].append(("broadcast",))
        return self._exchange(data)[process.MAIN]

    def gather(self, data: bytes) -> list[bytes] | None:
        self.board.calls[self.rank].append(("gather",))
        seen = self._exchange(data)
        return seen if self.rank == process.MAIN else None


def run_ranks(n: int, fn) -> list:
    """fn(role) in n threads named rank0.., each with its Group role; each one's result or exception."""
    board = Board(n)
    out: list = [None] * n

    def target(rank):
        try:
            out[rank] = fn(process.Group(FakeCollective(board, rank)))
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out[rank] = e

    threads = [threading.Thread(target=target, args=(r,), name=f"rank{r}") for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    run_ranks.board = board
    return out


# -- the role ---------------------------------------------------------------------------------

def test_local_role_is_one_process_deciding_alone():
    role = process.Local()
    assert (role.rank, role.world_size, role.is_main) == (0, 1, True)
    assert role.any(True) is True and role.any(False) is False
    assert role.max([2, 0.5]) == [2, 0.5]
    value = {"a": [1, 2]}
    assert role.agree(value) is value
    role.barrier()
    assert role.on_main(lambda x, y=0: x + y, 2, y=3) == 5
    err = EnvironmentProblem("disk full")
    with pytest.raises(EnvironmentProblem) as info:
        role.on_main(lambda: (_ for _ in ()).throw(err))
    assert info.value is err  # unchanged: one process reports its own error


def test_group_decisions_are_the_same_in_every_process():
    def decide(role):
        return (role.rank, role.is_main, role.any(role.rank == 1), role.any(False),
                role.max([role.rank, 5 - role.rank]), role.agree(f"path from rank {role.rank}"))

    results = run_ranks(3, decide)
    assert [r[:2] for r in results] == [(0, True), (1, False), (2, False)]
    assert [r[2:] for r in results] == [(True, False, [2.0, 5.0], "path from rank 0")] * 3


def test_group_on_main_runs_once_and_every_process_gets_its_result():
    ran = []

    def work(role):
        return role.on_main(lambda: ran.append(threading.current_thread().name) or {"run_dir": "/runs/a"})

    assert run_ranks(2, work) == [{"run_dir": "/runs/a"}, {"run_dir": "/runs/a"}]
    assert ran == ["rank0"]


def test_a_failure_on_main_stops_every_process_with_its_exit_code():
    def fail():
        raise EnvironmentProblem("could not save checkpoint step-4: no space left", hint="free disk space")

    main, other = run_ranks(2, lambda role: role.on_main(fail))
    assert isinstance(main, EnvironmentProblem)  # the main process's own error
    assert isinstance(other, process.MainFailed) and isinstance(other, AirlabError)
    assert other.exit_code == 4 and "no space left" in other.message and other.hint == "free disk space"


def test_group_refuses_a_rank_outside_the_world():
    board = Board(2)
    bad = FakeCollective(board, 0)
    bad.rank = 2
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        process.Group(bad)


def test_role_for_asks_the_backend_for_its_collective():
    class NoGroups:  # today's backends: no `collective` primitive
        pass

    class Alone:
        @classmethod
        def collective(cls, config):
            return None  # not started by a launcher

    class One:
        @classmethod
        def collective(cls, config):
            return FakeCollective(Board(1), 0)

    class Two:
        @classmethod
        def collective(cls, config):
            return FakeCollective(Board(2), 1)

    for cls in (NoGroups, Alone, One):
        assert isinstance(process.role_for(cls, None), process.Local)
    role = process.role_for(Two, None)
    assert isinstance(role, process.Group) and (role.rank, role.world_size, role.is_main) == (1, 2, False)


def test_resume_parts_come_from_the_backend_table():
    from airlab.backends import table

    for row in table.ROWS:
        assert set(row.rng_parts) <= loop._RESUME_PARTS
        assert set(row.rng_parts) <= loop._BACKEND_PARTS
    assert {"model", "optimizer", "python_rng", "numpy_rng", "counters"} <= loop._RESUME_PARTS
    assert loop._RESUME_PARTS - loop._BACKEND_PARTS == {"python_rng", "numpy_rng", "counters"}


# -- the run loop under a role ----------------------------------------------------------------

def _config(tmp_path, *overrides):
    from airlab.config import load_config

    return load_config(CONFIGS / "quickstart.yaml",
                       [*TINY, "train.steps=6", "train.log_every=2", "train.eval_every=3", "train.checkpoint_every=3",
                        f"output.runs_root={tmp_path / 'runs'}", *overrides])


def _reporter() -> tuple[Reporter, io.StringIO]:
    out = io.StringIO()
    return Reporter(Console(file=out, width=200), rich_bar=False), out


@pytest.fixture
def writes(monkeypatch):
    """Every write-like call made from a thread named rank1.. (a process other than the main
    one): (what, path)."""
    seen: list[tuple[str, str]] = []

    def follower() -> bool:
        name = threading.current_thread().name
        return name.startswith("rank") and name != "rank0"

    def wrap(module, name, is_write):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            if follower() and is_write(*args, **kwargs):
                seen.append((name, str(args[0]) if args else ""))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    opened = lambda file, mode="r", *a, **k: any(c in str(mode) for c in "wax+")  # noqa: E731
    wrap(builtins, "open", opened)
    wrap(io, "open", opened)
    wrap(os, "open", lambda path, flags, *a, **k: bool(flags & write_flags))
    for name in ("mkdir", "replace", "rename", "unlink", "remove", "rmdir"):
        wrap(os, name, lambda *a, **k: True)
    wrap(shutil, "rmtree", lambda *a, **k: True)
    return seen


def test_two_processes_one_run_directory_written_by_main_only(tmp_path, writes):
    from airlab.backends import backend_class

    backend_class("torch")  # imported once, before the threads
    outputs = {}

    def train(role):
        reporter, out = _reporter()
        outputs[role.rank] = out
        return loop.Trainer(_config(tmp_path), reporter=reporter, role=role).run()

    main, other = run_ranks(2, train)
    assert not isinstance(main, BaseException), main
    assert not isinstance(other, BaseException), other
    run_dir = main.run_dir
    assert other.run_dir == run_dir  # every process agreed on the directory main claimed
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]
    # the other process wrote nothing of the run (the framework's own caches are not the run's)
    assert [w for w in writes if os.path.abspath(w[1]).startswith(str(tmp_path))] == []
    assert outputs[1].getvalue() == ""  # and printed nothing
    assert "step 6/6" in outputs[0].getvalue()
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "env.json", "status.json", "metrics.jsonl", "summary.json", "checkpoints"} <= names
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-3", "step-6"]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert main.summary["steps"] == other.summary["steps"] == 6
    assert other.summary["checkpoint"] == main.summary["checkpoint"] == str(run_dir / "checkpoints" / "step-6")
    calls = run_ranks.board.calls
    assert calls[0] == calls[1] and len(calls[0]) > 6  # they met at the same points, in the same order


def test_a_run_directory_refused_to_main_is_refused_to_every_process(tmp_path):
    from airlab.errors import UsageError

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("the user's\n")
    config = _config(tmp_path)
    main, other = run_ranks(2, lambda role: loop.Trainer(config, run_dir=taken, reporter=_reporter()[0],
                                                         role=role).run())
    assert isinstance(main, UsageError) and main.message == f"--run-dir {taken}: already exists"
    assert isinstance(other, process.MainFailed) and other.exit_code == 2 and main.message in other.message
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


def test_a_signal_in_one_process_stops_every_process_after_the_same_step(tmp_path, monkeypatch):
    from airlab.backends import backend_class

    backend_class("torch")

    class SignalInRank1(loop._Signals):
        """SIGTERM seen by rank 1 alone, at its third step boundary."""

        def __init__(self):
            self._reads = 0
            super().__init__()

        @property
        def received(self):
            if threading.current_thread().name != "rank1":
                return None
            self._reads += 1
            return signal.SIGTERM if self._reads >= 3 else None

        @received.setter
        def received(self, value):
            pass

    monkeypatch.setattr(loop, "_Signals", SignalInRank1)
    config = _config(tmp_path, "train.steps=8", "train.checkpoint_every=8", "train.eval_every=8")
    main, other = run_ranks(2, lambda role: loop.Trainer(config, reporter=_reporter()[0], role=role).run())
    for err in (main, other):
        assert isinstance(err, Interrupted) and err.exit_code == 143, err
        assert "stopped after step 3 and saved" in err.message
    run_dir = next((tmp_path / "runs").iterdir())
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-3"]
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["exit_code"], status["step"]) == ("interrupted", 143, 3)


# -- the sinks --------------------------------------------------------------------------------

class Recorder:
    """A sink that keeps every hook call (a stand-in for a tracker)."""

    instances: list["Recorder"] = []

    def __init__(self, context: sinks.Context):
        self.context = context
        self.calls: list[tuple] = []
        Recorder.instances.append(self)

    def resume(self, resume):
        self.calls.append(("resume", resume))

    def open(self):
        self.calls.append(("open",))

    def write(self, record):
        self.calls.append(("write", record))

    def finish(self, summary):
        self.calls.append(("finish", summary))

    def close(self):
        self.calls.append(("close",))

    @property
    def records(self):
        return [c[1] for c in self.calls if c[0] == "write"]


@pytest.fixture
def recorder(monkeypatch):
    Recorder.instances = []
    monkeypatch.setitem(sinks.SINKS, "recorder", f"{__name__}:Recorder")
    monkeypatch.setattr(sinks, "DEFAULT", (*sinks.DEFAULT, "recorder"))
    return Recorder.instances


def _without_time(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "time"}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_sink_receives_every_record_the_metrics_file_gets(tmp_path, recorder):
    reporter, out = _reporter()
    result = loop.Trainer(_config(tmp_path), reporter=reporter).run()
    (sink,) = recorder
    assert sink.context.run_dir == result.run_dir and sink.context.config.name == "quickstart"
    assert [c[0] for c in sink.calls] == ["open", *["write"] * len(sink.records), "finish", "close"]
    # finish: the summary as written, after the views it names
    assert sink.calls[-2][1] == json.loads((result.run_dir / "summary.json").read_text())
    assert Path(sink.calls[-2][1]["curves"]).is_file()
    written = _metrics(result.run_dir)
    assert [_without_time(r.as_json(0.0)) for r in sink.records] == [_without_time(r) for r in written]
    assert [r.split for r in sink.records] == ["train", "val", "train", "train", "val", "test"]
    # the terminal sink printed one line per record, from the same records
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("step ") for line in lines) == 3
    assert sum(line.startswith("eval step ") for line in lines) == 3


def test_the_resume_hook_gets_the_checkpoint_step_before_any_record(tmp_path, recorder):
    first = loop.Trainer(_config(tmp_path), reporter=_reporter()[0]).run()
    before = _metrics(first.run_dir)
    reporter, out = _reporter()
    resumed = loop.Trainer(_config(tmp_path, "train.steps=9"), resume=first.run_dir, reporter=reporter,
                           allow_config_change=True).run()
    sink = recorder[1]
    kind, info = sink.calls[0]
    assert kind == "resume" and sink.calls[1] == ("open",) and sink.calls[-1] == ("close",)
    assert (info.step, info.checkpoint.name, info.run_dir, info.config_changes) == (
        6, "step-6", first.run_dir, ("train.steps",))
    assert all(r.step > 6 or r.split == "test" for r in sink.records)
    # the metrics file forgot only the first process's test record; the rest is the sink's records
    kept = [r for r in before if r["split"] != "test"]
    assert _metrics(resumed.run_dir) == kept + [
        {**r.as_json(0.0), "time": m["time"]} for r, m in zip(sink.records, _metrics(resumed.run_dir)[len(kept):])]
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["config changed at step 6: train.steps", f"resuming {first.run_dir} from step-6"]


def test_record_as_json_is_the_metrics_file_format():
    train = sinks.Record(step=8, split="train", metrics={"loss": 0.5}, epoch=8 / 3, epoch_index=2, wall=101.23456,
                         lr=0.001, samples_per_s=1234.5678)
    assert json.dumps(train.as_json(100.0)) == (
        '{"step": 8, "epoch": 2.6667, "split": "train", "metrics": {"loss": 0.5}, "lr": 0.001, '
        '"samples_per_s": 1234.57, "time": 1.235}')
    val = sinks.Record(step=8, split="val", metrics={"loss": 0.5, "accuracy": 1.0}, epoch=8 / 3, epoch_index=2,
                       wall=100.5)
    assert list(val.as_json(100.0)) == ["step", "epoch", "split", "metrics", "time"]


def test_names_for_adds_a_configs_trackers_after_the_defaults():
    class Output:
        trackers = ["tensorboard", "metrics"]

    class Config:
        output = Output()

    assert sinks.names_for(Config()) == ("metrics", "terminal", "tensorboard")
    assert sinks.names_for(object()) == sinks.DEFAULT


def test_close_closes_every_sink_and_raises_the_first_failure():
    closed = []

    class Fails:
        def close(self):
            closed.append("fails")
            raise OSError(28, "No space left on device")

    class Fine:
        def close(self):
            closed.append("fine")

    with pytest.raises(OSError, match="No space left"):
        sinks.Sinks([Fails(), Fine()]).close()
    assert closed == ["fails", "fine"]


def test_a_metrics_file_never_opened_closes_quietly(tmp_path):
    sink = sinks.MetricsFile(sinks.Context(run_dir=tmp_path, config=None, reporter=_reporter()[0]))
    sink.close()
    assert not (tmp_path / "metrics.jsonl").exists()
