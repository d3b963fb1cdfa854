"""The layer order of docs/architecture.md ("## Layers"), checked against the whole import table of flare_vlp.

A module may import flare_vlp modules of its own layer or of a layer above it (earlier in the list), never below;
only ``fl`` and ``recipes`` import nvflare; ``__main__.py`` may import any layer. Every ``import`` and
``from ... import`` counts, top-level or function-local, absolute or relative.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flare_vlp"
DOC = ROOT / "docs" / "architecture.md"
NVFLARE_LAYERS = {"fl", "recipes"}  # the only layers that may import nvflare
NOT_NVFLARE_FREE = NVFLARE_LAYERS | {"cli"}  # cli may import fl / recipes, so it may load nvflare indirectly

# Violations tolerated while a refactor removes them: (importing module, imported module). Remove a pair once it is
# fixed: test_known_violations_still_exist fails on a pair that no longer occurs, and any pair not listed here fails
# test_import_table_follows_the_layer_order. Emptied when the FLARE-layer refactor moved the run drivers and job
# export out of fl/ (they were ("flare_vlp.fl.run", "flare_vlp.recipes") and ("flare_vlp.fl.job_export", ...)).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def layer_order() -> list[str]:
    """The layers, top to bottom: the first word of each line of the first fenced block under ``## Layers``."""
    text = DOC.read_text(encoding="utf-8")
    section = re.search(r"^## Layers[ \t]*\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert section, f"{DOC}: no '## Layers' section"
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), flags=re.S | re.M)
    assert block, f"{DOC}: no fenced code block in '## Layers'"
    layers = [line.split()[0].strip("/").removesuffix(".py") for line in block.group(1).splitlines() if line.strip()]
    assert len(layers) == len(set(layers)), f"{DOC}: a layer is listed twice: {layers}"
    return layers


LAYERS = layer_order()
RANK = {name: i for i, name in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def imports_of(path: Path) -> list[tuple[str, int]]:
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return imports_in(path.read_text(encoding="utf-8"), package, filename=str(path))


def imports_in(source: str, package: str, filename: str = "<src>") -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``source`` (a module of ``package``): absolute, relative,
    top-level and function-local.

    ``from X import y`` names ``X.y`` when that is a flare_vlp module (``from flare_vlp import config``), else ``X``.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                full = sub if source.split(".")[0] == "flare_vlp" and is_module(sub) else source
                found.append((full, node.lineno))
    return found


def layer_of(module: str) -> str | None:
    """``flare_vlp.<layer>[...]`` -> layer; None for the package root ``flare_vlp``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def source_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def all_violations() -> dict[tuple[str, str], str]:
    """(module, imported) -> 'module -> imported (layer X imports layer Y)' for every import breaking the rules."""
    out = {}
    for path in source_files():
        module = module_name(path)
        own = layer_of(module)
        if module == "flare_vlp.__main__":
            own = "__main__"
        for imported, line in imports_of(path):
            top = imported.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top == "nvflare" and own not in NVFLARE_LAYERS:
                out[(module, imported)] = f"{module} -> {imported} (layer {own} imports nvflare; {where})"
            if top != "flare_vlp" or imported == "flare_vlp":
                continue
            target = layer_of(imported)
            if target not in RANK:
                continue  # reported by test_every_top_level_module_has_a_layer
            if own == "__main__" or own == target:
                continue
            if own is None or own not in RANK or RANK[target] > RANK[own]:
                out[(module, imported)] = f"{module} -> {imported} (layer {own} imports layer {target}; {where})"
    return out


def test_layer_order_matches_the_design():
    assert LAYERS[0] == "config" and LAYERS[-1] == "cli"
    assert RANK["data"] < RANK["experiments"] < RANK["fl"] < RANK["recipes"] < RANK["cli"]


def test_every_top_level_module_has_a_layer():
    top = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    missing = sorted(top - set(LAYERS) - {"__init__", "__main__"})
    assert not missing, f"flare_vlp modules not in the layer order of {DOC.relative_to(ROOT)}: {missing}"


def test_the_walk_sees_relative_and_local_imports():
    """The import parser itself: relative forms resolve, imports inside functions and classes count."""
    source = (
        "from . import schedule\n"
        "from .. import config\n"
        "from ..data import manifest\n"
        "from .loop import train_loop\n"
        "def f():\n"
        "    import nvflare.app_common\n"
        "class C:\n"
        "    def g(self):\n"
        "        from flare_vlp import experiments\n"
    )
    found = [name for name, _ in imports_in(source, "flare_vlp.training")]
    assert found == [
        "flare_vlp.training.schedule",
        "flare_vlp.config",
        "flare_vlp.data.manifest",
        "flare_vlp.training.loop",
        "nvflare.app_common",
        "flare_vlp.experiments",
    ]


def test_import_table_follows_the_layer_order():
    violations = all_violations()
    new = sorted(message for pair, message in violations.items() if pair not in KNOWN_VIOLATIONS)
    assert not new, f"{len(new)} import(s) break the layer order of {DOC.relative_to(ROOT)}:\n" + "\n".join(new)


def test_known_violations_still_exist():
    stale = sorted(KNOWN_VIOLATIONS - set(all_violations()))
    assert not stale, f"fixed: remove these pairs from KNOWN_VIOLATIONS in {Path(__file__).name}: {stale}"


def _layer_modules(layer: str) -> list[str]:
    if (PACKAGE / f"{layer}.py").is_file():
        return [f"flare_vlp.{layer}"]
    return sorted(module_name(p) for p in (PACKAGE / layer).rglob("*.py") if "__pycache__" not in p.parts)


NVFLARE_FREE = [
    layer
    for layer in LAYERS
    if layer not in NOT_NVFLARE_FREE and ((PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file())
]


def test_layers_import_without_nvflare():
    """Every nvflare-free layer, imported in layer order in one fresh interpreter (one start-up of torch & co., not
    one per layer): after each layer nvflare must still be absent, so a failure names the first layer that loads it."""
    layers = {layer: _layer_modules(layer) for layer in NVFLARE_FREE}
    code = (
        "import importlib, sys\n"
        f"for layer, modules in {layers!r}.items():\n"
        "    for m in modules: importlib.import_module(m)\n"
        "    bad = sorted(m for m in sys.modules if m == 'nvflare' or m.startswith('nvflare.'))\n"
        "    assert not bad, f'layer {layer!r} loads nvflare: {bad[:3]}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(layers) >= 8, sorted(layers)  # the walk found the package's layers


def test_cli_help_is_light():
    code = "import sys; from flare_vlp.cli import build_parser; build_parser(); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]


# -- the generic layers name no method ------------------------------------------------------------------------------

GENERIC_LAYERS = ("fl", "recipes", "experiments", "cli")
"""Layers that know methods only through the registry (flare_vlp.methods.registry): a method's name, package or
settings there would make them the second place that knows it."""


def method_words() -> tuple[set[str], set[str]]:
    """(registered method names, the packages that register them: ``flare_vlp.methods.<package>``)."""
    from flare_vlp.methods.registry import get_method, method_names

    names = set(method_names())
    packages = {get_method(n).config_cls.__module__.split(".")[2] for n in names}
    assert packages and all(p not in {"registry", "messages", "client", "strategy"} for p in packages), packages
    return names, packages


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of ``tree`` (module, classes, functions, and attribute docstrings)."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for i, stmt in enumerate(body):
            is_string = isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            if is_string and isinstance(stmt.value.value, str) and (i == 0 or isinstance(body[i - 1], ast.Assign)):
                out.add(id(stmt.value))
    return out


def method_mentions(source: str, names: set[str], packages: set[str], filename: str = "<src>") -> list[str]:
    """Where ``source`` names a method: an identifier with a method name as one of its ``_``-separated words or a
    string holding one as a word (any case: a help text or a title is user-facing), an import of a method package,
    or a docstring naming one in code style (lowercase; prose such as "FedAvg (McMahan et al.)" is fine)."""
    tree = ast.parse(source, filename=filename)
    docstrings = _docstrings(tree)
    words = sorted(names, key=len, reverse=True)
    word = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, words)) + r")(?![A-Za-z0-9_])")
    word_any_case = re.compile(word.pattern, re.IGNORECASE)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        identifiers = []
        if isinstance(node, ast.Name):
            identifiers = [node.id]
        elif isinstance(node, ast.Attribute):
            identifiers = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            identifiers = [node.name]
        elif isinstance(node, (ast.arg, ast.keyword)) and node.arg:
            identifiers = [node.arg]
        for ident in identifiers:
            low = ident.lower()
            if any(re.search(rf"(^|_){re.escape(n)}(_|$)", low) for n in names):
                found.append(f"line {line}: identifier {ident!r}")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.module == "flare_vlp.methods":
                modules += [f"flare_vlp.methods.{a.name}" for a in node.names]
            for module in modules:
                parts = module.split(".")
                if parts[:2] == ["flare_vlp", "methods"] and len(parts) > 2 and parts[2] in packages:
                    found.append(f"line {line}: imports {module}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            pattern = word if id(node) in docstrings else word_any_case
            hit = pattern.search(node.value)
            if hit:
                kind = "docstring" if id(node) in docstrings else "string"
                found.append(f"line {line}: {kind} names {hit.group(0)!r}")
    return found


def test_the_method_scan_finds_each_kind_of_mention():
    names, packages = {"fedavg", "feddra", "local_lora"}, {"fedavg", "feddra", "lora_ft"}
    source = (
        '"""Module docstring: reads like FedAvg (McMahan et al.), fine."""\n'
        "from flare_vlp.methods.registry import get_method\n"
        "from flare_vlp.methods.feddra.plots import dro_trajectories\n"
        "import flare_vlp.methods.lora_ft.evaluate\n"
        "from flare_vlp.methods import fedavg\n"
        "DEMO_FEDDRA = 1\n"
        "def run(method='fedavg'):\n"
        '    """Run e.g. ``feddra`` in code style."""\n'
        "    title = 'FedDRA site weights'\n"
        "    ok = 'fedavg_vlp and feddraX are other words'\n"
        "    return get_method(method).local_lora\n"
    )
    found = method_mentions(source, names, packages)
    assert {int(f.split()[1].rstrip(":")) for f in found} == {3, 4, 5, 6, 7, 8, 9, 11}, found


def test_the_generic_layers_name_no_method():
    """fl/, recipes/, experiments/ and cli/ know methods only through the registry: no method's name (as an
    identifier, a string or a code-style docstring word) and no import of a method's package."""
    names, packages = method_words()
    assert {"fedavg", "feddra"} <= names  # the registry was read
    offences = []
    for layer in GENERIC_LAYERS:
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for mention in method_mentions(path.read_text(encoding="utf-8"), names, packages, filename=str(path)):
                offences.append(f"{path.relative_to(ROOT)} {mention}")
    assert not offences, "the generic layers name registered methods (use the registry instead):\n" + "\n".join(
        offences
    )
