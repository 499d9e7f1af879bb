"""`airlab doctor`: know the machine, judge every fact, name the fix.

    report = run_doctor(backends=("torch", "tensorflow"))
    report.checks    # [Check(id, status ok|warn|fail|skip, summary, fix)]
    report.failed    # the checks that make `airlab doctor` exit 4

Layout: system.py and nvidia.py probe the machine (in this process; no framework imported);
frameworks.py runs probes/torch_probe.py and probes/tf_probe.py, each in its own process with a
timeout, all at once; compat.py reads the rules in compat.yaml; checks/ judges the facts (a pure
function: the seam the tests drive with fake situations), one registered function per check id
(checks/registry.py), one module per section; core.py ties them together.
"""

from airlab.doctor.checks import Check, evaluate
from airlab.doctor.core import Report, gather, run_doctor

__all__ = ["Check", "Report", "evaluate", "gather", "run_doctor"]
