"""The folders of tarot-core are the pipeline, and the imports run one way: no algorithm module imports the
application layer (``tarot.app``) or goes back through the package root (``from tarot import ...``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tarot

ROOT = Path(tarot.__file__).parent


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``tarot`` module a file imports (top level and inside functions), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "tarot"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "tarot":
                out.append((node.lineno, node.module))
    return out


def _algorithm_modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "app" not in p.relative_to(ROOT).parts and p.name != "__init__.py"
                  or p.parent.name == "selectors" and p.name == "__init__.py")


def test_pipeline_stages_are_folders():
    for stage in ("features", "geometry", "selectors", "app"):
        assert (ROOT / stage / "__init__.py").is_file(), stage
    for module in ("api.py", "ot.py", "weighting.py", "result.py", "diagnostics.py"):
        assert (ROOT / module).is_file(), module
    # nothing of the old flat layout is left beside the stages
    flat = {p.name for p in ROOT.glob("*.py")}
    assert not flat & {"gradients.py", "store.py", "whitening.py", "scoring.py", "cli.py", "report.py", "bench.py"}


@pytest.mark.parametrize("path", _algorithm_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_algorithms_never_import_the_app_layer_or_the_root(path: Path):
    bad = [f"{path.name}:{line} imports {name}" for line, name in _imports(path)
           if name == "tarot" or name.startswith("tarot.app")]
    assert not bad, bad


def test_the_checker_sees_a_bad_import(tmp_path: Path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from tarot.app.config import plain\n    import tarot\n")
    assert _imports(bad) == [(2, "tarot.app.config"), (3, "tarot")]


def test_public_names_still_come_from_the_root():
    for name in tarot._EXPORTS:
        assert getattr(tarot, name) is not None, name
