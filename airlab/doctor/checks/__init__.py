"""Judge the facts: every check has a stable id, a status (ok/warn/fail/skip), one line, and a fix.

`evaluate(facts, backends)` is pure over the fact dict that airlab.doctor.core gathers (the seam
the tests use: a fake situation is a fact dict). Sections are the id prefixes: system, gpu,
cuda, torch, tensorflow, security. For a given --backend the same ids appear on every machine;
checks that do not apply say `skip` and why.

Each check is one function registered with its id (registry.py): system.py, gpu.py, cuda.py and
security.py hold the sections every machine has; a backend's section is the module its row in
airlab/backends/table.py names (`doctor`): torch.py, tensorflow.py. views.py holds the readings of
the facts that several sections share.
"""

from airlab.doctor.checks.registry import (REGISTRY, STATUSES, Check, Context, Finding, check, evaluate, fail,
                                           finding, ok, skip, warn)

__all__ = ["REGISTRY", "STATUSES", "Check", "Context", "Finding", "check", "evaluate", "fail", "finding", "ok",
           "skip", "warn"]
