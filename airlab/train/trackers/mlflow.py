"""The MLflow tracker: one MLflow run per airlab run, through an explicit MlflowClient.

Where: the tracking URI is `MLFLOW_TRACKING_URI` when set, else `sqlite:///<runs root>/mlflow.db`,
the runs root being the run directory's parent (what is real on disk, whatever the cwd was).
The experiment is `MLFLOW_EXPERIMENT_NAME`, else "airlab"; when airlab creates it in a sqlite store
(its default one, or one named by the URI) its artifacts go beside the database, in
`<runs root>/mlflow-artifacts` for the default store, so nothing lands in ./mlruns of the cwd; an
experiment airlab creates is tagged mlflow.experimentKind = custom_model_development (model
training; MLflow 3.17's UI still opens on its GenAI pages until "Model training" is picked at its top
left, or the page is opened with ?workflowType=machine_learning). The global
fluent state of `mlflow` (mlflow.start_run, mlflow.set_tracking_uri) is never touched.

What: the run is named after the run directory and tagged airlab.run_dir, airlab.model,
airlab.backend, airlab.data; its params are the flattened resolved config ("model.hidden" =
"[256, 128]"); its metrics are every record's points named as TensorBoard's tags (`train/loss`,
`val/accuracy`, `train/lr`, ...) at the optimizer step; a completed run adds summary.json,
config.yaml, env.json, curves.png, confusion.json and samples/ as artifacts and ends FINISHED.
A run that stops early ends KILLED (a signal, a closed output) or FAILED (anything else).

Speed: a record written during training is only queued; a thread of this sink sends the queue
with one log_batch every INTERVAL_S seconds (sooner when it grows), and `finish`/`close` drain it.
A send into the sqlite store costs about 8 ms of CPU plus 0.13 ms per point (measured: SQLAlchemy's
ORM, holding the GIL the training loop also needs), hence one send per two seconds, not per record.
A failed send is raised on the next write or at close: a run never loses its tracking silently.

The run id is kept in the run directory's mlflow.json (tracking URI, experiment, run id). A
resumed run (or a second export) replaces that MLflow run: MLflow cannot delete points, so the old
run is deleted and a new one is made from metrics.jsonl, which the metrics sink has cut back to
the resume step, before the run goes on: each step is in the history once.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from airlab.errors import EnvironmentProblem, Interrupted, OutputClosed, first_line
from airlab.results import export as replay
from airlab.signals import SignalReceived
from airlab.train import rundir
from airlab.train.sinks import Context, Record, Resume

STATE = "mlflow.json"  # in the run directory: where this run's MLflow run is
DEFAULT_EXPERIMENT = "airlab"
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}  # how the MLflow 3 UI shows it
INTERVAL_S = 2.0  # the queue is sent about this often while training
WAKE_AT = 500  # ... or as soon as this many records wait
MAX_METRICS = 1000  # MLflow's log_batch limits
MAX_PARAMS = 100
MAX_PARAM_LENGTH = 6000
RETRIES = (0.5, 1.0, 2.0)  # seconds between the tries of one send (a busy sqlite file, a server restarting)
_KILLED = (SignalReceived, KeyboardInterrupt, Interrupted, OutputClosed)


def default_uri(run_dir: Path) -> str:
    """sqlite:///<absolute runs root>/mlflow.db, the runs root being the run directory's parent."""
    return f"sqlite:///{Path(run_dir).resolve().parent / 'mlflow.db'}"


def tracking_uri(run_dir: Path, given: str | None = None) -> str:
    return given or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(run_dir)


def read_state(run_dir: Path) -> dict | None:
    """The run's mlflow.json, or None when there is none (or it cannot be read)."""
    try:
        state = json.loads((Path(run_dir) / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("run_id"), str) else None


@contextlib.contextmanager
def _quiet_logs():
    """MLflow's INFO lines as it creates a sqlite store's tables are not the run's business."""
    names = ("mlflow.store.db.utils", "mlflow.store.sqlalchemy_store", "alembic", "alembic.runtime.migration")
    before = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


class MLflow:
    """One MLflow run per airlab run (see the module's docstring). `tracking_uri` overrides
    MLFLOW_TRACKING_URI (airlab export --tracking-uri)."""

    def __init__(self, context: Context, tracking_uri: str | None = None):
        replay.require("mlflow", "mlflow")
        self.run_dir = Path(context.run_dir)
        self.config = context.config
        self._message = context.reporter.message
        self._given_uri = tracking_uri
        self.uri: str | None = None
        self.client = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.replaces: str | None = None  # the MLflow run this one replaces (resume, export again)
        self.end_status: str | None = None  # set by export: how the exported run ended
        self.started: float | None = None  # set by export: when the run began (else now)
        self._replay_upto: int | None = None
        self._finished = False
        self._last_wall = 0.0
        # the queue and the thread that sends it
        self._pending: collections.deque[Record] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- the Sink protocol -------------------------------------------------------------------------
    def resume(self, resume: Resume) -> None:
        """Forget what came after the resume step: the old MLflow run goes, and `open` makes a new
        one from metrics.jsonl (the metrics sink has cut it back to resume.step by now)."""
        self.purge()
        self._replay_upto = resume.step

    def open(self) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(self.run_dir, self._given_uri)
        records = ([] if self._replay_upto is None
                   else replay.run_records(self.run_dir, upto=self._replay_upto, test=False))
        started = self.started
        if started is None and self._replay_upto is not None:
            started = replay.started_at(self.run_dir)
        try:
            with _quiet_logs():
                self.client = MlflowClient(tracking_uri=self.uri)
                self.experiment_id = self._experiment()
                tags = {"airlab.run_dir": str(self.run_dir.resolve()), **self._facts()}
                if self.replaces:
                    tags["airlab.replaces"] = self.replaces
                run = self.client.create_run(self.experiment_id, run_name=self.run_dir.name, tags=tags,
                                             start_time=_ms(started) if started else None)
                self.run_id = run.info.run_id
                rundir.write_json(self.run_dir / STATE, {
                    "tracking_uri": self.uri, "experiment_id": self.experiment_id,
                    "experiment": self._experiment_name(), "run_id": self.run_id, "run_name": self.run_dir.name})
                self._log_params()
                self._send(records)
        except EnvironmentProblem:
            raise
        except Exception as e:
            raise self._failure(e, "cannot start a run") from None
        self._thread = threading.Thread(target=self._sender, name="airlab-mlflow", daemon=True)
        self._thread.start()
        if self.started is None:  # a training run says where it is tracked (an export says so itself)
            self._message(f"mlflow: run {self.run_dir.name} ({self.run_id}) in experiment "
                          f"{self._experiment_name()} at {self.uri}")

    def write(self, record: Record) -> None:
        if self._error is not None:  # the thread's last send failed: the run stops here
            error, self._error = self._error, None
            self._pending.clear()
            raise self._failure(error)
        self._pending.append(record)
        if len(self._pending) >= WAKE_AT:
            self._wake.set()

    def finish(self, summary: dict) -> None:
        """Send what is queued, add the run's files as artifacts and end the run FINISHED."""
        if self.run_id is None:
            return
        self._drain()
        try:
            for name in ("summary.json", "config.yaml", "env.json", "curves.png", "confusion.json"):
                if (self.run_dir / name).is_file():
                    self.client.log_artifact(self.run_id, str(self.run_dir / name))
            if (self.run_dir / "samples").is_dir() and any((self.run_dir / "samples").iterdir()):
                self.client.log_artifacts(self.run_id, str(self.run_dir / "samples"), "samples")
            if summary.get("status"):
                self.client.set_tag(self.run_id, "airlab.status", str(summary["status"]))
            self.client.set_terminated(self.run_id, "FINISHED", end_time=self._end_time())
        except Exception as e:
            raise self._failure(e, "cannot store the run's artifacts") from None
        self._finished = True

    def close(self) -> None:
        """Send what is queued and end an unfinished run: KILLED after a signal or a closed
        output, FAILED after an error. A failure here is raised when the run ended well, and only
        told when the run is failing already (its own error is the one to report)."""
        failing = sys.exception()  # close() runs in the loop's `finally`
        problem: EnvironmentProblem | None = None
        try:
            self._drain()
        except EnvironmentProblem as e:
            problem = e
        if self.run_id is not None and not self._finished:
            status = self.end_status or ("FAILED" if failing is not None and not isinstance(failing, _KILLED)
                                         else "KILLED")
            try:
                self.client.set_terminated(self.run_id, status, end_time=self._end_time())
            except Exception as e:
                problem = problem or self._failure(e, "cannot end the run")
            self._finished = True
        if problem is not None:
            if failing is None:
                raise problem
            self._message(f"{problem.message}; {problem.hint}")

    # -- for export and the tests --------------------------------------------------------------------
    def purge(self) -> None:
        """Delete the MLflow run this run directory names in mlflow.json (what a previous process
        or export made) when it is in the store this one writes to, and forget it. A run in
        another store is left there (it duplicates nothing in this one); a store that is gone, or
        a run already deleted, is fine; a run that cannot be deleted is told, and left."""
        state = read_state(self.run_dir)
        if state is None:
            return
        uri = tracking_uri(self.run_dir, self._given_uri)
        old_uri = state.get("tracking_uri") if isinstance(state.get("tracking_uri"), str) else uri
        gone = old_uri.startswith("sqlite:///") and not Path(old_uri[len("sqlite:///"):]).is_file()
        if old_uri != uri:
            self._message(f"mlflow: the run's earlier MLflow run {state['run_id']} stays at {old_uri}; this one "
                          f"goes to {uri}")
        elif not gone:  # (a client on a missing sqlite file would create one)
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient

            try:
                with _quiet_logs():
                    client = MlflowClient(tracking_uri=old_uri)
                    if client.get_run(state["run_id"]).info.lifecycle_stage != "deleted":
                        client.delete_run(state["run_id"])
            except MlflowException as e:
                if getattr(e, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    self._message(f"mlflow: the previous run {state['run_id']} at {old_uri} was not deleted "
                                  f"({first_line(e)}); delete it in MLflow")
            except Exception as e:
                self._message(f"mlflow: the previous run {state['run_id']} at {old_uri} was not deleted "
                              f"({type(e).__name__}: {first_line(e)}); delete it in MLflow")
        self.replaces = state["run_id"] if old_uri == uri else None
        try:
            (self.run_dir / STATE).unlink()
        except FileNotFoundError:
            pass

    def where(self) -> dict:
        uri = self.uri or tracking_uri(self.run_dir, self._given_uri)
        view = f"mlflow ui --backend-store-uri {uri}" if not uri.startswith(("http://", "https://")) else uri
        return {"tracking_uri": uri, "experiment": self._experiment_name(), "experiment_id": self.experiment_id,
                "run_id": self.run_id, "run_name": self.run_dir.name, "view": view}

    # -- inside ------------------------------------------------------------------------------------
    def _experiment_name(self) -> str:
        return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self._experiment_name()
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = None
            if self.uri.startswith("sqlite:///"):  # a local store: artifacts beside it, not in ./mlruns
                location = (Path(self.uri[len("sqlite:///"):]).parent / "mlflow-artifacts").as_uri()
            try:
                # says what kind of experiment it is to MLflow 3's UI (model training, not GenAI)
                return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
            except MlflowException:  # another run created it meanwhile
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise EnvironmentProblem(f"output.trackers: mlflow experiment {name!r} at {self.uri} is deleted",
                                     hint=f"restore it (mlflow experiments restore --experiment-id "
                                          f"{experiment.experiment_id}) or set MLFLOW_EXPERIMENT_NAME to another name")
        return experiment.experiment_id

    def _facts(self) -> dict:
        config = replay.config_dict(self.config)
        model = config.get("model") if isinstance(config.get("model"), dict) else {}
        data = config.get("data") if isinstance(config.get("data"), dict) else {}
        facts = {"airlab.model": model.get("name"), "airlab.backend": config.get("backend"),
                 "airlab.data": data.get("name")}
        return {k: str(v) for k, v in facts.items() if v is not None}

    def _log_params(self) -> None:
        from mlflow.entities import Param

        params = [Param(k, (v if isinstance(v, str) else json.dumps(v))[:MAX_PARAM_LENGTH])
                  for k, v in replay.flat_config(self.config).items()]
        for i in range(0, len(params), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=params[i:i + MAX_PARAMS])

    def _send(self, records: list[Record]) -> None:
        """Log the records' points, in batches MLflow accepts, trying each batch a few times."""
        from mlflow.entities import Metric

        metrics = []
        for record in records:
            stamp = _ms(record.wall)
            self._last_wall = max(self._last_wall, record.wall)
            metrics += [Metric(tag, value, stamp, record.step) for tag, value in replay.scalars(record)]
        for i in range(0, len(metrics), MAX_METRICS):
            for wait in (*RETRIES, None):
                try:
                    self.client.log_batch(self.run_id, metrics=metrics[i:i + MAX_METRICS])
                    break
                except Exception:
                    if wait is None:
                        raise
                    time.sleep(wait)

    def _sender(self) -> None:
        """The thread: every INTERVAL_S (or when woken) send what is queued; stop when told,
        after a last send."""
        while True:
            self._wake.wait(INTERVAL_S)
            self._wake.clear()
            stopping = self._stopping  # read before taking the queue: nothing is written after it is set
            batch = []
            while self._pending:
                batch.append(self._pending.popleft())
            if batch:
                try:
                    self._send(batch)
                except BaseException as e:
                    self._error = e
                    return
            if stopping:
                return

    def _drain(self) -> None:
        """Stop the thread after it has sent the queue; raise what a send met."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            self._pending.clear()
            raise self._failure(error)

    def _end_time(self) -> int:
        """Now, or for an export the time of the run's last record."""
        return _ms(self._last_wall if self.started is not None and self._last_wall else time.time())

    def _failure(self, error: BaseException, what: str = "cannot log the run's metrics") -> EnvironmentProblem:
        return EnvironmentProblem(
            f"output.trackers: mlflow {what} at {self.uri}: {type(error).__name__}: {first_line(error)}",
            hint=f"check MLFLOW_TRACKING_URI and the store; metrics.jsonl is complete: airlab export {self.run_dir} "
                 "--to mlflow sends the run again")


__all__ = ["MLflow", "STATE", "default_uri", "read_state", "tracking_uri"]
