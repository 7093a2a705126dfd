"""The package's layers point one way: every jaxgan module imports only modules of its own layer or
below, the imports have no cycle, and no module uses another's private names."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxgan"

# Bottom to top (README's "The code" lists them so). A module may import its own layer and those below.
LAYERS = [
    ("foundation", {"cli", "config", "signals", "png"}),
    ("pure computation", {"optim", "losses", "convolution", "models", "steps", "sampling", "parallel"}),
    ("data and measurement", {"data", "visualize", "classifier", "metrics", "report", "memory"}),
    ("files and checkpoints", {"checkpoint", "rundir", "convert", "weights", "multirun"}),
    ("the loop", {"train"}),
    ("entry points", {"main", "generate", "evaluate", "__main__", "__init__"}),
]
LAYER_OF = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}


def is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` (what runs under `python -m jaxgan.X` is not the module's import)."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def imports_of(path: Path) -> tuple[set[str], set[str], list[str]]:
    """(the jaxgan modules `path` imports, anywhere but its __main__ block; the local names bound to
    them; the private names it imports from them)."""
    tree = ast.parse(path.read_text())
    modules, aliases, private = set(), set(), []

    def visit(node: ast.AST) -> None:
        if is_main_guard(node):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxgan":
            parts = node.module.split(".")
            if len(parts) == 1:  # from jaxgan import train, data as data_lib
                for alias in node.names:
                    modules.add(alias.name)
                    aliases.add(alias.asname or alias.name)
            else:  # from jaxgan.steps import GANState
                modules.add(parts[1])
                private.extend(f"{parts[1]}.{a.name}" for a in node.names if a.name.startswith("_"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jaxgan."):
                    modules.add(alias.name.split(".")[1])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    for node in ast.walk(tree):  # train._evaluator, checkpoint._first_line, ...
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            private.append(f"{node.value.id}.{node.attr}")
    return modules, aliases, private


def graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path)[0] - {path.stem} for path in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_layer():
    assert set(graph()) == set(LAYER_OF), set(graph()) ^ set(LAYER_OF)


def test_imports_point_down_the_layers():
    upward = [
        f"{module} ({LAYERS[LAYER_OF[module]][0]}) imports {used} ({LAYERS[LAYER_OF[used]][0]})"
        for module, used_modules in graph().items()
        for used in sorted(used_modules)
        if LAYER_OF[used] > LAYER_OF[module]
    ]
    assert not upward, upward


def test_the_imports_have_no_cycle():
    edges, done, path = graph(), set(), []

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in path, " -> ".join([*path[path.index(module) :], module])
        path.append(module)
        for used in sorted(edges[module]):
            visit(used)
        path.pop()
        done.add(module)

    for module in edges:
        visit(module)


def test_no_module_uses_a_private_name_of_another():
    used = {path.stem: imports_of(path)[2] for path in PACKAGE.glob("*.py")}
    assert not {module: names for module, names in used.items() if names}


def test_the_checker_sees_what_it_must_refuse(tmp_path):
    """The checks above are only as good as `imports_of`: it finds function-local imports and private names."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from jaxgan import train\n"
        "def f():\n    from jaxgan.checkpoint import _first_line\n    import jaxgan.rundir\n"
        "    return train._evaluator\n"
        "if __name__ == '__main__':\n    from jaxgan.main import main\n"
    )
    modules, _, private = imports_of(sample)
    assert modules == {"train", "checkpoint", "rundir"}
    assert sorted(private) == ["checkpoint._first_line", "train._evaluator"]
