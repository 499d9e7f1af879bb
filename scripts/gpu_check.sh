#!/usr/bin/env bash
# GPU check: run on a machine with an NVIDIA GPU, from the repository root, in airlab's environment.
#
#   scripts/gpu_check.sh [OUT_DIR]        (default OUT_DIR: gpu-check-<time>; PYTHON=... to pick the interpreter)
#
# Runs, each under its own time limit (about 5 minutes in all):
#   1. nvidia-smi (the driver's view)                         -> nvidia-smi.csv
#   2. airlab doctor --json, if this airlab has `doctor`      -> doctor.json, doctor.err
#   3. airlab bench --quick --json --verify                   -> bench.json, bench.err (progress)
#   4. the GPU-marked tests: pytest -m gpu                    -> pytest-gpu.txt, pytest-gpu.xml
# and prints a short table last (also written to summary.txt). Every step runs even if one before
# it failed; the exit status is 0 only when all of them passed.
set -u

OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python}
mkdir -p "$OUT"
echo "gpu_check: writing to $OUT" >&2

status() { # name rc
    case "$2" in
        0) echo "$1 ok" ;;
        124) echo "$1 TIMEOUT" ;;
        skipped) echo "$1 skipped" ;;
        *) echo "$1 FAILED (exit $2)" ;;
    esac >>"$OUT/steps.txt"
}
: >"$OUT/steps.txt"
overall=0

# 1. the driver
if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 30 nvidia-smi --query-gpu=index,name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max,power.limit \
        --format=csv >"$OUT/nvidia-smi.csv" 2>&1
    rc=$?
else
    echo "nvidia-smi not found" >"$OUT/nvidia-smi.csv"
    rc=127
fi
status nvidia-smi "$rc"
[ "$rc" = 0 ] || overall=1

# 2. doctor, if this airlab has it
if "$PY" -m airlab doctor --help >/dev/null 2>&1; then
    timeout 60 "$PY" -m airlab doctor --json >"$OUT/doctor.json" 2>"$OUT/doctor.err"
    rc=$?
    status doctor "$rc"
    [ "$rc" = 0 ] || overall=1
else
    status doctor skipped
fi

# 3. the quick bench, with a plain framework matmul loop timed beside every matmul shape
timeout 150 "$PY" -m airlab bench --quick --json --verify >"$OUT/bench.json" 2>"$OUT/bench.err"
rc=$?
status bench "$rc"
[ "$rc" = 0 ] || overall=1

# 4. the GPU-marked tests
timeout 90 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml="$OUT/pytest-gpu.xml" >"$OUT/pytest-gpu.txt" 2>&1
rc=$?
status "pytest -m gpu" "$rc"
[ "$rc" = 0 ] || overall=1

# the table, last
"$PY" - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"== gpu_check: {out}")
for line in (out / "steps.txt").read_text().splitlines():
    print(f"  step  {line}")
tests = (out / "pytest-gpu.txt")
if tests.exists() and tests.read_text().strip():
    print(f"  tests {tests.read_text().strip().splitlines()[-1]}")
doctor = out / "doctor.json"
if doctor.exists() and doctor.stat().st_size:
    try:
        d = json.loads(doctor.read_text())
        verdict = d.get("verdict") if isinstance(d, dict) else None
        if isinstance(verdict, dict):
            verdict = verdict.get("line") or verdict.get("status")
        print(f"  doctor {verdict if verdict is not None else 'see doctor.json'}")
    except ValueError:
        print("  doctor: doctor.json is not JSON")
try:
    r = json.loads((out / "bench.json").read_text())
except (OSError, ValueError) as e:
    print(f"  bench: no result ({e}); see bench.err")
    sys.exit(0)

def si(v, unit):
    if v is None:
        return "-"
    if unit == "samples/s":
        return f"{v:,.0f} samples/s"
    for s, p in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if v >= s:
            return f"{v / s:,.1f} {p}{unit}"
    return f"{v:,.1f} {unit}"

for d in r["devices"]:
    extra = f" (peaks: {d.get('peak_table_entry')}, driver {d.get('driver', '?')})" if d.get("kind") == "gpu" else ""
    print(f"  device {d['id']}: {d.get('name')}{extra}")
print(f"  {'figure':24} {'device':14} {'backend':10} {'value':>18} {'% peak':>7}  {'verdict':10} marks")
for f in r["figures"]:
    pct = "-" if f.get("fraction_of_peak") is None else f"{100 * f['fraction_of_peak']:.0f} %"
    print(f"  {f['name'][:24]:24} {f['device'][:14]:14} {f['backend'][:10]:10} {si(f['value'], f['unit']):>18} "
          f"{pct:>7}  {f['verdict']:10} {', '.join(f['marks'])}")
rows = [(f, s) for f in r["figures"] for s in f.get("detail", {}).get("shapes", []) if s.get("plain")]
if rows:
    print("  --verify: bench vs a plain framework loop (torch.mm, tf.linalg.matmul), same shapes, same run")
    for f, s in rows:
        p = s["plain"]
        print(f"    {f['name']:14} {f['device']:8} {f['backend'][:10]:10} {s['m']}x{s['n']}x{s['k']:<6} bench {si(s['value'], 'FLOP/s'):>16}  "
              f"plain {si(p['value'], 'FLOP/s'):>16}  ratio {p['ratio_bench_to_plain']:.3f} "
              f"(best {p.get('ratio_best', float('nan')):.3f})")
for line in r.get("findings", []):
    print(f"  - {line}")
for s in r.get("skipped", []):
    print(f"  skipped: {s['what']}: {s['reason']}")
print(f"  bench wall time {r['wall_seconds']:.1f} s")
PY
exit $overall
