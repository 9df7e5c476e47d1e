"""The library's shape: imports run one way (docs/architecture.md), no cycles, no unexplained lazy import,
and one decoder: nothing but ringnet_lib/decoder.py turns parameters into landmarks."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ringnet_lib

PACKAGE = Path(ringnet_lib.__file__).parent
# Layers, lowest first; a module may import its own layer and the layers below (docs/architecture.md).
LAYERS = [
    ("maths", ["params", "cli", "checks", "lbs", "camera", "mesh", "alignment", "landmarks", "contour", "model_io",
               "face_region"]),
    ("assets", ["default_head"]),
    ("model", ["flame", "decoder"]),
    ("learning", ["encoder", "losses", "fitting"]),
    ("data", ["data"]),
    ("training", ["training", "train"]),
    ("evaluation", ["evaluation"]),
    ("front doors", ["demo", "ablation", "viz", "interactive", "notebook", "course", "testing", "check_kernel"]),
]
# viz draws pictures for everything above data; it is a leaf (it imports nothing of ours but params).
LEAVES = {"viz"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, (_, members) in enumerate(LAYERS):
        if top in members:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/architecture.md")


def imports_of(path: Path) -> tuple[list, list]:
    """Every ringnet_lib import of a file as (module, line, lazy?, source line), and every import
    inside a function (ours or another package's) as (line, source line)."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    inside_functions = {id(sub) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("ringnet_lib"):
                resolved = resolve(name)
                if resolved:
                    found.append((resolved, node.lineno, id(node) in inside_functions, lines[node.lineno - 1]))
    lazy_third_party = [(n.lineno, lines[n.lineno - 1]) for n in ast.walk(tree)
                        if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) in inside_functions]
    return found, lazy_third_party


def resolve(name: str) -> str | None:
    """The ringnet_lib module a dotted name refers to (a module, or a name inside one)."""
    parts = name.split(".")
    while parts:
        candidate = PACKAGE.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts = parts[:-1]
    return None


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_run_downwards(path):
    module = module_name(path)
    if module == "ringnet_lib":  # the public API re-exports every layer
        return
    own = layer_of(module)
    found, _ = imports_of(path)
    for target, line, _, text in found:
        if target == "ringnet_lib" or target == module or target.startswith(module + "."):
            continue
        top = target.split(".")[1]
        if top in LEAVES and module.split(".")[1] not in ("demo", "ablation", "notebook", "interactive", "viz"):
            raise AssertionError(f"{path.name}:{line}: {text.strip()} - only front doors draw with viz")
        assert layer_of(target) <= own, (f"{module} ({LAYERS[own][0]}) imports {target} "
                                         f"({LAYERS[layer_of(target)][0]}), a higher layer: {path.name}:{line}")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_lazy_imports_say_why(path):
    _, lazy = imports_of(path)
    for line, text in lazy:
        assert "# lazy:" in text, f"{path}:{line}: an import inside a function needs '# lazy: <reason>': {text.strip()}"


def test_no_import_cycle():
    graph = {}
    for path in MODULES:
        module = module_name(path)
        graph[module] = {t for t, *_ in imports_of(path)[0] if t != module and not module.startswith(t + ".")
                         and t != "ringnet_lib"}
    graph.pop("ringnet_lib", None)
    state, stack = {}, []

    def visit(node):
        state[node] = "active"
        stack.append(node)
        for target in graph.get(node, ()):
            if state.get(target) == "active":
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The checks above can fail: a maths module importing training is caught."""
    fake = PACKAGE / "camera.py"
    found, _ = imports_of(fake)
    assert all(layer_of(t) == 0 for t, *_ in found)
    assert layer_of("ringnet_lib.training.loop") > layer_of("ringnet_lib.camera")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("ringnet_lib.unplaced_module")


# Functions that turn parameters into landmarks, and the only files allowed to call them.
DECODING = {"ibug68(": {"decoder.py", "landmarks.py"},
            "full_pose_from_ringnet_pose(": {"decoder.py", "params.py"},
            "barycentric_landmarks(": {"landmarks.py", "flame.py"},
            "project_weak_perspective(": {"decoder.py", "camera.py", "data/render.py"}}


@pytest.mark.parametrize("call", sorted(DECODING))
def test_one_decoder(call):
    for path in MODULES:
        relative = path.relative_to(PACKAGE).as_posix()
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        if re.search(r"(?<![\w.])" + re.escape(call) + "|\\." + re.escape(call), code) and not \
                re.search(r"def " + re.escape(call), code):
            assert relative in DECODING[call], f"{relative} calls {call[:-1]}: go through ringnet_lib.decoder.Decoder"


def test_every_module_has_a_row_in_the_docs():
    """docs/architecture.md's table says each module's one job: a new module gets a row (or its package's)."""
    docs = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = set(re.findall(r"^\| `([\w/]+)`", docs, flags=re.M))
    rows |= {name for row in re.findall(r"^\| `[\w/]+`((?:, `[\w/]+`)+) \|", docs, flags=re.M)
             for name in re.findall(r"`([\w/]+)`", row)}
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("").as_posix()
        if path.name in ("__init__.py", "__main__.py"):
            continue
        if relative not in rows and relative.split("/")[0] + "/" not in rows:
            missing.append(relative)
    assert not missing, f"modules without a row in docs/architecture.md: {missing}"
