"""Section `security`: known CVEs (compat.yaml's advisories) in installed packages."""

from __future__ import annotations

from airlab.doctor.checks.registry import Finding, check, finding, ok, skip
from airlab.doctor.checks.views import plan_fix
from airlab.doctor.compat import parse_version


@check("security.torch")
def torch_cves(facts, ctx):
    return advisories(facts, ctx, "torch")


@check("security.pyyaml")
def pyyaml_cves(facts, ctx):
    return advisories(facts, ctx, "pyyaml")


@check("security.keras")
def keras_cves(facts, ctx):
    return advisories(facts, ctx, "keras")


def advisories(facts: dict, ctx, package: str) -> Finding:
    """The installed `package` against its advisories: fail for a severity-fail one not fixed."""
    have = facts.get("packages", {}).get(package)
    if not have:
        return skip(f"{package} not installed")
    hv = parse_version(have)
    known = ctx.compat.advisories(package)
    hits = [a for a in known if hv < parse_version(a["fixed_in"]) and hv >= parse_version(a.get("min_affected", "0"))]
    if not hits:
        return ok(f"{package} {have} has the fixes for {', '.join(a['id'] for a in known)}")
    newest_fix = max((a["fixed_in"] for a in hits), key=parse_version)
    status = "fail" if any(a["severity"] == "fail" for a in hits) else "warn"
    line = "; ".join(f"{a['id']} ({a['what']}; fixed in {a['fixed_in']})" for a in hits)
    pipname = {"pyyaml": "PyYAML"}.get(package, package)
    fix = plan_fix(facts, "torch") if package == "torch" else f"pip install -U '{pipname}>={newest_fix}'"
    return finding(status, f"{package} {have}: {line}", fix)
