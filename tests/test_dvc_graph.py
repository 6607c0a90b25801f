"""The DVC graph cannot silently skip: every stage declares the code it runs (the static
import closure of its command and, for notebook stages, of the notebook's cells) and no
code it does not run."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("qnnlib", "qnnpipeline")


def module_file(name: str) -> Path | None:
    """qnnlib.kernels.cpu -> qnnlib/kernels/cpu.py (or the package's __init__.py)."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(tree: ast.AST, current: str) -> set[str]:
    """Project modules named by every import statement in `tree` (function-level ones too)."""
    found = set()
    package = current if module_file(current) and module_file(current).name == "__init__.py" \
        else current.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES and module_file(name)}


def closure(roots: set[str]) -> set[Path]:
    """Files of `roots` and of every project module they import, transitively, with the
    parent packages' __init__.py (Python runs them on import)."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        tree = ast.parse(module_file(name).read_text())
        todo.extend(imported_modules(tree, name) - seen)
    files = {module_file(name) for name in seen}
    files |= {path.parent / data for path in set(files)  # files a module reads beside itself
              for data in re.findall(r'with_name\("([^"]+)"\)', path.read_text())}
    return {path.relative_to(ROOT) for path in files}


def notebook_imports(notebook: Path) -> set[str]:
    cells = json.loads(notebook.read_text())["cells"]
    source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return imported_modules(ast.parse(source), "notebooks")


def stage_code(stage: dict) -> set[Path]:
    """The project code a stage's command runs."""
    command = stage["cmd"]
    roots = set(re.findall(r"python -m ([\w.]+)", command))
    for name in re.findall(r"qnnpipeline\.notebooks (\w+)", command):
        roots |= notebook_imports(ROOT / "notebooks" / f"{name}.ipynb")
    return closure(roots)


def declared(stage: dict) -> set[Path]:
    deps = {Path(d if isinstance(d, str) else next(iter(d))) for d in stage.get("deps", [])}
    return {dep for dep in deps if dep.parts[0] in PACKAGES}


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_exactly_the_code_it_runs(name):
    stage = STAGES[name]
    needed, listed = stage_code(stage), declared(stage)
    covered = {path for path in needed if any(path == dep or dep in path.parents for dep in listed)}
    missing, stale = sorted(map(str, needed - covered)), sorted(
        str(dep) for dep in listed if not any(path == dep or dep in path.parents for path in needed))
    assert not missing, f"stage {name} runs code it does not declare: {missing}"
    assert not stale, f"stage {name} declares code it does not run: {stale}"


def test_closure_follows_function_level_and_relative_imports():
    files = closure({"qnnpipeline.cli"})
    assert Path("qnnlib/training.py") in files  # imported inside a function
    assert Path("qnnpipeline/params.py") in files  # a relative import
    assert Path("qnnlib/__init__.py") in files
