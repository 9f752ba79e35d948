"""Pointers and extents from device label maps against ``object_records`` / ``object_extents``."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import pytest
import torch

from sap_ros.engine.records import object_records
from sap_ros.engine.torch_records import (
    download_frame,
    object_table_device,
    records_from_table,
)
from sap_ros.engine.types import ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.extents import object_extents, uncovered_fraction

H, W = 64, 128


def device_pointers(labels: np.ndarray, ids: Sequence[int],
                    work: np.ndarray | None = None) -> tuple:
    lab = torch.from_numpy(labels.astype(np.int32))
    wk = lab if work is None else torch.from_numpy(work.astype(np.int32))
    host, table = download_frame(lab, object_table_device(lab, wk, ids), ids)
    assert table.uncovered_fraction == pytest.approx(uncovered_fraction(wk.numpy()), abs=1e-12)
    return host, records_from_table(table), table.extents()


def assert_same(a: List[ObjectRecord], b: List[ObjectRecord]) -> None:
    assert [p.id for p in a] == [p.id for p in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(y.bearing, x.bearing, atol=1e-9)
        assert (y.width_deg, y.height_deg, y.area_px) == (x.width_deg, x.height_deg, x.area_px)
        assert y.solid_angle_sr == pytest.approx(x.solid_angle_sr, rel=1e-12)
        if abs(x.bearing[2]) < 1.0 - 1e-9:  # at a pole the longitude is rounding noise
            assert y.lon_deg == pytest.approx(x.lon_deg, abs=1e-9)


def test_seam_crossing_ring_pole_and_plain_objects_match_the_host() -> None:
    labels = np.zeros((H, W), np.uint16)
    labels[20:30, :6] = 3
    labels[20:30, -4:] = 3           # crosses the 180 deg seam: narrow, centred on it
    labels[H // 2 - 1:H // 2 + 1] = 7  # a full ring on the equator: degenerate centroid
    labels[:3] = 60000               # a cap round the north pole
    labels[40:50, 50:70] = 12
    host_map, pointers, extents = device_pointers(labels, [3, 7, 12, 60000])
    assert np.array_equal(host_map, labels)
    expected = object_records(labels)
    assert_same(expected, pointers)
    seam = pointers[0]
    assert seam.width_deg == pytest.approx(10 * 360 / W) and abs(seam.lon_deg) > 170
    # Extents as the host rule: the ring gets the whole sphere, the others a cap.
    reference = object_extents(labels, [3, 7, 12, 60000])
    assert sorted(extents) == sorted(reference) == [3, 7, 12, 60000]
    assert extents[7][1] == 180.0
    for object_id, (centroid, radius) in reference.items():
        np.testing.assert_allclose(extents[object_id][0], centroid, atol=1e-9)
        assert extents[object_id][1] == pytest.approx(radius, abs=1e-9)


def test_ids_not_in_the_map_and_ids_not_asked_for_are_left_out() -> None:
    labels = np.zeros((H, W), np.uint16)
    labels[10:20, 10:20] = 4
    labels[30:40, 30:40] = 5
    work = np.zeros((H // 2, W // 2), np.uint16)
    work[5:10, 5:10] = 5
    _, pointers, extents = device_pointers(labels, [9, 4], work)
    assert [p.id for p in pointers] == [4]
    assert extents == {}  # 4 is not on the work grid, 5 was not asked for
    _, _, extents = device_pointers(labels, [5], work)
    assert list(extents) == [5] and extents[5][1] > 0.0


def test_no_ids_gives_no_records_and_the_map_still_comes_back() -> None:
    labels = np.full((H, W), 2, np.uint16)
    host_map, pointers, extents = device_pointers(labels, [])
    assert np.array_equal(host_map, labels) and pointers == [] and extents == {}


@pytest.mark.parametrize('ids', [[0], [70000], [3, 3]])
def test_bad_ids_are_rejected(ids: List[int]) -> None:
    with pytest.raises(InvalidInputError, match='ids'):
        object_table_device(torch.zeros(H, W, dtype=torch.int32),
                            torch.zeros(H, W, dtype=torch.int32), ids)


def test_bad_maps_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match='labels'):
        object_table_device(torch.zeros(H, W, 1), torch.zeros(H, W), [1])


def test_device_tables_are_freed_by_the_engines_close() -> None:
    from sap_ros.config import PipelineConfig
    from sap_ros.engine import torch_records
    from sap_ros.engine.pipeline import SapPipeline
    from sap_ros.eval.oracle_segmenter import OracleSegmenter
    from sap_ros.sphere.layout import PatchLayout
    device_pointers(np.ones((H, W), np.uint16), [1])
    assert torch_records._TABLES  # built once per size and device, reused by later frames
    config = PipelineConfig.from_flat({'model.device': 'cpu', 'patches.size_px': 64,
                                       'model.image_size': 64})
    SapPipeline(config, segmenter=OracleSegmenter(PatchLayout.from_config(config.patches))
                ).close()
    assert not torch_records._TABLES
