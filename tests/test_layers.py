"""The import graph of src/llkd, read with ``ast`` (nothing imported): no import from a lower
layer to a higher one, and no cycle between modules. Every import counts, also those inside
functions (lazy, to keep the CLI's start free of torch) and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module belongs to the most specific entry that is its name or a package
# above it. evaluation (metrics, metering) sits at the bottom: the teacher's calibration and the
# trainer score with it; reporting sits above the student and reads its results. The benchmark
# is outside: benchmarks/llkd_bench uses the library, never the reverse.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("llkd.errors", "llkd.registry", "llkd.hardware", "llkd.config", "llkd.models", "llkd.data", "llkd.resources",
                    "llkd.evaluation")),
    ("teacher", ("llkd.teacher",)),
    ("selection", ("llkd.selection", "llkd.acquisition")),
    ("student", ("llkd.student",)),
    ("reports", ("llkd.reporting",)),
    # the package root re-exports the Python API (lazily: it imports nothing when loaded)
    ("application", ("llkd", "llkd.pipeline", "llkd.entity_pipeline", "llkd.distill", "llkd.api", "llkd.serve", "llkd.preflight")),
    ("commands", ("llkd.commands", "llkd.cli")),
]

STUDENT_RESULTS = {"llkd.student.result"}  # what the reports may read of the student

# (importer, imported): why. Documented exceptions to the rules above; none at present.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "llkd").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules ``name`` imports, absolute (``from a import b`` is a.b when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return found


def is_in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_of(name: str) -> int:
    best, layer = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if is_in(name, prefix) and len(prefix) > best:
                best, layer = len(prefix), index
    assert layer is not None, f"{name} is in no layer: add it to LAYERS in {__file__}"
    return layer


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: {m for m in imports(name, path, set(found)) if is_in(m, "llkd")} for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
            if len(component) > 1 or v in edges.get(v, ()):
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer_and_every_import_is_a_module():
    edges = graph()
    for name, targets in edges.items():
        layer_of(name)
        assert targets <= set(edges), f"{name} imports {sorted(targets - set(edges))}, which are not modules of src/llkd"


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer to a higher one. Importing llkd.a.b also runs
    llkd/a/__init__.py, so that counts as an import of llkd.a (the root's imports are lazy)."""
    up = []
    for name, targets in sorted(edges.items()):
        for target in sorted(targets):
            parents = [target.rsplit(".", k)[0] for k in range(1, target.count("."))]
            for imported in [target, *(p for p in parents if p in edges)]:
                if layer_of(imported) > layer_of(name) and (name, imported) not in EXCEPTIONS:
                    up.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})")
    return up


def test_no_import_runs_up_a_layer():
    up = upward(graph())
    assert not up, "imports from a lower layer to a higher one:\n" + "\n".join(up)


def test_reports_read_the_students_results_not_the_trainer():
    """A report takes what a run produced (TrainResult), so it never loads the training loop."""
    edges = graph()
    reports = [name for name in edges if LAYERS[layer_of(name)][0] == "reports"]
    assert reports
    wrong = [(name, t) for name in reports for t in edges[name] if t.startswith("llkd.student.") and t not in STUDENT_RESULTS]
    assert wrong == []


def test_the_package_root_imports_nothing_when_loaded():
    """Every import of a submodule runs llkd/__init__.py: its imports must all be lazy."""
    tree = ast.parse((SRC / "llkd" / "__init__.py").read_text(encoding="utf-8"))
    eager = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and any(
        (a.name if isinstance(n, ast.Import) else (n.module or "")).startswith("llkd") for a in n.names)]
    assert not eager


def test_no_import_cycle():
    edges = graph()
    for a, b in EXCEPTIONS:
        edges[a] = edges[a] - {b}
    assert cycles(edges) == []


def test_the_library_never_imports_the_benchmark():
    """llkd bench and its siblings come from benchmarks/ through the llkd.commands entry points."""
    found = modules()
    wrong = [(name, m) for name, path in found.items() for m in imports(name, path, set(found)) if is_in(m, "llkd_bench")]
    assert wrong == []


def test_documented_exceptions_still_exist():
    edges = graph()
    assert [pair for pair in EXCEPTIONS if pair[1] not in edges.get(pair[0], set())] == []


def test_the_checker_finds_an_upward_import_and_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]] and cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("llkd.evaluation.metrics") < layer_of("llkd.student.trainer") < layer_of("llkd.reporting.run_report")
    assert layer_of("llkd.pipeline") < layer_of("llkd.commands.train") == layer_of("llkd.cli")
    planted = {"llkd.evaluation.metrics": {"llkd.student.trainer"}, "llkd.pipeline": {"llkd.cli", "llkd.teacher.hf"},
               "llkd.student.trainer": set(), "llkd.cli": set(), "llkd.teacher.hf": set(), "llkd.teacher": set()}
    assert upward(planted) == ["llkd.evaluation.metrics (foundation) imports llkd.student.trainer (student)",
                               "llkd.pipeline (application) imports llkd.cli (commands)"]
    assert upward({"llkd.data.loading": {"llkd.teacher.hf"}, "llkd.teacher": set(), "llkd.teacher.hf": set()}) == [
        "llkd.data.loading (foundation) imports llkd.teacher.hf (teacher)", "llkd.data.loading (foundation) imports llkd.teacher (teacher)"]


def test_no_function_is_over_80_lines() -> None:
    """A function that does not fit on a screen hides its steps (issue 19's bar for src/llkd)."""
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
