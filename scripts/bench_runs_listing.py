#!/usr/bin/env python
"""How long `airlab runs` takes over many runs (issue 13: a thousand in well under a second).

Writes N run directories (config.yaml, status.json, summary.json, a metrics.jsonl of 200 lines;
a tenth of them without a summary, as interrupted runs are, so their metrics are read) into a
temporary runs root, then times `airlab.results.runs.list_runs` + `select` in this process (best
of 5) and the whole command (`python -m airlab runs ROOT --json`, start-up included, best of 3),
and checks that the command imported no framework.

    python scripts/bench_runs_listing.py [--runs 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make(root: Path, n: int) -> None:
    metrics = "".join(json.dumps({"step": s, "epoch": 0, "split": "train", "metrics": {"loss": 1.0 / s},
                                  "lr": 1e-3, "samples_per_s": 1000.0, "time": 0.0}) + "\n" for s in range(1, 201))
    for i in range(n):
        run = root / f"run-{i:05d}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"name: run\nseed: {i}\nbackend: torch\nmodel:\n  name: mlp\ndata:\n  name: shapes\n")
        (run / "metrics.jsonl").write_text(metrics)
        finished = i % 10 != 0
        (run / "status.json").write_text(json.dumps({"status": "completed" if finished else "interrupted",
                                                     "step": 200, "started": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}"}))
        if finished:
            (run / "summary.json").write_text(json.dumps({
                "model": "mlp", "backend": "torch", "status": "completed", "steps": 200, "samples_per_s": 1000.0 + i,
                "wall_time_s": 10.0, "data": {"name": "shapes"}, "final": {"val": {"loss": 1.0 / (i + 1)}},
                "best": {"metric": "val/loss", "mode": "min", "value": 1.0 / (i + 1), "step": 200}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from airlab.results import runs as results

    with tempfile.TemporaryDirectory(prefix="airlab-bench-runs-") as tmp:
        root = Path(tmp) / "runs"
        make(root, args.runs)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            rows = results.select(results.list_runs(root), ["val/loss<0.5"], "-samples_per_s")
            best = min(best, time.perf_counter() - t0)
        probe = ("import sys, runpy; sys.argv = ['airlab', 'runs', %r, '--json'];\n"
                 "import airlab.cli.main as m; code = m.run(sys.argv[1:]);\n"
                 "heavy = [x for x in ('torch', 'tensorflow') if x in sys.modules];\n"
                 "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')" % str(root))
        whole = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
            whole = min(whole, time.perf_counter() - t0)
        listed = len(json.loads(proc.stdout))
        heavy = proc.stderr.strip().splitlines()[-1].split("=", 1)[1]
        print(f"{args.runs:,} runs ({args.runs // 10:,} without a summary): list + filter + sort in "
              f"{best * 1000:.0f} ms ({len(rows):,} kept); the whole command (start-up included) "
              f"{whole * 1000:.0f} ms, {listed:,} rows; frameworks imported: {heavy or 'none'}")


if __name__ == "__main__":
    main()
