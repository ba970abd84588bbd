"""The registry of storable classes: what save() writes and load() builds, and the
package's import graph, which must have no circle."""

import ast
import pathlib

import numpy as np
import pytest

import qlsk
from qlsk import LoraRegressor, MLPRegressor, MultiFidelityGPRegressor
from qlsk.estimators import registry

PACKAGE = pathlib.Path(qlsk.__file__).parent


def test_the_registry_holds_the_storable_estimators_and_nothing_else():
    assert set(registry.names()) == {"MLPRegressor", "FineTuneRegressor", "LoraRegressor",
                                     "QueryableLoraRegressor", "MultiFidelityGPRegressor",
                                     "ConditionedLoraRegressor", "SharedMemoryRegressor",
                                     "FewShotRegressor"}
    assert registry.entry_named("FewShotRegressor").nested == ("shared",)
    assert registry.entry_named("MultiFidelityGPRegressor").key == "gp"
    assert registry.entry_for(LoraRegressor()).network
    assert registry.entry_for(qlsk.TransferRegressor()) is None
    assert registry.entry_named(None) is None


def test_a_subclass_is_not_stored_as_its_parent(tmp_path):
    class MyLora(LoraRegressor):
        pass

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 2)), rng.normal(size=30)
    base = MLPRegressor(hidden_layer_sizes=(8,), max_epochs=2, random_state=0).fit(X, y)
    model = MyLora(base=base, rank=1, max_steps=5, random_state=0).fit(X, y)
    with pytest.raises(TypeError, match="keep a MyLora with pickle"):
        qlsk.save(model, tmp_path / "m.qlsk")
    assert not (tmp_path / "m.qlsk").exists()


def test_registering_needs_dump_and_restore_together_and_one_class_per_name():
    with pytest.raises(TypeError, match="both dump and restore"):
        registry.storable(dump=lambda e: ({}, {}))
    with pytest.raises(ValueError, match="already registered as 'MultiFidelityGPRegressor'"):
        registry.storable(type("MultiFidelityGPRegressor", (), {}))
    assert registry.entry_named("MultiFidelityGPRegressor").cls is MultiFidelityGPRegressor


def _imports(path: pathlib.Path) -> set[str]:
    """The qlsk modules ``path`` imports, at module level or inside functions."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{anchor}.{node.module}" if node.module else anchor
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_module_of_the_package_imports_itself_back():
    files = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p
             for p in PACKAGE.rglob("*.py")}
    modules = {m.removesuffix(".__init__") for m in files}
    graph = {}
    for name, path in files.items():
        name = name.removesuffix(".__init__")
        # a package's __init__ only re-exports: edges to it are not dependencies
        graph[name] = {m for m in _imports(path) if m in modules and m != name
                       and not (PACKAGE / (m.replace(".", "/")[5:]) / "__init__.py").exists()}
    assert "qlsk.estimators.persistence" in graph["qlsk.estimators.bases"]  # lazy ones count

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c]
    assert not cycles, cycles[0]
