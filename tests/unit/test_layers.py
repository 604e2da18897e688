"""The layers' dependency rule, checked on every import statement (function-level ones included):

- sipec/ (the library, the CLI, serving, the contract) imports neither the services nor the orchestrator;
- a module's service (services/<module>/) imports sipec/ and itself only: no other module, no orchestrator;
- the orchestrator imports sipec/ and the generated stubs, never a service.

Where a layer has to reach a module (the CLI's commands, an in-process servicer), it names it by module path
(`sipec.cli.COMMANDS`, `sipec.serving.stubs.open_in_process`), as a plugin registry would.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def _violation(path: Path, module: str) -> str | None:
    layer = path.relative_to(ROOT).parts
    target = module.split(".")
    if layer[0] == "sipec" and target[0] in ("services", "orchestrator"):
        return "sipec/ must not import the services or the orchestrator"
    if layer[0] == "orchestrator" and target[0] == "services":
        return "the orchestrator speaks the contract only, never a service's code"
    if layer[0] == "services" and target[0] == "orchestrator":
        return "a service must not import the orchestrator"
    if layer[0] == "services" and target[0] == "services" and len(target) > 1 and target[1] != layer[1]:
        return f"services/{layer[1]} must not import another module ({module})"
    return None


def test_no_layer_imports_against_the_dependency_rule():
    files = [p for top in ("sipec", "services", "orchestrator") for p in (ROOT / top).rglob("*.py")
             if "v1" not in p.relative_to(ROOT).parts]
    assert len(files) > 100
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}: {why}"
           for p in files for line, module in _imports(p) if (why := _violation(p, module))]
    assert not bad, "\n".join(bad)


def test_the_rule_catches_each_kind_of_violation():
    cases = {("sipec", "cli.py"): "orchestrator.score", ("orchestrator", "score.py"): "services.tracker.mot",
             ("services", "tracker", "x.py"): "services.idnet.service", ("services", "idnet", "y.py"): "orchestrator"}
    for parts, module in cases.items():
        assert _violation(ROOT.joinpath(*parts), module), (parts, module)
    assert _violation(ROOT / "services" / "tracker" / "x.py", "services.tracker.mot") is None
    assert _violation(ROOT / "orchestrator" / "x.py", "sipec.mot") is None
