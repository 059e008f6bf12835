"""The served model's pip requirements: every package its code imports (models/, and the tasks/
modules the draw loads), pinned as requirements.lock pins it, so `mlflow models serve` can
build a fresh environment for any family."""

import ast
import sys
from importlib import metadata
from pathlib import Path

from models.pyfunc import SERVING_PACKAGES, pip_requirements

REPO = Path(__file__).resolve().parents[2]
LOCAL = ("models", "tasks")


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level local imports, every third-party top-level name imported anywhere, lazy
    imports inside functions included; ``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    local, third = set(), set()
    top_level = set(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root in LOCAL:
                if node in top_level:
                    local.add(name)
            elif root not in sys.stdlib_module_names and root != "__future__":
                third.add(root)
    return local, third


def _served_imports() -> set[str]:
    """Third-party names imported by every models/ module (families load by name) and by the
    tasks/ modules that importing tasks.draw loads."""
    todo = ["tasks.draw", *(f"models.{p.stem}" for p in (REPO / "models").glob("*.py"))]
    seen, third = set(), set()
    while todo:
        module = todo.pop()
        path = REPO / f"{module.replace('.', '/')}.py"
        if module in seen or not path.exists():
            continue
        seen.add(module)
        local, found = _imports(path)
        todo += local
        third |= found
    return third


def test_every_package_the_served_code_imports_is_required():
    required = {_canonical(p) for p in SERVING_PACKAGES}
    distributions = metadata.packages_distributions()
    missing = {name: distributions.get(name, [name]) for name in _served_imports()
               if not required & {_canonical(d) for d in distributions.get(name, [name])}}
    assert not missing, f"add to models/pyfunc.py SERVING_PACKAGES: {missing}"
    assert "jaxlib" in required  # jax's compiled half: imported by jax, not by privgen


def test_requirements_are_pinned_as_the_lock_pins_them():
    lock = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split(";")[0].split("==")
            lock[_canonical(name.strip())] = version.strip()
    pins = [r.split("==") for r in pip_requirements()]
    assert {_canonical(name): version for name, version in pins} == {
        _canonical(name): lock.get(_canonical(name)) for name, _ in pins}
    assert all("+" not in version for _, version in pins)  # torch's +cpu is not on PyPI
