"""The dependency rules between ladder's packages, checked on the source with `ast`, never imported.

Every import counts: relative ones, `from x import y` (resolved to the submodule `x.y` when there is
one) and lazy ones inside functions; only `if TYPE_CHECKING:` blocks are skipped, as they never run.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from collections import defaultdict, deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "ingest", "adapters", "evaluation")
MAX_LINES = 400
SIZE_REASON = "modules stay under ~400 lines: split before one grows into vLLM's 2,200-line serving"

# Top layer first. A group (the longest matching module prefix) may import its own modules and the
# groups of layers below it; groups sharing a layer are independent of one another.
LAYERS: tuple[dict[str, str], ...] = (
    {"service.cli": "the commands compose every part; no part may depend on a command"},
    {"service.api": "HTTP lives here: routes translate requests, only the commands build the app"},
    {"service.chat": "serving orchestrates a request and returns values; it knows no HTTP"},
    {
        "service.engines": "generation behind one Protocol; it knows no retrieval or experiment",
        "service.experiments": "experiment arms and outcomes; they know no engine or retrieval",
        "service.knowledge": "retrieval over the index; it knows no engine or experiment",
    },
    {"evaluation": "offline measurement through a backend it is handed; it needs only the schema"},
    {"service.routing": "the configuration schema and the pure plan; nothing that performs a plan"},
    {
        "adapters": "adapter files and training: the service reads them, never the reverse",
        "ingest": "the index and its pipeline: the service reads them, never the reverse",
        "evaluation.pricing": "token cost has one home, shared by experiments and evaluation",
        "service.errors": "the one error hierarchy every layer raises",
        "service.messages": "the message value types every layer shares",
        "service.settings": "Settings is built first and passed down, so it depends on nothing",
    },
    {"service.model_loading": "the one lock every model load holds, below all that loads"},
)
GROUPS = {group: (rank, why) for rank, layer in enumerate(LAYERS) for group, why in layer.items()}

# Leaves: besides the standard library, each may import only what its entry lists.
ONLY: dict[str, tuple[tuple[str, ...], str]] = {
    "service.settings": (
        ("pydantic", "pydantic_settings"),
        "a leaf: importing the settings must not load the project or its libraries",
    ),
    "service.errors": ((), "every layer imports the hierarchy, so whatever it imported would load"),
    "service.model_loading": ((), "a lock every loader imports, so it must import nothing"),
    "service.messages": ((), "value types every layer shares, free of any library"),
    "service.routing.plan": (
        ("service.errors", "service.messages", "service.routing.budget", "service.routing.configs"),
        "the router is a pure function tested without I/O; passages reach it through a Protocol",
    ),
    "service.routing.budget": (
        ("service.messages",),
        "the router's token counts, composed from the engine's counter: no tokenizer of its own",
    ),
    "evaluation.pricing": (
        ("pydantic", "yaml"),
        "the experiments import the price table, which must not load the evaluation",
    ),
}

# Libraries that belong to one part: only the listed groups may import them.
HTTP = (("service.api", "service.cli"), "HTTP lives in service.api; commands may build the app")
CONFINED: dict[str, tuple[tuple[str, ...], str]] = {
    "fastapi": HTTP,
    "starlette": HTTP,
    "uvicorn": (("service.cli",), "only the serve command runs a server"),
    "typer": (("service.cli",), "argument parsing belongs to the commands"),
    "sqlalchemy": (("service.experiments",), "the experiments database has one owner"),
    "alembic": (("service.experiments",), "the experiments database has one owner"),
    "chromadb": (("ingest.index",), "ingest.index is the one place that knows Chroma"),
}

FAST_ENTRY_POINTS = ("service.cli.main", "service.api.app")
HEAVY = ("torch", "transformers", "peft", "sentence_transformers", "chromadb", "llama_index")
HEAVY_REASON = "`ladder --help` and the API start fast: heavy libraries load where they are used"


@dataclass(frozen=True)
class Module:
    """One source file of the project."""

    name: str
    path: str
    is_package: bool
    source: str


@dataclass(frozen=True)
class Import:
    """One imported name, resolved to an absolute module."""

    importer: str
    path: str
    line: int
    statement: str
    target: str
    eager: bool  # runs when the importer is imported (not inside a function)

    def where(self) -> str:
        return f"{self.path}:{self.line}: `{self.statement}`"


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def top(name: str) -> str:
    return name.split(".")[0]


def group_of(name: str) -> str | None:
    return max((group for group in GROUPS if within(name, group)), key=len, default=None)


def project_modules() -> list[Module]:
    """Every .py file under the project's packages."""
    modules = []
    for path in sorted(file for package in PACKAGES for file in (ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        relative = path.relative_to(ROOT).as_posix()
        modules.append(Module(name, relative, is_package, path.read_text(encoding="utf-8")))
    return modules


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class ImportCollector(ast.NodeVisitor):
    """Every import a module makes, resolved against the project's module names."""

    def __init__(self, module: Module, known: Collection[str]) -> None:
        self.module = module
        self.known = known
        self.found: list[Import] = []
        self.depth = 0

    def visit_If(self, node: ast.If) -> None:
        if not is_type_checking(node.test):
            self.generic_visit(node)
            return
        for statement in node.orelse:
            self.visit(statement)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(node, f"import {alias.name}", alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self.absolute(node)
        for alias in node.names:
            statement = f"from {'.' * node.level}{node.module or ''} import {alias.name}"
            submodule = f"{base}.{alias.name}"
            self.add(node, statement, submodule if submodule in self.known else base)

    def absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self.module.name.split(".")[: None if self.module.is_package else -1]
        if node.level > len(package):
            raise ValueError(f"{self.module.path}:{node.lineno}: relative import beyond the top")
        anchor = package[: len(package) - node.level + 1]
        return ".".join([*anchor, *([node.module] if node.module else [])])

    def add(self, node: ast.stmt, statement: str, target: str) -> None:
        found = Import(
            self.module.name, self.module.path, node.lineno, statement, target, self.depth == 0
        )
        self.found.append(found)


def collect(modules: Sequence[Module], known: Collection[str]) -> list[Import]:
    imports = []
    for module in modules:
        collector = ImportCollector(module, known)
        collector.visit(ast.parse(module.source, module.path))
        imports.extend(collector.found)
    return imports


def layering_violations(imports: Sequence[Import]) -> Iterator[str]:
    for found in imports:
        if top(found.target) not in PACKAGES:
            continue
        source, target = group_of(found.importer), group_of(found.target)
        if source is None or target is None:
            unplaced = found.importer if source is None else found.target
            yield f"{found.where()}: {unplaced} belongs to no layer; place it in LAYERS"
        elif source != target and GROUPS[target][0] <= GROUPS[source][0]:
            position = "beside" if GROUPS[target][0] == GROUPS[source][0] else "above"
            yield (
                f"{found.where()}: {source} may import only layers below it and {target} is "
                f"{position} it; {source}: {GROUPS[source][1]}"
            )


def leaf_violations(imports: Sequence[Import]) -> Iterator[str]:
    for found in imports:
        if found.importer not in ONLY or top(found.target) in sys.stdlib_module_names:
            continue
        allowed, why = ONLY[found.importer]
        if not any(within(found.target, name) for name in allowed):
            listed = ", ".join(("the standard library", *allowed))
            yield f"{found.where()}: {found.importer} may import only {listed}; {why}"


def confinement_violations(imports: Sequence[Import]) -> Iterator[str]:
    for found in imports:
        owners, why = CONFINED.get(top(found.target), ((), ""))
        if owners and not any(within(found.importer, owner) for owner in owners):
            yield f"{found.where()}: {top(found.target)} is for {', '.join(owners)} only; {why}"


def heavy_violations(imports: Sequence[Import]) -> Iterator[str]:
    """Heavy libraries reached through module-level imports from a fast entry point."""
    eager: defaultdict[str, list[Import]] = defaultdict(list)
    for found in imports:
        if found.eager:
            eager[found.importer].append(found)
    for entry in FAST_ENTRY_POINTS:
        chains: dict[str, tuple[Import, ...]] = {entry: ()}
        queue = deque([entry])
        while queue:
            module = queue.popleft()
            for found in eager[module]:
                chain = (*chains[module], found)
                if top(found.target) in HEAVY:
                    path = " -> ".join(step.where() for step in chain)
                    yield f"{entry} loads {top(found.target)} when imported: {path}; {HEAVY_REASON}"
                elif top(found.target) in PACKAGES:
                    parts = found.target.split(".")
                    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
                    for loaded in (".".join(parts[:end]) for end in range(1, len(parts) + 1)):
                        if loaded not in chains:
                            chains[loaded] = chain
                            queue.append(loaded)


def oversized(modules: Sequence[Module]) -> Iterator[str]:
    for module in modules:
        lines = len(module.source.splitlines())
        if lines > MAX_LINES:
            yield f"{module.path}: {lines} lines, over {MAX_LINES}; {SIZE_REASON}"


@pytest.fixture(scope="module")
def modules() -> list[Module]:
    return project_modules()


@pytest.fixture(scope="module")
def known(modules: list[Module]) -> frozenset[str]:
    """Every module and package; a folder without __init__.py (service/engines) is one too."""
    parts = [module.name.split(".") for module in modules]
    return frozenset(".".join(names[:end]) for names in parts for end in range(1, len(names) + 1))


@pytest.fixture(scope="module")
def imports(modules: list[Module], known: frozenset[str]) -> list[Import]:
    return collect(modules, known)


def report(violations: Iterator[str]) -> str:
    return "\n".join(violations)


def test_each_group_imports_only_its_own_modules_and_layers_below(imports: list[Import]) -> None:
    assert not report(layering_violations(imports))


def test_leaf_modules_import_only_what_their_entry_allows(imports: list[Import]) -> None:
    assert not report(leaf_violations(imports))


def test_libraries_are_imported_only_by_the_part_that_owns_them(imports: list[Import]) -> None:
    assert not report(confinement_violations(imports))


def test_fast_entry_points_load_no_heavy_library_when_imported(imports: list[Import]) -> None:
    assert not report(heavy_violations(imports))


def test_no_module_is_over_the_line_limit(modules: list[Module]) -> None:
    assert not report(oversized(modules))


def test_every_rule_names_modules_that_exist(known: frozenset[str]) -> None:
    owners = {owner for owners, _ in CONFINED.values() for owner in owners}
    allowed = {name for names, _ in ONLY.values() for name in names if top(name) in PACKAGES}
    named = {*GROUPS, *ONLY, *owners, *allowed, *FAST_ENTRY_POINTS}
    assert sorted(named - known) == []


def synthetic(name: str, source: str, *, is_package: bool = False) -> Module:
    path = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    return Module(name, path, is_package, textwrap.dedent(source))


def test_checker_reports_settings_importing_an_engine(known: frozenset[str]) -> None:
    settings = synthetic("service.settings", "import os\n\nfrom service.engines import base\n")
    found = collect([settings], known)
    layering, leaf = [*layering_violations(found)], [*leaf_violations(found)]
    assert len(layering) == len(leaf) == 1
    where = "service/settings.py:3: `from service.engines import base`"
    assert layering[0].startswith(where) and GROUPS["service.settings"][1] in layering[0]
    assert leaf[0].startswith(where) and ONLY["service.settings"][1] in leaf[0]


def test_checker_resolves_relative_and_lazy_imports_but_skips_type_checking(
    known: frozenset[str],
) -> None:
    plan = synthetic(
        "service.routing.plan",
        """\
        from typing import TYPE_CHECKING

        from service import messages

        if TYPE_CHECKING:
            from service.chat.protocol import ChatCompletionRequest


        def answer() -> None:
            from ..engines import base
        """,
    )
    found = [step for step in collect([plan], known) if top(step.target) in PACKAGES]
    assert [(step.line, step.target, step.eager) for step in found] == [
        (3, "service.messages", True),
        (10, "service.engines.base", False),
    ]
    assert [*leaf_violations(found)] == [
        "service/routing/plan.py:10: `from ..engines import base`: service.routing.plan may "
        "import only the standard library, service.errors, service.messages, "
        f"service.routing.budget, service.routing.configs; {ONLY['service.routing.plan'][1]}"
    ]


def test_checker_follows_module_level_imports_to_a_heavy_library(known: frozenset[str]) -> None:
    app = synthetic("service.api.app", "from service.engines import local\n")
    local = synthetic("service.engines.local", "import json\n\nimport torch\n")
    main = synthetic("service.cli.main", "def serve() -> None:\n    import torch\n")
    assert [*heavy_violations(collect([app, local, main], known))] == [
        "service.api.app loads torch when imported: service/api/app.py:1: "
        "`from service.engines import local` -> service/engines/local.py:3: `import torch`; "
        + HEAVY_REASON
    ]


def test_checker_reports_http_in_the_serving_layer_and_an_oversized_module(
    known: frozenset[str],
) -> None:
    serving = synthetic("service.chat.serving", "from fastapi import Response\n" + "x = 1\n" * 400)
    assert [*confinement_violations(collect([serving], known))] == [
        f"service/chat/serving.py:1: `from fastapi import Response`: fastapi is for "
        f"service.api, service.cli only; {HTTP[1]}"
    ]
    assert [*oversized([serving])] == [
        f"service/chat/serving.py: 401 lines, over 400; {SIZE_REASON}"
    ]
