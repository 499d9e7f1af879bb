"""The doctor's checks are one function each, registered once with their id and what they need.

The registry (airlab.doctor.checks.registry) is the only list of ids: what it holds is exactly
what the doctor can emit, every `needs` names a check that runs first, a stopped prerequisite
skips what needs it, and a backend's section is the one module its table row names.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from pathlib import Path

import pytest

from airlab.backends import table
from airlab.doctor import frameworks
from airlab.doctor.checks import registry
from airlab.doctor.checks.registry import Context, Finding, check, evaluate, fail, ok, skip
from airlab.doctor.compat import load
from doctor_fakes import clone, cpu_machine, gpu_machine, tf_probe

DOCTOR = Path(registry.__file__).resolve().parents[1]  # airlab/doctor
MAX_FUNCTION_LINES = 60


def _all_sections() -> list[str]:
    return registry.sections(table.BACKENDS)


def _order() -> list[str]:
    return [d.id for name in _all_sections() for d in registry.in_section(name)]


def _situations() -> list[dict]:
    sys.path.insert(0, str(Path(__file__).parent))
    import test_doctor_situations as sit

    return [make() for make in {s[0] for s in sit.SITUATIONS}]


def test_the_longest_function_in_the_doctor_is_under_60_lines():
    lengths = []
    for path in sorted(DOCTOR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(DOCTOR)}:{node.name}"))
    assert lengths and len({p.split(":")[0] for _, p in lengths}) > 10  # it did read the package
    longest = max(lengths)
    assert longest[0] < MAX_FUNCTION_LINES, f"{longest[1]} is {longest[0]} lines"


def test_the_registered_ids_are_the_ids_the_doctor_can_emit():
    emitted = set()
    for facts in _situations() + [cpu_machine(), gpu_machine()]:
        for backends in (table.BACKENDS, table.BACKENDS[:1]):
            emitted |= {c.id for c in evaluate(facts, backends, deep=True)}
    assert emitted == set(registry.REGISTRY)


def test_every_needs_names_a_registered_check_that_runs_before_it_in_its_section():
    order = _order()
    assert sorted(order) == sorted(registry.REGISTRY) and len(order) == len(set(order))
    for d in registry.REGISTRY.values():
        if d.needs is not None:
            assert d.needs in registry.REGISTRY, f"{d.id} needs the unknown check {d.needs!r}"
            assert registry.REGISTRY[d.needs].section == d.section, d.id
            assert order.index(d.needs) < order.index(d.id), f"{d.id} runs before {d.needs}, which it needs"


def _id_literals() -> tuple[list, list, list]:
    """String constants in airlab/doctor that equal a registered id: as check()'s id, as a needs=,
    and anywhere else."""
    ids = set(registry.REGISTRY)
    defined, needed, other = [], [], []
    for path in sorted(DOCTOR.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        seen = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check":
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Constant):
                        defined.append(arg.value)
                        seen.add(id(arg))
                for kw in node.keywords:
                    if kw.arg == "needs" and isinstance(kw.value, ast.Constant):
                        needed.append(kw.value.value)
                        seen.add(id(kw.value))
        other += [(path.name, node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in ids and id(node) not in seen]
    return defined, needed, other


def test_every_check_id_is_written_once():
    defined, needed, other = _id_literals()
    assert sorted(defined) == sorted(registry.REGISTRY)  # once each, in its check(...)
    assert set(needed) <= set(registry.REGISTRY)
    assert other == [], "ids written outside check(...) and needs=: look them up in the registry instead"


def test_every_id_a_summary_or_fix_points_to_is_registered():
    """'see gpu.mig', '(see torch.build)', 'read tensorflow.libraries': the ids named in the text."""
    sections = "|".join(_all_sections())
    pattern = re.compile(rf"(?<![\w./-])((?:{sections})\.[a-z0-9_]+)(?![\w.(\[])")
    named = set()
    for path in sorted(DOCTOR.joinpath("checks").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and " " in node.value \
                    and id(node) not in docstrings:  # prose: the summaries and fixes
                named |= set(pattern.findall(node.value))
    assert {"gpu.mig", "torch.build", "tensorflow.libraries", "cuda.library_path"} <= named  # the scan works
    assert named <= set(registry.REGISTRY), named - set(registry.REGISTRY)


@pytest.fixture
def scratch_registry(monkeypatch):
    """A registry the test may add checks to; the real one is back afterwards."""
    registry.sections(table.BACKENDS)  # every real section registered first
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    return registry.REGISTRY


def test_a_stopped_prerequisite_skips_every_check_that_needs_it_with_its_reason(scratch_registry):
    ran = []

    @check("zz.first")
    def first(facts, ctx):
        return Finding("fail", "broken", "fix it", stops="zz did not start")

    @check("zz.second", needs="zz.first")
    def second(facts, ctx):
        ran.append("second")
        return ok("fine")

    @check("zz.third", needs="zz.second")
    def third(facts, ctx):
        ran.append("third")
        return ok("fine")

    @check("zz.free")
    def free(facts, ctx):
        ran.append("free")
        return skip("nothing to see")

    got = registry.run({}, Context(load()), ["zz"])
    assert [(c.id, c.status, c.summary, c.fix) for c in got] == [
        ("zz.first", "fail", "broken", "fix it"), ("zz.second", "skip", "zz did not start", None),
        ("zz.third", "skip", "zz did not start", None), ("zz.free", "skip", "nothing to see", None)]
    assert ran == ["free"]


def test_a_failed_check_that_does_not_stop_lets_what_needs_it_run(scratch_registry):
    """torch imported, then hung: torch.import fails, yet the checks after it judge what it saw."""

    @check("zz.first")
    def first(facts, ctx):
        return fail("hung after importing", "look at the stage")

    @check("zz.second", needs="zz.first")
    def second(facts, ctx):
        return ok("judged anyway")

    assert [c.status for c in registry.run({}, Context(load()), ["zz"])] == ["fail", "ok"]


def test_an_id_registered_by_two_functions_is_refused(scratch_registry):
    @check("zz.once")
    def one(facts, ctx):
        return ok("one")

    with pytest.raises(ValueError, match="registered twice"):
        @check("zz.once")
        def other(facts, ctx):
            return ok("other")


def test_the_checks_only_under_deep_run_only_under_deep():
    conditional = {d.id for d in registry.REGISTRY.values() if d.when is not None}
    assert conditional == {"gpu.deep"}
    ids = {c.id for c in evaluate(cpu_machine(), table.BACKENDS, deep=False)}
    assert ids == set(registry.REGISTRY) - conditional


@pytest.mark.parametrize("row", table.ROWS, ids=lambda r: r.name)
def test_each_backend_section_is_the_module_its_table_row_names(row):
    import importlib

    module = importlib.import_module(row.doctor)
    defs = registry.in_section(row.name)
    assert defs and {d.fn.__module__ for d in defs} == {module.__name__}
    first = defs[0]
    assert first.needs is None and all(d.needs is not None for d in defs[1:])
    for d in defs[1:]:  # everything after the import needs it, directly or through another check
        need = d
        while need.needs is not None:
            need = registry.REGISTRY[need.needs]
        assert need is first, d.id
    assert registry.role_id(row.name, "compute") and registry.role_id(row.name, "gpu_use")
    assert module.DEEP_GPU_WORK
    assert (frameworks.PROBE_DIR / row.probe).is_file() and frameworks.SCRIPTS[row.name].name == row.probe


def test_the_sections_run_in_order_with_the_backends_in_table_order():
    facts = cpu_machine()
    facts["frameworks"]["tensorflow"] = tf_probe()
    sections = []
    for c in evaluate(facts, tuple(reversed(table.BACKENDS))):
        s = registry.REGISTRY[c.id].section
        if not sections or sections[-1] != s:
            sections.append(s)
    assert sections == [*registry.CORE_FIRST, *table.BACKENDS, *registry.CORE_LAST]


THIRD_SECTION = '''
from airlab.doctor.checks.registry import check, ok, skip
from airlab.doctor.checks.views import data, import_finding

DEEP_GPU_WORK = ("a toy kernel",)


@check("toy.import")
def import_(facts, ctx):
    return import_finding(facts, ctx, "toy", "Toy", optional=True)


@check("toy.compute", needs="toy.import", role="compute")
def compute(facts, ctx):
    return ok(f"{len(data(facts, 'toy').get('compute') or [])} matmuls")


@check("toy.devices", needs="toy.import", role="gpu_use")
def devices(facts, ctx):
    return skip("no GPU")
'''


def test_a_third_backends_section_is_one_file_and_its_table_field(scratch_registry, tmp_path, monkeypatch):
    """The walk-through, run: a module of checks plus `doctor=` in its table row, nothing else."""
    from dataclasses import replace

    (tmp_path / "toy_doctor_section.py").write_text(textwrap.dedent(THIRD_SECTION))
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = replace(table.ROWS[0], name="toy", display="Toy", module="toy", doctor="toy_doctor_section")
    monkeypatch.setattr(table, "ROWS", (*table.ROWS, toy))
    monkeypatch.setattr(table, "BACKENDS", (*table.BACKENDS, "toy"))
    monkeypatch.setattr(table, "_BY_NAME", {**table._BY_NAME, "toy": toy})
    try:
        facts = clone(cpu_machine())
        got = {c.id: c for c in evaluate(facts, ("toy", table.BACKENDS[0]), deep=True)}
        assert (got["toy.import"].status, got["toy.import"].summary) == ("skip", "Toy not probed")
        assert (got["toy.compute"].status, got["toy.compute"].summary) == ("skip", "Toy did not import")
        assert "a toy kernel" in got["gpu.deep"].summary
        ids = list(got)
        assert ids.index(f"{table.BACKENDS[0]}.import") < ids.index("toy.import") < ids.index("security.torch")
        facts["frameworks"]["toy"] = {"status": "ok", "data": {"version": "1.0", "compute": [{}, {}]}}
        got = {c.id: c for c in evaluate(facts, ("toy",))}
        assert got["toy.import"].status == "ok" and got["toy.compute"].summary == "2 matmuls"
    finally:
        sys.modules.pop("toy_doctor_section", None)
