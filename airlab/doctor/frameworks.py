"""Run the framework probes, each in its own process, all at once, each with a timeout.

A crashing or hanging import is a finding, never a doctor crash: a probe that times out is killed
(its whole process group) and reported with the last stage it reached; one that dies is reported
with its exit status and the tail of its stderr.

Seam for tests: `start(commands, env=...)` takes any {name: argv}; fake probe scripts (hanging,
crashing, printing fixed facts) and fake framework packages on PYTHONPATH drive the real runner.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from airlab.backends import table

MARK = "AIRLAB_PROBE "
PROBE_DIR = Path(__file__).resolve().parent / "probes"
SCRIPTS = {row.name: PROBE_DIR / row.probe for row in table.ROWS}
DEFAULT_TIMEOUT = 30.0

# TensorFlow's log lines that name a missing library or driver (old and new wordings)
TF_LOG_PATTERNS = [
    (re.compile(r"Could not load dynamic library '([^']+)'"), "missing_library"),
    (re.compile(r"Could not find cuda drivers on your machine"), "no_driver"),
    (re.compile(r"Cannot dlopen some GPU libraries"), "dlopen_failed"),
    (re.compile(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file"), "missing_library"),
    (re.compile(r"failed call to cuInit: (\S.*)"), "cuinit_failed"),
    (re.compile(r"Loaded runtime CuDNN library: (\S+) but source was compiled with: (\S+)"), "cudnn_mismatch"),
]


def probe_command(name: str, deep: bool = False, python: str | None = None) -> list[str]:
    return [python or sys.executable, str(SCRIPTS[name]), json.dumps({"deep": deep})]


@dataclass
class Running:
    name: str
    proc: subprocess.Popen | None
    started: float
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def start(commands: dict[str, list[str]], env: dict | None = None) -> dict[str, Running]:
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONUNBUFFERED"] = "1"  # so a killed probe still leaves its last stage behind
    running = {}
    try:
        for name, argv in commands.items():
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, text=True, errors="replace", env=full_env,
                                        start_new_session=True)
                running[name] = Running(name, proc, time.monotonic())
            except OSError as e:
                r = Running(name, None, time.monotonic(), error=f"could not start the probe: {e}")
                r.done.set()
                running[name] = r
    except BaseException:  # interrupted between two starts: stop the ones already running
        kill_all(running)
        raise
    for r in running.values():
        if r.proc is not None:
            threading.Thread(target=_collect, args=(r,), daemon=True).start()
    return running


def _collect(r: Running) -> None:
    try:
        r.stdout, r.stderr = r.proc.communicate()
    finally:
        r.done.set()


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.kill()
        except OSError:
            pass


def kill_all(running: dict[str, Running]) -> None:
    """Stop every probe still running (the doctor was interrupted)."""
    for r in running.values():
        if r.proc is not None and r.proc.poll() is None:
            _kill(r.proc)


def finish(running: dict[str, Running], timeout: float = DEFAULT_TIMEOUT) -> dict[str, dict]:
    """Wait for every probe up to `timeout` seconds from its start; kill the rest. -> results."""
    results = {}
    for name, r in running.items():
        if r.proc is not None:
            left = max(0.0, timeout - (time.monotonic() - r.started))
            if not r.done.wait(left):
                r.timed_out = True
                _kill(r.proc)
                r.done.wait(5)
        results[name] = interpret(r, timeout)
    return results


def parse_stdout(text: str) -> dict | None:
    last = None
    for line in text.splitlines():
        if line.startswith(MARK):
            try:
                last = json.loads(line[len(MARK):])
            except ValueError:
                continue
    return last


def tf_log_findings(stderr: str) -> list[dict]:
    found, seen = [], set()
    for line in stderr.splitlines():
        for pattern, kind in TF_LOG_PATTERNS:
            m = pattern.search(line)
            if m:
                detail = m.group(1) if m.groups() else None
                if (kind, detail) not in seen:
                    seen.add((kind, detail))
                    found.append({"kind": kind, "detail": detail, "line": line.strip()[-300:]})
    return found


def _tail(text: str, n: int = 1500) -> str:
    return text.strip()[-n:]


def interpret(r: Running, timeout: float) -> dict:
    """One probe's outcome: status ok | absent | import_error | timeout | crashed | error."""
    seconds = round(time.monotonic() - r.started, 3)
    if r.error:
        return {"status": "error", "error": r.error, "seconds": seconds}
    data = parse_stdout(r.stdout) or {}
    rc = r.proc.returncode
    res = {"seconds": seconds, "returncode": rc, "stderr_tail": _tail(r.stderr), "data": data,
           "stage": data.get("stage")}
    if r.name == "tensorflow" or "tensorflow" in r.name:
        res["log_findings"] = tf_log_findings(r.stderr)
    status = data.get("status")
    if r.timed_out:
        res["status"] = "timeout"
        res["error"] = f"no result after {timeout:g} s (stuck at stage '{data.get('stage', 'start')}'); killed"
    elif status in ("absent", "import_error"):
        res["status"] = status
        res["error"] = data.get("error")
    elif status == "ok":
        res["status"] = "ok"
        if rc != 0:  # finished every stage, then died on the way out (e.g. in CUDA teardown)
            res["exit_error"] = f"exited with status {rc} after finishing"
    elif rc is not None and rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = f"signal {-rc}"
        res["status"] = "crashed"
        res["error"] = f"the probe process died from {sig} at stage '{data.get('stage', 'start')}'"
    else:
        res["status"] = "crashed"
        last = _tail(r.stderr, 300).splitlines()[-1:] or [""]
        res["error"] = (f"the probe exited with status {rc} at stage '{data.get('stage', 'start')}'"
                        + (f": {last[0]}" if last[0] else ""))
    return res
