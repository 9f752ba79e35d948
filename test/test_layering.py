"""The tree says what runs on the robot: runtime packages never import evaluation or tools."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

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


def test_the_check_sees_an_edge(tmp_path):
    """The scanner finds a lazy import inside a function (so the test above can fail)."""
    source = tmp_path / 'mod.py'
    source.write_text('def f():\n    from sap_ros.eval.oracle import GeometricOracle\n')
    assert 'sap_ros.eval.oracle' in _imports(source)
