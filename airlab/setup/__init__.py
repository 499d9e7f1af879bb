"""`airlab setup`: plan the framework wheels that fit this machine, and install them.

    machine = machine_facts(assume_driver=None, assume_gpu=None)   # probes NVML/nvidia-smi/proc
    plan = plan_setup(machine, ["torch"])                         # pure (airlab.setup.plan)
    run_plan(plan, installer=find_installer(), runner=...)        # pip/uv as argument lists

The planner is pure; this module gathers the facts and executes.
"""

from __future__ import annotations

from airlab.setup.execute import Installer, commands_for, find_installer, run_plan
from airlab.setup.facts import installed_packages, machine_facts, parse_assume_driver, parse_assume_gpu
from airlab.setup.plan import Choice, Machine, Plan, plan_setup

__all__ = ["Choice", "Installer", "Machine", "Plan", "commands_for", "find_installer", "installed_packages",
           "machine_facts", "parse_assume_driver", "parse_assume_gpu", "plan_setup", "run_plan"]
