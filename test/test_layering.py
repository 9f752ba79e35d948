"""The tree says what runs on the robot: runtime packages never import evaluation or tools."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'sap_ros'
# What runs on the robot (the node and everything it loads).
RUNTIME = ('sap_ros.errors', 'sap_ros.config', 'sap_ros.sphere', 'sap_ros.engine', 'sap_ros.io',
           'sap_ros.ros')
# Evaluation and programs built on top of the runtime (training too: the node never trains).
EVALUATION = ('sap_ros.eval', 'sap_ros.bench', 'sap_ros.synth', 'sap_ros.demo', 'sap_ros.train')
# Third-party packages that only evaluation may use.
EVALUATION_ONLY_LIBS = ('scipy', 'matplotlib', 'py360convert', 'ray', 'rosbags', 'training',
                        'tensordict', 'tensorboard')


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def _imports(path: Path) -> Set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    names: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f'{node.module}.{alias.name}' for alias in node.names)
    return names


def _graph() -> Dict[str, Set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob('*.py')}


def _within(name: str, prefixes: tuple) -> bool:
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def test_every_module_is_runtime_or_evaluation():
    """A new package has to say which side it is on."""
    unplaced = [m for m in _graph() if m != 'sap_ros'
                and not _within(m, RUNTIME) and not _within(m, EVALUATION)]
    assert not unplaced, f'modules in neither RUNTIME nor EVALUATION: {unplaced}'


@pytest.mark.parametrize('forbidden', [EVALUATION, EVALUATION_ONLY_LIBS],
                         ids=['sap_ros-evaluation', 'evaluation-libraries'])
def test_runtime_never_imports_evaluation(forbidden):
    """No edge from a runtime module into evaluation, benchmarks, synthetic data or the demo."""
    edges = [f'{module} -> {name}' for module, names in sorted(_graph().items())
             if _within(module, RUNTIME) for name in sorted(names) if _within(name, forbidden)]
    assert not edges, 'runtime imports evaluation:\n' + '\n'.join(edges)


def _cycle(graph: Dict[str, Set[str]], package: str) -> List[str]:
    """One import cycle among the modules of ``package`` (lazy imports count), or []."""
    inside = {m: sorted(n for n in names if _within(n, (package,)) and n in graph and n != m)
              for m, names in graph.items() if _within(m, (package,))}
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(module: str) -> List[str]:
        state[module] = 1
        path.append(module)
        for name in inside.get(module, []):
            if state.get(name) == 1:
                return path[path.index(name):] + [name]
            if name not in state:
                found = visit(name)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return []

    for module in sorted(inside):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return []


@pytest.mark.parametrize('package', ['sap_ros.sphere'])
def test_no_import_cycle_in(package):
    """Geometry modules import each other one way (a shared function lives in one module)."""
    cycle = _cycle(_graph(), package)
    assert not cycle, 'import cycle: ' + ' -> '.join(cycle)


def test_the_cycle_check_sees_a_cycle():
    graph = {'p.a': {'p.b'}, 'p.b': {'p.c', 'numpy'}, 'p.c': {'p.a'}, 'p.d': {'p.a'}}
    assert _cycle(graph, 'p') == ['p.a', 'p.b', 'p.c', 'p.a']
    assert _cycle({'p.a': {'p.b'}, 'p.b': set()}, 'p') == []


def test_the_check_sees_an_edge(tmp_path):
    """The scanner finds a lazy import inside a function (so the test above can fail)."""
    source = tmp_path / 'mod.py'
    source.write_text('def f():\n    from sap_ros.eval.oracle import GeometricOracle\n')
    assert 'sap_ros.eval.oracle' in _imports(source)
