"""`airlab bench`: the machine's throughput, measured right and judged against its limits.

Framework-free: the harness (harness.py), FLOP/byte arithmetic (arithmetic.py), peak tables and
the CPU peak estimate (peaks.py, clock.py, gpu_peaks.json), telemetry (telemetry.py), verdicts
(verdict.py), suites and plans (runner.py, plans.py, training.py), the all-reduce across the
processes of a run (collective.py: `airlab bench --nproc N`) and the JSON report (report.py).
Timing mechanics per framework live in airlab/backends/<name>/bench.py, reached through the seam
in backends.py.
"""
