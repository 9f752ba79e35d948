"""Checkpoint selection and checks: names, official files, unreadable and mismatched files."""
from __future__ import annotations

import os
from pathlib import Path
import re

import pytest
import sam2
import torch

from sap_ros.config import ModelConfig
from sap_ros.engine import sam2_checkpoint as ckpt
from sap_ros.engine.sam2_adapter import Sam2Adapter
from sap_ros.errors import CheckpointError, ConfigError


@pytest.fixture(scope='module')
def tiny_state():
    """State dict of the real sam2.1_hiera_t (random weights, small image size)."""
    return ckpt.build_sam2_model('configs/sam2.1/sam2.1_hiera_t.yaml', 128, 0).state_dict()


def _strict_config(path: str, name: str = 'sam2.1_hiera_t') -> ModelConfig:
    return ModelConfig(config=name, checkpoint=path, device='cpu', image_size=128)


def test_every_config_name_has_a_yaml_file_and_url():
    assert len(ckpt.MODEL_SPECS) == 8
    for spec in ckpt.MODEL_SPECS.values():
        assert os.path.isfile(os.path.join(sam2.__path__[0], spec.yaml)), spec.yaml
        assert spec.url.endswith('/' + spec.file_name)
        assert ('092824' in spec.url) == spec.name.startswith('sam2.1')
    assert ckpt.spec_for('sam2_hiera_b+').file_name == 'sam2_hiera_base_plus.pt'
    with pytest.raises(ConfigError, match='^model.config'):
        ckpt.spec_for('hiera_t')


def test_official_table_is_well_formed():
    for entry in ckpt.OFFICIAL_FILES:
        assert entry.config in ckpt.MODEL_SPECS
        assert re.fullmatch('[0-9a-f]{64}', entry.sha256)
    sizes = [entry.size_bytes for entry in ckpt.OFFICIAL_FILES]
    assert len(set(sizes)) == len(sizes)


def test_official_files_are_recognised_by_size_then_hash(tmp_path):
    path = tmp_path / 'weights.pt'
    path.write_bytes(b'sam2' * 1000)
    entry = ckpt.OfficialFile('sam2.1_hiera_s', 4000, ckpt.sha256_of(path))
    assert ckpt.identify_official(path, [entry]) == entry
    same_size_other_bytes = ckpt.OfficialFile('sam2.1_hiera_s', 4000, '0' * 64)
    assert ckpt.identify_official(path, [same_size_other_bytes]) is None
    assert ckpt.identify_official(path) is None  # no real release file is 4000 bytes


def test_empty_checkpoint_explains_what_to_do():
    with pytest.raises(CheckpointError) as info:
        Sam2Adapter(ModelConfig(checkpoint='', allow_random_weights=False, device='cpu'))
    message = str(info.value)
    for text in ('model.checkpoint is empty', 'sam2.1_hiera_tiny.pt', 'sam2.1_hiera_large.pt',
                 'sam2_hiera_base_plus.pt', ckpt.SAM21_URL + 'sam2.1_hiera_tiny.pt',
                 ckpt.SAM20_URL, 'download_ckpts.sh', 'model.allow_random_weights'):
        assert text in message


def test_missing_file_names_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as info:
        Sam2Adapter(_strict_config('ckpts/sam2.1_hiera_small.pt', 'sam2.1_hiera_s'))
    message = str(info.value)
    assert str(tmp_path / 'ckpts' / 'sam2.1_hiera_small.pt') in message
    assert ckpt.SAM21_URL + 'sam2.1_hiera_small.pt' in message


def test_directory_holding_the_expected_file_is_accepted(tmp_path):
    spec = ckpt.spec_for('sam2.1_hiera_t')
    with pytest.raises(CheckpointError, match='holds no sam2.1_hiera_tiny.pt'):
        ckpt.resolve_checkpoint_path(str(tmp_path), spec)
    (tmp_path / 'sam2.1_hiera_tiny.pt').write_bytes(b'x')
    assert ckpt.resolve_checkpoint_path(str(tmp_path), spec) == tmp_path / 'sam2.1_hiera_tiny.pt'


class _NotAllowed:
    """A pickled object that ``torch.load(weights_only=True)`` refuses."""


@pytest.mark.parametrize('kind', ['garbage', 'text', 'object', 'not_tensors', 'empty'])
def test_unreadable_files_are_clear_errors(tmp_path, kind):
    path = tmp_path / f'{kind}.pt'
    if kind == 'garbage':
        path.write_bytes(b'<html>404 Not Found</html>')
    elif kind == 'text':  # the weights-only unpickler raised IndexError on this one
        path.write_bytes(b'this is not a checkpoint')
    elif kind == 'object':
        torch.save({'model': _NotAllowed()}, path)
    elif kind == 'not_tensors':
        torch.save({'model': {'a': 'b'}}, path)
    else:
        torch.save({}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        ckpt.read_state_dict(Path(path))


def test_wrapped_and_bare_state_dicts_read_the_same(tmp_path):
    state = {'a.weight': torch.arange(6.0).reshape(2, 3), 'b': torch.ones(1)}
    torch.save({'model': state}, tmp_path / 'wrapped.pt')
    torch.save(state, tmp_path / 'bare.pt')
    for name in ('wrapped.pt', 'bare.pt'):
        loaded = ckpt.read_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_sam20_file_with_sam21_config_suggests_the_right_config(tiny_state):
    spec = ckpt.spec_for('sam2.1_hiera_t')
    older = {k: v for k, v in tiny_state.items()
             if k not in ('no_obj_embed_spatial', 'obj_ptr_tpos_proj.weight',
                          'obj_ptr_tpos_proj.bias')}
    with pytest.raises(CheckpointError) as info:
        ckpt.check_state_dict(Path('/x/old.pt'), older, tiny_state, spec)
    message = str(info.value)
    assert message.startswith('/x/old.pt does not fit model.config=sam2.1_hiera_t')
    assert '3 missing keys (no_obj_embed_spatial, obj_ptr_tpos_proj.bias' in message
    assert 'looks like a sam2_hiera_t checkpoint: set model.config=sam2_hiera_t' in message


def test_shape_mismatch_and_prefix_are_reported(tiny_state):
    spec = ckpt.spec_for('sam2.1_hiera_t')
    reshaped = dict(tiny_state)
    reshaped['maskmem_tpos_enc'] = torch.zeros(9, 1, 1, 64)
    with pytest.raises(CheckpointError, match=re.escape(
            '1 shape mismatches (maskmem_tpos_enc (file (9, 1, 1, 64) vs model (7, 1, 1, 64)))')):
        ckpt.check_state_dict(Path('a.pt'), reshaped, tiny_state, spec)
    prefixed = {'module.' + k: v for k, v in tiny_state.items()}
    with pytest.raises(CheckpointError, match="prefix 'module.'"):
        ckpt.check_state_dict(Path('a.pt'), prefixed, tiny_state, spec)
    ckpt.check_state_dict(Path('a.pt'), tiny_state, tiny_state, spec)  # exact fit passes


@pytest.mark.parametrize('name', sorted(ckpt.MODEL_SPECS))
def test_guess_config_from_trunk_shape(name):
    spec = ckpt.MODEL_SPECS[name]
    state = {'image_encoder.trunk.patch_embed.proj.weight': torch.zeros(spec.trunk_dim, 3, 1, 1)}
    state.update({f'image_encoder.trunk.blocks.{i}.norm1.weight': torch.zeros(1)
                  for i in range(spec.trunk_blocks)})
    if name.startswith('sam2.1'):
        state['no_obj_embed_spatial'] = torch.zeros(1, 64)
    assert ckpt.guess_config(state) == (name, '')
