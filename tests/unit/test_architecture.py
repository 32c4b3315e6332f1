"""The house rules of the layout (README, "Where things live"), checked on the source.

`make lint` runs import-linter for the layers themselves (pyproject.toml); these tests keep the
rules it cannot see: private names stay private across packages, project imports sit at the top of
library modules (only DAG files import inside functions), functions stay short, the library never
reaches for a git checkout, and the README's layout table is the tree.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CORE = "core"
STAGES = ("ingestion", "validation", "features", "training", "monitoring", "serving", "simulation")
FACE = "flywheel"
LIBRARY = (CORE, *STAGES, FACE)
#: Application code outside the installed library that imports it: Airflow's folders, Feast's repo.
APP_FOLDERS = ("dags", "plugins", "feature_repo")
MAX_FUNCTION_LINES = 80
#: Our modules that load a heavy engine when imported, and why a caller may import them late
#: (inside the function that needs them, like a DAG task): every other project import is at the top.
HEAVY_MODULES = {
    "validation.expectations": "registers a custom GX expectation, so importing it imports GX",
    "training.pipeline": "imports torch and MLflow; `flywheel --help` must not",
}


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def _project_imports(tree: ast.AST):
    """(node, imported module, imported names) for every import of a project package."""
    ours = set(LIBRARY)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in ours:
                yield node, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ours:
                    yield node, alias.name, []


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the statements under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                out.update(id(n) for n in ast.walk(child))
    return out


def test_import_contracts_hold():
    """The layers, no cycles inside a package, private modules (import-linter, as `make lint`)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a dev dependency (pyproject.toml)"
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.parametrize(
    "path", _modules(*LIBRARY, *APP_FOLDERS), ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_private_name_crosses_a_package(path: Path):
    """A `_name` is its package's own: another package asks for a public function instead."""
    tree = ast.parse(path.read_text())
    own = _package(path)
    for node, module, names in _project_imports(tree):
        if module.split(".")[0] == own:
            continue
        private = [part for part in module.split(".") if part.startswith("_")]
        private += [n for n in names if n.startswith("_")]
        assert not private, f"{path.name}:{node.lineno} imports {private} from {module}"


@pytest.mark.parametrize(
    "path", _modules(*LIBRARY, "plugins"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_project_imports_sit_at_the_top(path: Path):
    """The dependency graph is readable from the top of each module (DAG files are the exception)."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body} | _type_checking_nodes(tree)
    hidden = [
        f"line {n.lineno}: {m}"
        for n, m, names in _project_imports(tree)
        if id(n) not in top
        and m not in HEAVY_MODULES
        and not any(f"{m}.{name}" in HEAVY_MODULES for name in names)
    ]
    assert not hidden, f"{path.relative_to(ROOT)} imports inside functions: {hidden}"


def test_functions_are_short():
    """No library function over ~80 lines (nested functions count in their parent)."""
    long = []
    for path in _modules(*LIBRARY, "plugins"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, long


def test_library_needs_no_checkout():
    """Paths to dags/, plugins/, feature_repo/ come from the settings, never from ``__file__``."""
    pattern = re.compile(r"__file__\)?\.resolve\(\)\.(parent\.parent|parents\[)|REPO_ROOT")
    offenders = [
        str(p.relative_to(ROOT)) for p in _modules(*LIBRARY) if pattern.search(p.read_text())
    ]
    assert not offenders, offenders


def test_app_folders_call_stages_not_the_face():
    """dags/, plugins/ and feature_repo/ call stage functions; the CLI and demo sit above them."""
    for path in _modules(*APP_FOLDERS):
        for node, module, _ in _project_imports(ast.parse(path.read_text())):
            assert module.split(".")[0] != FACE, f"{path.name}:{node.lineno} imports {module}"


def test_no_package_holds_more_than_a_third():
    """The house is not one room: no top-level package over ~35 % of the library's lines."""
    lines = {pkg: sum(len(p.read_text().splitlines()) for p in _modules(pkg)) for pkg in LIBRARY}
    total = sum(lines.values())
    assert max(lines.values()) / total <= 0.35, {k: round(v / total, 2) for k, v in lines.items()}


def test_readme_layout_table_is_the_tree():
    """Every top-level folder is in the README's layout table, and every folder it names exists."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([\w.-]+)/`", section, flags=re.M))
    folders = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".egg-info")
    }
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    if tracked:  # ignore untracked local folders (caches, build output)
        folders &= {t.split("/", 1)[0] for t in tracked if "/" in t}
    assert named == folders, {
        "missing from README": folders - named,
        "not in tree": named - folders,
    }
