"""The layering the code relies on (README, "Layout"), checked on the source so a change that breaks it fails:
no import cycle inside covidseg_core, the core never imports the app, stage 1 and stage 2 never import each other,
and a module over 400 lines says why at its top."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE = ROOT / "covidseg_core"
MAX_LINES = 400
LONG_REASON = "over 400 lines because"     # the phrase a long module's docstring must carry


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(path: pathlib.Path) -> bool:
    return path.name == "__init__.py"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Imports under `if TYPE_CHECKING:` run only for type checkers: not a runtime dependency."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def imports_of(path: pathlib.Path, known: set[str]) -> set[str]:
    """Modules of `known` that `path` imports, at module level or inside functions (a lazy import is still a
    dependency), with relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    name = module_name(path)
    package = name if is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import mod` names a submodule; `from mod import name` names the module itself
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:      # `import a.b.c` of a function-free path: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(folder: pathlib.Path) -> dict[str, set[str]]:
    files = {module_name(p): p for p in folder.rglob("*.py")}
    known = set(files)
    return {name: imports_of(path, known) for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_resolves_relative_and_lazy_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py"):
        (pkg / f).write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n    from . import c\n")
    (pkg / "sub" / "c.py").write_text("from pkg import sub\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    edges = graph(pkg)
    assert edges["pkg.sub.b"] == {"pkg.a", "pkg.sub.c"}
    assert edges["pkg.sub.c"] == {"pkg.sub"}


def test_no_import_cycle_inside_the_core():
    assert cycles(graph(CORE)) == []


def test_the_core_never_imports_the_app():
    offenders = []
    for py in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{py.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "app"]
    assert not offenders


@pytest.mark.parametrize("package,forbidden", [("weak", "seg"), ("seg", "weak")])
def test_stage1_and_stage2_do_not_import_each_other(package, forbidden):
    edges = graph(CORE)
    prefix = f"covidseg_core.{package}"
    bad = sorted(f"{m} -> {t}" for m, targets in edges.items() if m.startswith(prefix)
                 for t in targets if t.startswith(f"covidseg_core.{forbidden}"))
    assert not bad


def test_long_modules_say_why():
    too_long = []
    for folder in (CORE, ROOT / "app"):
        for py in folder.rglob("*.py"):
            text = py.read_text(encoding="utf-8")
            if text.count("\n") > MAX_LINES and LONG_REASON not in (ast.get_docstring(ast.parse(text)) or ""):
                too_long.append(f"{py.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not too_long, f"split these, or say '{LONG_REASON} ...' in their docstring: {too_long}"
