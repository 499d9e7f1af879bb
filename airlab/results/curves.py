"""Learning curves from metrics.jsonl: read them (`read_series`), decide what each panel shows
(`panels`), and draw one PNG (`draw`, `draw_run`) with matplotlib's Agg canvas (no display, no
pyplot state, safe in threads).

Reading never imports matplotlib; drawing imports it on first use. The split of the work is so
tests (and `airlab plot --json`) can check what will be drawn without looking at pixels:

    series = read_series(run_dir)            # {"train/loss": {"step", "epoch", "value"}, ...}
    plan = panels({"run": series}, ["loss"]) # [{"metric": "loss", "log": False, "lines": [...]}]
    render(plan, out)                        # the PNG, written atomically

Panels: one per metric name (loss, accuracy, bpc, recon, kl, ...) holding every selected split
of every run: train thin and light, val solid with markers, test a star at its step; one colour
per run. `lr` is read (train lines carry it) but drawn only when asked for (`--metric lr`).
Log y: "auto" where a panel's values are all positive and span more than a decade (max/min >
10), except fractions such as accuracy, which read best on a linear axis; "on" where all
values are positive; a panel with a value <= 0 is always linear. Smoothing is TensorBoard's:
an exponential moving average, debiased, of the train curves, the raw curve kept faint behind.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from airlab.errors import UsageError

X_AXES = ("step", "epoch")
LOG_MODES = ("auto", "on", "off")
MAX_POINTS = 2000  # a drawn line keeps at most this many points (the first and the last always)
NOT_CURVES = ("samples_per_s", "time")  # numbers on a record that are not learning curves
HIDDEN_BY_DEFAULT = ("lr",)  # read, drawn only when asked for
FRACTIONS = ("accuracy", "acc", "top1", "top5", "top5_accuracy")  # never log in "auto"
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 3}


class NothingToDraw(UsageError, ValueError):
    """No record to draw. A UsageError for the CLI's boundary and a ValueError for the run loop,
    which prints a message instead of failing the run."""


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _step(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def read_series(run_dir: Path) -> dict[str, dict]:
    """The learning curves of one run, from its metrics.jsonl.

    Returns {"split/metric": {"split", "metric", "step" (int64 array), "epoch" (float64, NaN
    where a record has none), "value" (float64)}} in the order the series first appear; steps
    ascending, each once (a step logged twice for a split keeps its last value). Train lines
    give "train/lr" too; `samples_per_s` and `time` are not curves. Lines that are not JSON
    records (a truncated last line, garbage) are skipped. A missing directory or metrics.jsonl
    is a UsageError naming it; a file without records gives {}.
    """
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory",
                         hint="give a run directory that `airlab train` wrote (list them with `airlab runs`)")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no metrics.jsonl in {run_dir}: not a run directory, or the run has not logged yet",
                         hint="give a run directory that `airlab train` wrote (list them with `airlab runs`)") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror or e})",
                         hint="check the file's permissions") from None
    points: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        split, step, metrics = record.get("split"), _step(record.get("step")), record.get("metrics")
        if not isinstance(split, str) or not split or step is None or not isinstance(metrics, dict):
            continue
        epoch = _number(record.get("epoch"))
        epoch = math.nan if epoch is None else epoch
        items = list(metrics.items())
        if split == "train" and "lr" in record:
            items.append(("lr", record["lr"]))
        for name, value in items:
            value = _number(value)
            if value is None or not isinstance(name, str) or name in NOT_CURVES:
                continue
            points.setdefault((split, name), {})[step] = (epoch, value)
    series = {}
    for (split, name), by_step in points.items():
        steps = sorted(by_step)
        series[f"{split}/{name}"] = {
            "split": split, "metric": name,
            "step": np.asarray(steps, dtype=np.int64),
            "epoch": np.asarray([by_step[s][0] for s in steps], dtype=np.float64),
            "value": np.asarray([by_step[s][1] for s in steps], dtype=np.float64),
        }
    return series


def ema(values, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average with weight `weight` in [0, 1),
    debiased (divided by 1 - weight**n, so the first points are not pulled toward zero).
    Non-finite values pass through and do not enter the average."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    last, count = 0.0, 0
    for i, v in enumerate(values.tolist()):
        if not math.isfinite(v):
            out[i] = v
            continue
        last = last * weight + (1.0 - weight) * v
        count += 1
        out[i] = last / (1.0 - weight ** count)
    return out


def decimate(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` evenly spaced points of a line, the first and the last always among them."""
    if len(x) <= limit:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, limit).astype(np.int64))
    return x[keep], y[keep]


def run_labels(runs: list[Path]) -> list[str]:
    """A short, distinct name per run: the directory name; "parent/name" where two share a name
    and their parents tell them apart; else a counter ("name (2)")."""
    runs = [Path(r) for r in runs]
    names = [r.name or str(r) for r in runs]
    longer = [f"{r.parent.name}/{r.name}" for r in runs]
    labels = [longer[i] if names.count(n) > 1 and longer.count(longer[i]) == 1 else n for i, n in enumerate(names)]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def check_options(x: str, smooth: float, log: str) -> None:
    if x not in X_AXES:
        raise UsageError(f"--x {x!r}: expected step or epoch", hint="e.g. --x epoch")
    if not (isinstance(smooth, (int, float)) and 0.0 <= smooth < 1.0):
        raise UsageError(f"--smooth {smooth!r}: expected a number in [0, 1)",
                         hint="0 draws the train curves raw; 0.6 to 0.9 smooths noisy ones (as TensorBoard's slider)")
    if log not in LOG_MODES:
        raise UsageError(f"--log {log!r}: expected auto, on or off",
                         hint="auto uses a log y axis where a panel's values span more than a decade")


def _selection(series_by_run: dict[str, dict], metrics: list[str] | None) -> list[tuple[str, set[str] | None]]:
    """(metric name, the splits asked for or None for all) per panel, in order."""
    keys = [k for series in series_by_run.values() for k in series]
    names = list(dict.fromkeys(series["metric"] for s in series_by_run.values() for series in s.values()))
    if not metrics:
        return [(n, None) for n in names if n not in HIDDEN_BY_DEFAULT]
    wanted: dict[str, set[str] | None] = {}
    for item in metrics:
        item = item.strip()
        if "/" in item:
            split, name = item.split("/", 1)
            found = item in keys
        else:
            split, name = None, item
            found = name in names
        if not found:
            listed = ", ".join(names) if names else "none"
            per_split = ", ".join(sorted(set(keys))[:12]) + (", ..." if len(set(keys)) > 12 else "")
            raise UsageError(f"--metric {item!r}: no run logged it; available: {listed} (or one split's: {per_split})",
                             hint="a bare name (loss) draws every split of it; split/name (val/loss) one split")
        if split is None or wanted.get(name, set()) is None:
            wanted[name] = None
        else:
            wanted.setdefault(name, set()).add(split)
    return list(wanted.items())


def _log_scale(metric: str, values: list[np.ndarray], mode: str) -> bool:
    finite = [v[np.isfinite(v)] for v in values]
    finite = np.concatenate(finite) if finite else np.empty(0)
    if mode == "off" or finite.size == 0 or finite.min() <= 0:
        return False
    if mode == "on":
        return True
    return bool(metric not in FRACTIONS and finite.max() / finite.min() > 10.0)


def _epochs_per_step(series_by_run: dict[str, dict]) -> float | None:
    """Epochs per optimizer step when every run has the same (steps on the x axis then carry an
    epoch axis on top); None when the runs differ or no record has an epoch."""
    rates = set()
    for series in series_by_run.values():
        for s in series.values():
            keep = np.isfinite(s["epoch"]) & (s["step"] > 0) & (s["epoch"] > 0)
            if keep.any():
                i = int(np.flatnonzero(keep)[-1])  # the last point: epochs are rounded to 4 places
                rates.add(round(float(s["epoch"][i]) / float(s["step"][i]), 6))
    return rates.pop() if len(rates) == 1 else None


def panels(series_by_run: dict[str, dict], metrics: list[str] | None = None, *, x: str = "step",
           smooth: float = 0.0, log: str = "auto", max_points: int = MAX_POINTS) -> list[dict]:
    """What will be drawn: one panel per metric name, each {"metric", "log", "xlabel", "lines"}, a
    line {"run", "run_index", "split", "role", "x", "y", "label", "smoothed"}; role is "train"
    (with "train-raw" behind it when smoothing), "val" (any split not train or test) or "test" (points).

    `series_by_run` maps a run's label to its `read_series`. `metrics` picks panels: "split/name"
    one split's series, a bare name every split; None: every metric but lr. An unknown metric is
    a UsageError naming those available; no record at all is NothingToDraw (a ValueError)."""
    check_options(x, smooth, log)
    if not any(series_by_run.values()):
        raise NothingToDraw("nothing to draw: " + ("the run has" if len(series_by_run) == 1 else "none of the runs has")
                            + " a metric record in metrics.jsonl yet",
                            hint="curves appear once a run has logged (train.log_every steps)")
    several = len(series_by_run) > 1
    plan = []
    for metric, splits in _selection(series_by_run, metrics):
        lines = []
        for index, (run, series) in enumerate(series_by_run.items()):
            chosen = [s for s in series.values() if s["metric"] == metric and (splits is None or s["split"] in splits)]
            chosen.sort(key=lambda s: _SPLIT_ORDER.get(s["split"], 2))
            for s in chosen:
                xs, ys = (s["step"], s["value"]) if x == "step" else (s["epoch"], s["value"])
                if x == "epoch":
                    keep = np.isfinite(xs)
                    xs, ys = xs[keep], ys[keep]
                if xs.size == 0:
                    continue
                split = s["split"]
                role = "train" if split == "train" else "test" if split == "test" else "val"
                label = f"{run} {split}" if several else split
                base = {"run": run, "run_index": index, "split": split}
                smoothed = role == "train" and smooth > 0
                if smoothed:
                    raw_x, raw_y = decimate(xs, ys, max_points)
                    lines.append({**base, "role": "train-raw", "label": None, "smoothed": False,
                                  "x": raw_x, "y": raw_y})
                    ys = ema(ys, smooth)
                    label += f" (smoothed {smooth:g})"
                if role != "test":
                    xs, ys = decimate(xs, ys, max_points)
                lines.append({**base, "role": role, "label": label, "smoothed": smoothed, "x": xs, "y": ys})
        if lines:
            plan.append({"metric": metric, "xlabel": x, "lines": lines,
                         "log": _log_scale(metric, [ln["y"] for ln in lines], log),
                         "epochs_per_step": _epochs_per_step(series_by_run) if x == "step" else None})
    if not plan:
        raise NothingToDraw("nothing to draw: no points for " + ", ".join(metrics or ["any metric"])
                            + (" with an epoch" if x == "epoch" else ""),
                            hint="choose another --metric" + (" or --x step" if x == "epoch" else ""))
    return plan


def render(plan: list[dict], out: Path, *, title: str | None = None) -> Path:
    """Draw `panels(...)` into one PNG at `out`, written atomically; returns `out`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from airlab.train.rundir import atomic_write

    out = Path(out)
    n = len(plan)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    top = (0.35 if title else 0.0) + (0.4 if any(p.get("epochs_per_step") for p in plan) else 0.0)  # epoch axis
    width, height = 4.2 * ncols, 3.1 * nrows + top
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    # fixed margins (inches turned into fractions): cheaper than a layout engine, the same look
    fig.subplots_adjust(left=0.65 / width, right=1 - 0.15 / width, bottom=0.5 / height,
                        top=1 - (0.3 + top) / height, wspace=0.3, hspace=0.45 + (0.25 if top else 0.0))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, plan):
        for line in panel["lines"]:
            color = f"C{line['run_index'] % 10}"
            role = line["role"]
            if role == "train-raw":
                ax.plot(line["x"], line["y"], color=color, linewidth=0.6, alpha=0.2)
            elif role == "train":
                ax.plot(line["x"], line["y"], color=color, linewidth=1.0 if line["smoothed"] else 0.9,
                        alpha=0.8 if line["smoothed"] else 0.55, label=line["label"])
            elif role == "val":
                every = max(1, len(line["x"]) // 40)
                ax.plot(line["x"], line["y"], color=color, linewidth=1.6, marker="o", markersize=3,
                        markevery=every, label=line["label"])
            else:
                ax.plot(line["x"], line["y"], color=color, linestyle="none", marker="*", markersize=10,
                        markeredgecolor="black", markeredgewidth=0.5, label=line["label"])
        if panel["log"]:
            ax.set_yscale("log")
        ax.set_title(panel["metric"], fontsize=10)
        ax.set_xlabel(panel["xlabel"], fontsize=9)
        ax.tick_params(labelsize=8)
        rate = panel.get("epochs_per_step")
        if rate:  # the same steps counted in epochs, along the top
            top_axis = ax.secondary_xaxis("top", functions=(lambda v, r=rate: v * r, lambda v, r=rate: v / r))
            top_axis.set_xlabel("epoch", fontsize=8)
            top_axis.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3, linewidth=0.5)
        if any(line["label"] for line in panel["lines"]):
            ax.legend(fontsize=7, loc="best", framealpha=0.7)
    for ax in axes[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write(out, buffer.getvalue())
    return out


def run_title(run_dir: Path) -> str:
    """"<run directory> · <model> · <data>" from summary.json, else config.yaml (what is readable)."""
    run_dir = Path(run_dir)
    model = data = None
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        if isinstance(summary, dict):
            model = summary.get("model")
            data = (summary.get("data") or {}).get("name") if isinstance(summary.get("data"), dict) else None
    except (OSError, ValueError):
        pass
    if model is None or data is None:
        try:
            import yaml

            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        except Exception:  # unreadable or not YAML: the title is a nicety
            config = None
        if isinstance(config, dict):
            m, d = config.get("model"), config.get("data")
            model = model if model is not None else (m.get("name") if isinstance(m, dict) else None)
            data = data if data is not None else (d.get("name") if isinstance(d, dict) else None)
    return " · ".join(str(p) for p in (run_dir.resolve().name, model, data) if p)


def draw(runs: list[Path], out: Path, *, metrics: list[str] | None = None, x: str = "step",
         smooth: float = 0.0, log: str = "auto", title: str | None = None) -> Path:
    """One PNG of the learning curves of `runs` (one panel per metric, every run's train, val and
    test in it, one colour per run), written atomically to `out`; returns `out`. The title of a
    single run defaults to its name, model and data. Raises UsageError for a path that is not a
    run or an unknown metric, NothingToDraw (a ValueError) when there is no record."""
    runs = [Path(r) for r in runs]
    check_options(x, smooth, log)
    series = {label: read_series(run) for label, run in zip(run_labels(runs), runs)}
    plan = panels(series, metrics, x=x, smooth=smooth, log=log)
    if title is None and len(runs) == 1:
        title = run_title(runs[0])
    return render(plan, out, title=title)


def draw_run(run_dir: Path, out: Path) -> Path:
    """What a finished run calls to write `<run_dir>/curves.png` (`out`) with the defaults. A run
    that logged nothing (no metrics.jsonl, no record) raises NothingToDraw, a ValueError."""
    if not (Path(run_dir) / "metrics.jsonl").is_file():
        raise NothingToDraw(f"nothing to draw: no metrics.jsonl in {run_dir}")
    return draw([run_dir], out)


__all__ = ["NothingToDraw", "check_options", "decimate", "draw", "draw_run", "ema", "panels", "read_series", "render",
           "run_labels", "run_title"]
