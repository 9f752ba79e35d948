"""What /diagnostics says: levels and messages a user acts on."""
from __future__ import annotations

import pytest

pytest.importorskip('diagnostic_msgs', reason='ROS 2 message packages are not installed')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from sap_ros.ros.diagnostics import NodeStats, RejectKind, diagnostic_array  # noqa: E402


def _status(stats: NodeStats, state: str = 'active') -> DiagnosticStatus:
    return diagnostic_array(stats, 'sap_node', state, None).status[0]


def _processed(ids_left) -> NodeStats:
    stats = NodeStats()
    stats.count_processed(latency_ms=10.0, pipeline_ms=8.0, objects=2, memory_objects=2,
                          memory_entries=5, memory_bytes=1000, ids_left=ids_left)
    return stats


def test_healthy_active_node_is_ok_and_reports_ids_left() -> None:
    status = _status(_processed(ids_left=65000))
    assert status.level == DiagnosticStatus.OK
    assert {kv.key: kv.value for kv in status.values}['ids_left'] == '65000'


def test_exhausted_ids_warn_and_tell_to_reset() -> None:
    status = _status(_processed(ids_left=0))
    assert status.level == DiagnosticStatus.WARN
    assert 'ids exhausted' in status.message and 'reset' in status.message


def test_reset_clears_the_exhausted_warning() -> None:
    stats = _processed(ids_left=0)
    stats.clear_memory()
    assert _status(stats).level == DiagnosticStatus.OK


def test_pipeline_errors_and_inactive_states_warn() -> None:
    stats = _processed(ids_left=10)
    assert _status(stats, 'inactive').level == DiagnosticStatus.WARN
    stats.count_rejected(RejectKind.PIPELINE, 'CUDA out of memory')
    status = _status(stats)
    assert status.level == DiagnosticStatus.WARN and 'CUDA out of memory' in status.message
