"""The shape the code keeps: no import cycle among our modules, and a trainer that knows data_prep only through
its contract."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("data_prep", "trainer", "configs")
# What the trainer may import from data_prep: the dataset contract, the library-notice filters, the progress display,
# and which files of a folder are read (trainer.predict reads a folder as data_prep does).
TRAINER_MAY_IMPORT = {"data_prep", "data_prep.schema", "data_prep.logs", "data_prep.display", "data_prep.walk"}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_at_load(path: pathlib.Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports outside any function (type-checking imports included: a cycle for a type hint
    is still a cycle to whoever moves the code)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        candidates = []
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks.
            candidates = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            candidates = [node]
        for statement in candidates:
            if isinstance(statement, ast.Import):
                names = [alias.name for alias in statement.names]
            elif statement.level == 0 and statement.module:
                names = [statement.module] + [f"{statement.module}.{alias.name}" for alias in statement.names]
            else:
                names = []
            found.update(name for name in names if name in known)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    known = set(paths)
    return {name: imports_at_load(path, known) - {name} for name, path in paths.items()}


def test_no_import_cycle(graph):
    visiting, done, cycles = [], set(), []

    def visit(name):
        if name in done:
            return
        if name in visiting:
            cycles.append(visiting[visiting.index(name) :] + [name])
            return
        visiting.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert not cycles, f"import cycles: {[' -> '.join(c) for c in cycles]}"


def test_the_trainer_knows_data_prep_only_through_the_contract(graph):
    reaching = {
        (name, imported)
        for name, targets in graph.items()
        if name.startswith("trainer")
        for imported in targets
        if imported.startswith("data_prep") and imported not in TRAINER_MAY_IMPORT
    }
    assert not reaching, f"trainer modules importing data_prep beyond its contract: {sorted(reaching)}"


def test_the_graph_sees_the_imports_it_checks(graph):
    """Guards the two tests above against a parser that finds nothing."""
    assert "data_prep.schema" in graph["trainer.input_pipeline"]
    assert "data_prep.pipeline" in graph["data_prep.driver"]


def test_data_prep_runs_trainer_code_only_to_extract_features_and_show_the_models_view():
    """The places data_prep imports the trainer: feature extraction runs the trainer's own base and preprocessing,
    so features are what the frozen base computes in training; show draws training images through the trainer's own
    decode, resize and augmentation, so its grid is what the model sees."""
    importing = set()
    for path in (ROOT / "data_prep").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            if any(name == "trainer" or name.startswith("trainer.") for name in names):
                importing.add(module_name(path))
    assert importing == {"data_prep.extract_features", "data_prep.show"}
