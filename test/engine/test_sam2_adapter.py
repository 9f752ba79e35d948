"""Sam2Adapter on the real SAM2 architecture (hiera-t, random weights, image_size 128, CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sap_ros.bench.probes import count_host_syncs
from sap_ros.config import ModelConfig
from sap_ros.engine import sam2_checkpoint
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.sam2_adapter import Sam2Adapter
from sap_ros.errors import CheckpointError, ConfigError, InvalidInputError

IMAGE_SIZE = 128
PATCH_PX = 96  # differs from IMAGE_SIZE on purpose: the adapter resizes
LOW_RES = IMAGE_SIZE // 4


def ctx(cond=(), recent=(), pointers=()) -> MemoryContext:
    """Memories as a video: ``recent[k]`` k + 1 steps back, ``cond`` before them, then pointers."""
    n = len(recent)
    return MemoryContext(tuple(cond), tuple(n + 1 + j for j in range(len(cond))),
                         tuple(recent), tuple(k + 1 for k in range(n)),
                         tuple(p for _, p in pointers), tuple(a for a, _ in pointers))


def _config(**overrides) -> ModelConfig:
    values = dict(config='sam2.1_hiera_t', allow_random_weights=True, device='cpu',
                  image_size=IMAGE_SIZE, encode_batch=2, seed=0)
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture(scope='module')
def adapter() -> Sam2Adapter:
    return Sam2Adapter(_config())


@pytest.fixture(scope='module')
def patches() -> np.ndarray:
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (3, PATCH_PX, PATCH_PX, 3), dtype=np.uint8)
    images[1, 20:70, 30:80] = (200, 40, 40)  # some structure, not only noise
    return images


@pytest.fixture(scope='module')
def encoded(adapter, patches):
    return adapter.encode(patches)


@pytest.fixture(scope='module')
def memories(adapter, encoded):
    """Seven distinct memories: point prompts at different places of the three patches."""
    out = []
    for k in range(7):
        point = np.array([[10.0 + 11 * k, 80.0 - 9 * k]])
        out.append(adapter.track(encoded, k % 3, points_px=point, as_conditioning=True).memory)
    return out


def test_encode_shapes_and_slicing(adapter, encoded):
    assert len(encoded) == 3
    sizes = [f.shape[-1] for f in encoded.backbone_fpn]
    assert sizes == [IMAGE_SIZE // 4, IMAGE_SIZE // 8, IMAGE_SIZE // 16]
    assert all(f.shape[0] == 3 and f.dtype == torch.float32 for f in encoded.backbone_fpn)
    assert all(p.shape[0] == 1 for p in encoded.vision_pos_enc)
    assert encoded.input_hw == (PATCH_PX, PATCH_PX)
    assert encoded.nbytes > 0
    sub = encoded[1:]
    assert len(sub) == 2 and len(encoded[-1]) == 1
    assert torch.equal(sub.backbone_fpn[2][0], encoded.backbone_fpn[2][1])


def test_batched_encode_matches_sequential(adapter, patches, encoded):
    sequential = adapter.encode_sequential(patches)
    for batched, single in zip(encoded.backbone_fpn, sequential.backbone_fpn):
        torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


def test_encode_accepts_tensors_and_rejects_bad_input(adapter, patches, encoded):
    from_tensor = adapter.encode(torch.from_numpy(patches))
    assert torch.equal(from_tensor.backbone_fpn[2], encoded.backbone_fpn[2])
    with pytest.raises(InvalidInputError, match='uint8'):
        adapter.encode(patches.astype(np.float32))
    with pytest.raises(InvalidInputError, match=r'\(N, H, W, 3\)'):
        adapter.encode(patches[0])


def test_track_output_types(adapter, encoded):
    result = adapter.track(encoded, 0, points_px=np.array([[48.0, 48.0]]),
                           point_labels=np.array([1]), as_conditioning=True)
    assert result.low_res_logits.shape == (LOW_RES, LOW_RES)
    assert result.low_res_logits.dtype == torch.float32
    assert isinstance(result.iou, float) and isinstance(result.object_score, float)
    assert 0.0 <= result.object_score <= 1.0
    assert result.obj_ptr.shape == (256,) and result.obj_ptr.dtype == np.float32
    memory = result.memory
    assert memory.maskmem_features.shape == (1, 64, IMAGE_SIZE // 16, IMAGE_SIZE // 16)
    assert memory.maskmem_pos_enc.shape == memory.maskmem_features.shape
    assert memory.obj_ptr.shape == (1, 256) and memory.object_score_logits.shape == (1, 1)
    assert memory.maskmem_features.dtype == torch.bfloat16  # as upstream stores it
    assert memory.nbytes == 2 * 64 * (IMAGE_SIZE // 16) ** 2 + 4 * (256 + 1)


def test_track_needs_memory_or_prompt(adapter, encoded):
    with pytest.raises(ValueError, match='memories'):
        adapter.track(encoded, 0)
    with pytest.raises(IndexError):
        adapter.track(encoded, 3, points_px=np.array([[1.0, 1.0]]))
    with pytest.raises(InvalidInputError, match='point_labels'):
        adapter.track(encoded, 0, points_px=np.array([[1.0, 1.0]]), point_labels=np.array([2]))


def test_recent_memories_change_output(adapter, encoded, memories):
    only_cond = adapter.track(encoded, 1, ctx(memories[:1]))
    with_recent = adapter.track(encoded, 1, ctx(memories[:1], memories[1:3]))
    assert (only_cond.low_res_logits - with_recent.low_res_logits).abs().max() > 1e-4
    again = adapter.track(encoded, 1, ctx(memories[:1], memories[1:3]))
    assert torch.equal(again.low_res_logits, with_recent.low_res_logits)


def test_memories_beyond_the_recent_window_give_only_their_pointer(adapter, encoded, memories):
    cond, recent = memories[:1], memories[1:]
    slots = adapter.model.num_maskmem - 1  # 6 recent slots in every SAM2 config
    assert len(recent) == slots
    full = adapter.track(encoded, 2, ctx(cond, recent))
    # A seventh step back: SAM2 reads its object pointer, never its memory features.
    older = adapter.track(encoded, 2, ctx(cond, recent + [memories[0]]))  # cond 8 back
    as_pointer = adapter.track(encoded, 2, MemoryContext(
        tuple(cond), (8,), tuple(recent), tuple(range(1, 7)),
        (memories[0].obj_ptr[0].numpy(),), (7,)))
    assert torch.equal(older.low_res_logits, as_pointer.low_res_logits)
    assert not torch.equal(full.low_res_logits, older.low_res_logits)  # the pointer counts
    fewer = adapter.track(encoded, 2, ctx(cond, recent[:-1]))
    assert not torch.equal(full.low_res_logits, fewer.low_res_logits)  # the last slot counts
    swapped = adapter.track(encoded, 2, ctx(cond, [recent[1], recent[0]] + recent[2:]))
    assert not torch.equal(full.low_res_logits, swapped.low_res_logits)  # distance -> slot


def test_matches_upstream_video_bookkeeping(adapter, encoded):
    """Prompt at frame 0, track frames 1-3: same masks as SAM2's own frame-indexed memory."""
    point = np.array([[40.0, 50.0]])
    r0 = adapter.track(encoded, 0, points_px=point, as_conditioning=True)
    r1 = adapter.track(encoded, 1, ctx([r0.memory]))
    r2 = adapter.track(encoded, 2, ctx([r0.memory], [r1.memory]))
    r3 = adapter.track(encoded, 0, ctx([r0.memory], [r2.memory, r1.memory]))
    model = adapter.model
    # Pixel centres map exactly: x + 0.5 scales by IMAGE_SIZE / PATCH_PX.
    coords = torch.tensor((point + 0.5) * IMAGE_SIZE / PATCH_PX - 0.5, dtype=torch.float32)
    output_dict = {'cond_frame_outputs': {}, 'non_cond_frame_outputs': {}}
    upstream = []
    with torch.no_grad():
        for frame, patch in enumerate([0, 1, 2, 0]):
            backbone_out = {'backbone_fpn': [f[patch:patch + 1] for f in encoded.backbone_fpn],
                            'vision_pos_enc': list(encoded.vision_pos_enc)}
            _, feats, pos, sizes = model._prepare_backbone_features(backbone_out)
            points = ({'point_coords': coords[None], 'point_labels': torch.ones(1, 1).int()}
                      if frame == 0 else None)
            out = model.track_step(frame_idx=frame, is_init_cond_frame=frame == 0,
                                   current_vision_feats=feats, current_vision_pos_embeds=pos,
                                   feat_sizes=sizes, point_inputs=points, mask_inputs=None,
                                   output_dict=output_dict, num_frames=100)
            kind = 'cond_frame_outputs' if frame == 0 else 'non_cond_frame_outputs'
            # SAM2VideoPredictor stores memory features as bfloat16.
            out['maskmem_features'] = out['maskmem_features'].to(torch.bfloat16)
            output_dict[kind][frame] = out
            upstream.append(out['pred_masks'][0, 0])
    for ours, theirs in zip([r0, r1, r2, r3], upstream):
        torch.testing.assert_close(ours.low_res_logits, theirs, rtol=0, atol=1e-5)


def test_conditioning_mask_is_the_output(adapter, encoded, memories):
    mask = np.zeros((PATCH_PX, PATCH_PX), bool)
    mask[24:72, 12:60] = True  # multiples of 3 px: exact 4-px cells at 128 / 4
    result = adapter.track(encoded, 1, mask_prompt=mask, as_conditioning=True)
    cells = torch.from_numpy(mask).float().reshape(LOW_RES, 3, LOW_RES, 3).mean(dim=(1, 3))
    inside, outside = cells > 0.99, cells < 0.01
    assert inside.sum() == 16 * 16
    positive = result.low_res_logits > 0
    assert positive[inside].all() and not positive[outside].any()
    assert result.iou == 1.0 and result.object_score > 0.99
    empty = adapter.track(encoded, 1, mask_prompt=np.zeros((10, 10), bool), as_conditioning=True)
    assert (empty.low_res_logits < 0).all() and empty.object_score < 0.01
    with pytest.raises(ValueError, match='points'):
        adapter.track(encoded, 1, mask_prompt=mask, points_px=np.array([[5.0, 5.0]]),
                      as_conditioning=True)


def test_mask_prompt_without_conditioning_goes_through_the_decoder(adapter, encoded, memories):
    mask = torch.zeros(40, 40)
    mask[10:30, 5:25] = 1.0
    plain = adapter.track(encoded, 2, ctx(memories[:1]))
    prompted = adapter.track(encoded, 2, ctx(memories[:1]), mask_prompt=mask)
    assert prompted.low_res_logits.shape == (LOW_RES, LOW_RES)
    assert torch.isfinite(prompted.low_res_logits).all()
    assert not torch.equal(plain.low_res_logits, prompted.low_res_logits)
    assert prompted.iou != 1.0  # not the copy-the-mask path


def test_track_batch_matches_track(adapter, encoded, memories):
    conds = [memories[:1], memories[3:4]]
    recents = [memories[1:3], memories[4:6]]
    batched = adapter.track_batch(encoded, 2, [ctx(c, r) for c, r in zip(conds, recents)])
    for result, c, r in zip(batched, conds, recents):
        single = adapter.track(encoded, 2, ctx(c, r))
        torch.testing.assert_close(result.low_res_logits, single.low_res_logits,
                                   rtol=1e-4, atol=1e-4)
        # Stored as bfloat16 (as upstream stores it): one bf16 step of rounding apart at most.
        torch.testing.assert_close(result.memory.maskmem_features.float(),
                                   single.memory.maskmem_features.float(), rtol=1e-2, atol=1e-3)
        assert result.iou == pytest.approx(single.iou, abs=1e-5)
    with pytest.raises(ValueError, match='same'):
        adapter.track_batch(encoded, 2, [ctx(conds[0], memories[1:3]),
                                         ctx(conds[1], memories[4:5])])


def test_one_sam2_call_reads_back_once_whatever_the_batch(adapter, encoded, memories):
    """Scores, pointers and the "anything inside" flag of every object come in one copy."""
    contexts = [ctx(memories[k:k + 1], memories[k + 1:k + 3]) for k in (0, 3)]
    counts = []
    for batch in (contexts[:1], contexts):
        with count_host_syncs() as syncs:
            results = adapter.track_batch(encoded, 2, batch)
        # ``.to(model device)`` (memories, prompts) is an upload on CUDA; on this CPU run it
        # cannot be told from a download, so only the reads proper are counted.
        counts.append(sum(call != 'Tensor.to' for call in syncs.calls))
        for result in results:  # the flag agrees with the logits it summarises
            assert result.nonempty == bool((result.low_res_logits > 0).any())
    assert counts == [1, 1]


def test_device_patches_encode_as_host_patches(adapter, patches):
    """The torch frame path's (N, 3, S, S) float samples give the host patches' features."""
    host = adapter.encode(patches)
    device = adapter.encode(torch.from_numpy(patches).permute(0, 3, 1, 2).float())
    assert device.input_hw == host.input_hw == (PATCH_PX, PATCH_PX)
    for a, b in zip(host.backbone_fpn, device.backbone_fpn):
        torch.testing.assert_close(a, b)


def test_track_batch_with_mask_prompts_matches_track(adapter, encoded, memories):
    side = adapter.image_size // 4
    masks = [np.zeros((side, side), bool) for _ in range(3)]
    masks[0][2:9, 3:12] = True
    masks[1][10:, :] = True
    masks[2][4:6, 4:6] = True
    conds = [memories[:1], memories[3:4], memories[2:3]]
    recents = [memories[1:3], memories[4:6], memories[0:2]]
    contexts = [ctx(c, r) for c, r in zip(conds, recents)]
    batched = adapter.track_batch(encoded, 1, contexts, mask_prompts=masks)
    plain = adapter.track_batch(encoded, 1, contexts)
    for k, (result, m) in enumerate(zip(batched, masks)):
        single = adapter.track(encoded, 1, contexts[k], mask_prompt=m)
        torch.testing.assert_close(result.low_res_logits, single.low_res_logits,
                                   rtol=1e-4, atol=1e-4)
        assert result.iou == pytest.approx(single.iou, abs=1e-5)
        assert not torch.equal(result.low_res_logits, plain[k].low_res_logits)  # prompts count
    with pytest.raises(ValueError, match='one mask prompt per object'):
        adapter.track_batch(encoded, 1, contexts, mask_prompts=masks[:2])


def _discover_all(adapter, encoded, index, points, batch=64):
    parts = list(adapter.discover(encoded, index, points, batch))
    return parts, (torch.cat([p.low_res_logits for p in parts]) if parts else None,
                   torch.cat([p.iou for p in parts]) if parts else None)


def test_discover_outputs_all_three_masks_per_point_in_batches(adapter, encoded):
    points = np.array([[5.0, 5.0], [48.0, 48.0], [90.0, 10.0], [30.0, 70.0], [60.0, 20.0]])
    parts, (logits, iou) = _discover_all(adapter, encoded, 1, points)
    assert len(parts) == 1
    assert logits.shape == (5, 3, LOW_RES, LOW_RES) and logits.dtype == torch.float32
    assert iou.shape == (5, 3) and parts[0].object_score.shape == (5,)
    assert ((parts[0].object_score >= 0) & (parts[0].object_score <= 1)).all()
    small, (small_logits, small_iou) = _discover_all(adapter, encoded, 1, points, batch=2)
    assert [p.iou.shape[0] for p in small] == [2, 2, 1]  # one mask-decoder call per batch
    torch.testing.assert_close(small_logits, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(small_iou, iou, rtol=1e-4, atol=1e-5)
    assert list(adapter.discover(encoded, 1, np.zeros((0, 2)))) == []
    with pytest.raises(InvalidInputError):
        list(adapter.discover(encoded, 1, np.array([[np.nan, 1.0]])))


def test_discover_agrees_with_single_point_track(adapter, encoded):
    points = np.array([[5.0, 5.0], [48.0, 48.0], [90.0, 10.0], [30.0, 70.0]])
    _, (logits, iou) = _discover_all(adapter, encoded, 2, points)
    # Discovery maps points as upstream's generator (x * image_size / width), track() maps
    # pixel centres: the same model coordinates need these track() inputs.
    scale = IMAGE_SIZE / PATCH_PX
    same = (points * scale + 0.5) / scale - 0.5
    compared = 0
    for k, point in enumerate(same):
        tracked = adapter.track(encoded, 2, points_px=point[None])
        best = int(iou[k].argmax())
        assert tracked.iou == pytest.approx(float(iou[k, best]), abs=1e-5)
        if tracked.object_score > 0.5:  # track() blanks the logits of absent objects
            torch.testing.assert_close(tracked.low_res_logits, logits[k, best],
                                       rtol=1e-4, atol=1e-4)
            compared += 1
    assert compared > 0


def test_same_seed_is_bit_identical_and_close_frees(adapter, patches, encoded, memories):
    twin = Sam2Adapter(_config(dtype='bfloat16'))  # CPU runs float32 and says so
    assert twin.dtype == torch.float32 and 'float32' in twin.checkpoint_info
    assert 'RANDOM WEIGHTS' in twin.checkpoint_info
    twin_encoded = twin.encode(patches)
    for a, b in zip(twin_encoded.backbone_fpn, encoded.backbone_fpn):
        assert torch.equal(a, b)
    point = np.array([[33.0, 44.0]])
    mine = adapter.track(encoded, 2, ctx(memories[:1], memories[1:2]), points_px=point)
    theirs = twin.track(twin_encoded, 2, ctx(memories[:1], memories[1:2]), points_px=point)
    assert torch.equal(mine.low_res_logits, theirs.low_res_logits)
    assert torch.equal(mine.memory.maskmem_features, theirs.memory.maskmem_features)
    twin.close()
    with pytest.raises(RuntimeError, match='closed'):
        twin.track(twin_encoded, 0, ctx(memories[:1]))
    other = Sam2Adapter(_config(seed=1))
    assert not torch.equal(other.encode(patches[:1]).backbone_fpn[2], encoded.backbone_fpn[2][:1])


def test_checkpoint_round_trip(adapter, encoded, memories, tmp_path, monkeypatch):
    path = tmp_path / 'mine.pt'
    torch.save({'model': adapter.model.state_dict()}, path)
    digest = sam2_checkpoint.sha256_of(path)
    monkeypatch.setattr(sam2_checkpoint, 'OFFICIAL_FILES', (
        sam2_checkpoint.OfficialFile('sam2.1_hiera_t', path.stat().st_size, digest),))
    loaded = Sam2Adapter(_config(checkpoint=str(path), allow_random_weights=False, seed=5))
    assert str(path) in loaded.checkpoint_info
    assert f'official sam2.1_hiera_tiny (sha256 {digest})' in loaded.checkpoint_info
    assert 'RANDOM' not in loaded.checkpoint_info
    point = np.array([[20.0, 60.0]])
    expected = adapter.track(encoded, 1, ctx(memories[:2]), points_px=point)
    got = loaded.track(encoded, 1, ctx(memories[:2]), points_px=point)
    assert torch.equal(expected.low_res_logits, got.low_res_logits)
    with pytest.raises(CheckpointError, match=r'official sam2.1_hiera_tiny.pt \(model.config='
                       r'sam2.1_hiera_t\) but model.config=sam2.1_hiera_s'):
        Sam2Adapter(_config(config='sam2.1_hiera_s', checkpoint=str(path)))


def test_file_that_does_not_fit_the_model(tmp_path):
    path = tmp_path / 'other.pt'
    torch.save({'encoder.weight': torch.zeros(4, 4), 'head.bias': torch.zeros(4)}, path)
    with pytest.raises(CheckpointError) as info:
        Sam2Adapter(_config(checkpoint=str(path), allow_random_weights=False))
    message = str(info.value)
    assert str(path) in message and 'model.config=sam2.1_hiera_t' in message
    assert 'missing keys' in message and 'unexpected keys (encoder.weight, head.bias)' in message
    assert 'does not look like a SAM2 checkpoint' in message


@pytest.mark.parametrize('device', ['gpu0', 'cuda:x', 'cuda:99'])
def test_invalid_device_names_the_parameter(device):
    if device == 'cuda:99' and torch.cuda.device_count() > 99:
        pytest.skip('more than 99 CUDA devices')
    with pytest.raises(ConfigError, match=f'^model.device: .*{device}') as info:
        Sam2Adapter(_config(device=device))
    assert info.value.parameter == 'model.device'


def test_invalid_model_settings_name_the_parameter():
    with pytest.raises(ConfigError, match='^model.config: .*sam2.1_hiera_x'):
        Sam2Adapter(_config(config='sam2.1_hiera_x'))
    with pytest.raises(ConfigError, match='^model.image_size: .*100'):
        Sam2Adapter(_config(image_size=100))
    with pytest.raises(ConfigError, match='^model.dtype'):
        Sam2Adapter(_config(dtype='int8'))


def test_the_calls_of_a_patch_read_back_once(adapter, encoded, memories):
    """Calls on one patch (memories at different distances) share one read of their scores."""
    groups = [([ctx(memories[:1], memories[1:3])], None),
              ([ctx(memories[3:4], memories[4:5]), ctx(memories[5:6], memories[6:7])], None)]
    with count_host_syncs() as syncs:
        results = adapter.track_groups(encoded, 2, groups)
    assert sum(call != 'Tensor.to' for call in syncs.calls) == 1
    assert [len(r) for r in results] == [1, 2]
    for (contexts, _), group in zip(groups, results):  # the same as one call per group
        for result, alone in zip(group, adapter.track_batch(encoded, 2, contexts)):
            torch.testing.assert_close(result.low_res_logits, alone.low_res_logits)
            assert result.object_score == pytest.approx(alone.object_score, abs=1e-6)
            assert result.nonempty == bool((result.low_res_logits > 0).any())


def test_a_session_casts_each_weight_once_for_all_its_calls():
    """Under bf16 autocast, calls inside one session skip the weight casts a lone call pays."""
    from sap_ros.bench.autocast_casts import measure_casts
    casts = measure_casts(_config(), 64)
    own, session = casts['weight_casts_per_sam2_call_own_context'], casts[
        'weight_casts_per_sam2_call']
    assert session <= 1.1 * casts['weight_casts_per_sam2_call_outer']
    assert own > 1.5 * session  # a lone call casts every weight it touches again


def test_session_is_reentrant_and_calls_outside_one_still_work(adapter, encoded, memories):
    with adapter.session():
        with adapter.session():
            inner = adapter.track(encoded, 1, ctx(memories[:1]))
        assert torch.is_grad_enabled() is False
    assert torch.is_grad_enabled()
    alone = adapter.track(encoded, 1, ctx(memories[:1]))
    torch.testing.assert_close(inner.low_res_logits, alone.low_res_logits)


def test_compile_image_encoder_wraps_the_encoder_only_when_asked(adapter):
    """``model.compile_image_encoder`` hands the encoder forward to torch.compile (default off).

    Running it compiles for minutes on a CPU (206 s at 64 px on the 2-core machine, outputs equal
    within 3e-6), so the compiled encoder is run and compared in test/gpu/test_cuda_parity.py.
    """
    encoder = adapter.model.image_encoder
    assert not hasattr(encoder.forward, '_torchdynamo_orig_callable')
    compiled = Sam2Adapter(_config(compile_image_encoder=True))
    forward = compiled.model.image_encoder.forward
    assert getattr(forward, '_torchdynamo_orig_callable', None) is not None
    assert forward._torchdynamo_orig_callable.__func__ is type(encoder).forward
