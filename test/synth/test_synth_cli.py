"""``sap_synth``: a tiny synthetic bag, read back with bagio; deterministic; safe CLI."""
from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from sap_ros.eval.bags import bag_topics, iter_messages, open_image_stream, open_label_stream
from sap_ros.synth.cli import (
    CLASS_NAMES_TOPIC,
    COMPRESSED_TOPIC,
    IMAGE_TOPIC,
    LABEL_TOPIC,
    SEMANTIC_TOPIC,
    main,
)
from sap_ros.synth.scene import SceneSpec, SynthScene
from sap_ros.synth.semantic import KIND_CLASS, SEMANTIC_CLASSES

TINY = ['--frames', '3', '--width', '256', '--quiet']


def payloads(bag: Path) -> dict:
    """Every message of the bag as (log time, raw fields) per topic, for exact comparison."""
    out = {}
    for topic in bag_topics(bag):
        if topic == CLASS_NAMES_TOPIC:  # std_msgs/String: no header
            out[topic] = [(t, msg.data) for t, msg in iter_messages(bag, topic)]
            continue
        out[topic] = [(t, msg.header.stamp.sec, msg.header.stamp.nanosec, bytes(msg.data))
                      for t, msg in iter_messages(bag, topic)]
    return out


def test_tiny_bag_reads_back(tmp_path):
    out = tmp_path / 'synth'
    assert main([str(out), *TINY, '--fps', '4']) == 0
    assert bag_topics(out) == {IMAGE_TOPIC: ('sensor_msgs/msg/Image', 3),
                               LABEL_TOPIC: ('sensor_msgs/msg/Image', 3),
                               SEMANTIC_TOPIC: ('sensor_msgs/msg/Image', 3),
                               CLASS_NAMES_TOPIC: ('std_msgs/msg/String', 1)}
    frames = list(open_image_stream(out, IMAGE_TOPIC))
    labels = list(open_label_stream(out, LABEL_TOPIC, use_header_stamp=True))
    stamps = [f.header_stamp_ns for f in frames]
    assert np.diff(stamps).tolist() == [250_000_000, 250_000_000]  # 1 / fps apart
    assert [t for t, _ in labels] == stamps  # same header stamps on both topics
    for frame, (_, lab) in zip(frames, labels):
        assert frame.frame_id == 'camera'
        assert frame.rgb.shape == (128, 256, 3)
        assert lab.shape == (128, 256) and lab.dtype == np.uint16
        assert len(np.unique(lab)) > 3  # background plus several instances
    assert not np.array_equal(frames[0].rgb, frames[2].rgb)  # the camera moves
    (names_stamp, names), = list(iter_messages(out, CLASS_NAMES_TOPIC))
    assert names_stamp == stamps[0]
    assert json.loads(names.data) == {'class_names': list(SEMANTIC_CLASSES)}
    semantic = list(open_label_stream(out, SEMANTIC_TOPIC, use_header_stamp=True))
    assert [t for t, _ in semantic] == stamps
    scene = SynthScene(SceneSpec())
    for (_, lab), (_, sem) in zip(labels, semantic):
        assert sem.shape == lab.shape and sem.dtype == np.uint16
        assert sem.min() >= 1  # the room's surfaces carry classes too: no pixel without one
        for obj in scene.objects:  # every object pixel carries its kind's class
            assert np.all(sem[lab == obj.id] == KIND_CLASS[obj.kind])
        room = {SEMANTIC_CLASSES.index(c) + 1 for c in ('floor', 'wall', 'ceiling')}
        assert set(np.unique(sem[lab == 0]).tolist()) == room


def test_same_seed_same_payloads_other_seed_differs(tmp_path):
    assert main([str(tmp_path / 'a'), *TINY, '--seed', '5']) == 0
    assert main([str(tmp_path / 'b'), *TINY, '--seed', '5']) == 0
    assert main([str(tmp_path / 'c'), *TINY, '--seed', '6']) == 0
    first = payloads(tmp_path / 'a')
    assert first == payloads(tmp_path / 'b')
    assert first != payloads(tmp_path / 'c')


def test_compressed_outdoor(tmp_path):
    out = tmp_path / 'jpeg'
    assert main([str(out), *TINY, '--compressed', '--kind', 'outdoor']) == 0
    topics = bag_topics(out)
    assert topics[COMPRESSED_TOPIC] == ('sensor_msgs/msg/CompressedImage', 3)
    assert IMAGE_TOPIC not in topics
    assert [f.rgb.shape for f in open_image_stream(out, COMPRESSED_TOPIC)] == [(128, 256, 3)] * 3


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / 'bag'
    assert main([str(out), *TINY]) == 0
    before = payloads(out)
    with pytest.raises(SystemExit) as info:
        main([str(out), *TINY, '--seed', '1'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'already exists' in err and '--force' in err
    assert payloads(out) == before
    assert main([str(out), *TINY, '--seed', '1', '--force']) == 0
    assert payloads(out) != before
    not_a_bag = tmp_path / 'precious'
    not_a_bag.mkdir()
    (not_a_bag / 'notes.txt').write_text('keep me')
    with pytest.raises(SystemExit):
        main([str(not_a_bag), *TINY, '--force'])
    assert (not_a_bag / 'notes.txt').read_text() == 'keep me'


def test_bad_arguments_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(['/tmp/never_written', '--width', '255'])
    assert info.value.code == 2
    assert '--width must be an even number in [8, ' in capsys.readouterr().err


def test_n_small_sets_the_number_of_small_objects(tmp_path, capsys):
    one_frame = ['--frames', '1', '--width', '1024', '--quiet']  # small objects are >= 4 px
    ids = {}
    for n_small in (0, 6):
        out = tmp_path / f'small_{n_small}'
        assert main([str(out), *one_frame, '--n-small', str(n_small)]) == 0
        (frame,) = [lab for _, lab in open_label_stream(out, LABEL_TOPIC)]
        ids[n_small] = set(np.unique(frame).tolist()) - {0}
    small = {o.id for o in SynthScene(SceneSpec()).objects if o.role == 'small'}
    assert len(small) == 6 and small <= ids[6]
    assert ids[0] == ids[6] - small
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / 'never'), *TINY, '--n-small', '13'])
    assert info.value.code == 2
    assert '--n-small must be in 0..12, got 13' in capsys.readouterr().err


def test_help_from_the_console_script():
    script = Path(sys.executable).parent / 'sap_synth'
    command = [str(script)] if script.exists() else [sys.executable, '-m', 'sap_ros.synth.cli']
    done = subprocess.run([*command, '--help'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for text in ('--frames', '--width', '--seed', '--compressed', '--fps', '--kind', '--force',
                 LABEL_TOPIC, COMPRESSED_TOPIC):
        assert text in done.stdout
