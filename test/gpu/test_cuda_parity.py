"""The same scenes on CUDA and on the CPU path (skipped where no CUDA device exists).

What a robot's GPU run must give: the device frame path on CUDA paints the host path's label maps
and ids (the oracle); SAM2 on CUDA gives the CPU's outputs (float32 within TF32 rounding; bf16
autocast, the robot's setting, within bf16 rounding); the model's cached tables live on the
model's device; ``cuda:N`` leaves the other GPUs alone; memory stays flat over frames.
Run on a lent GPU with ``test/gpu/run_gpu_checks.sh`` (one command, a few minutes).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pytest
from random_sam2 import RANDOM_SAM2_FLAT, synth_frames
import torch

from sap_ros.config import ModelConfig, PipelineConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.sam2_adapter import Sam2Adapter
from sap_ros.engine.types import FrameResult
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.layout import PatchLayout
from sap_ros.synth.scene import SceneSpec, SynthScene

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='no CUDA device on this machine (run on a GPU box)')

ORACLE_FLAT = {'patches.fov_deg': 90.0, 'patches.size_px': 128, 'model.image_size': 128,
               'output.scale': 1.0, 'discovery.every_n_frames': 2,
               'discovery.points_per_side': 16, 'discovery.max_new_per_frame': 64,
               'discovery.min_area_fraction': 0.0005}
# Tolerances. float32 on CUDA runs TF32 matmuls (as upstream sets it): ~1e-3 relative per op;
# bf16 autocast keeps 8 bits of mantissa: logits differ by a few tenths, masks by their edges.
FLOAT32_LOGIT_ATOL = 0.05
BF16_MASK_AGREEMENT = 0.97
LABEL_AGREEMENT = 0.999  # the oracle: only ties between patches may flip


def _oracle_run(frames: Sequence[Tuple[np.ndarray, np.ndarray]], **flat: Any
                ) -> List[FrameResult]:
    config = PipelineConfig.from_flat({**ORACLE_FLAT, **flat})
    oracle = OracleSegmenter(PatchLayout.from_config(config.patches))
    pipeline = SapPipeline(config, segmenter=oracle)
    results = []
    for rgb, gt in frames:
        oracle.set_ground_truth(gt)
        results.append(pipeline.step(rgb))
    pipeline.close()
    return results


@pytest.fixture(scope='module')
def clip() -> List[Tuple[np.ndarray, np.ndarray]]:
    scene = SynthScene(SceneSpec(seed=3))
    return [scene.render(pose, 512) for pose in scene.trajectory(4, turn_deg_per_frame=6.0)]


def test_oracle_on_the_cuda_device_path_gives_the_host_path(clip):
    host = _oracle_run(clip, **{'model.device': 'cpu', 'engine.frame_path': 'numpy'})
    device = _oracle_run(clip, **{'model.device': 'cuda', 'engine.frame_path': 'torch'})
    for k, (a, b) in enumerate(zip(host, device)):
        assert float((a.labels == b.labels).mean()) >= LABEL_AGREEMENT, k
        assert [o.id for o in a.objects] == [o.id for o in b.objects], k
        for x, y in zip(a.objects, b.objects):
            assert abs(x.area_px - y.area_px) <= max(2, 0.01 * x.area_px), (k, x.id)
            assert float(x.bearing @ y.bearing) > np.cos(np.radians(0.5)), (k, x.id)


def _adapter_outputs(device: str, dtype: str) -> Dict[str, Any]:
    config = ModelConfig(allow_random_weights=True, device=device, dtype=dtype, image_size=128,
                         encode_batch=2, seed=0)
    adapter = Sam2Adapter(config)
    rng = np.random.default_rng(7)
    patches = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    patches[1, 20:70, 30:80] = (200, 40, 40)
    encoded = adapter.encode(patches)
    created = adapter.track(encoded, 1, points_px=np.array([[55.0, 45.0]]), as_conditioning=True)
    tracked = adapter.track(encoded, 0, MemoryContext(cond=(created.memory,), cond_ago=(1,)))
    out = {'features': encoded.backbone_fpn[-1].float().cpu(),
           'created': created.low_res_logits.float().cpu(),
           'tracked': tracked.low_res_logits.float().cpu(),
           'scores': (created.iou, created.object_score, tracked.iou, tracked.object_score),
           'tables': _cached_table_devices(adapter.model)}
    adapter.close()
    return out


def _cached_table_devices(model: torch.nn.Module) -> List[torch.device]:
    """Devices of upstream's RoPE tables and position-encoding caches in ``model``."""
    devices = []
    for module in model.modules():
        freqs = getattr(module, 'freqs_cis', None)
        if isinstance(freqs, torch.Tensor):
            devices.append(freqs.device)
        cache = getattr(module, 'cache', None)
        if isinstance(cache, dict):
            devices.extend(v.device for v in cache.values() if isinstance(v, torch.Tensor))
    return devices


@pytest.fixture(scope='module')
def cpu_outputs() -> Dict[str, Any]:
    return _adapter_outputs('cpu', 'float32')


def test_sam2_float32_on_cuda_matches_the_cpu(cpu_outputs):
    cuda = _adapter_outputs('cuda', 'float32')
    torch.testing.assert_close(cuda['features'], cpu_outputs['features'], rtol=0.02, atol=0.02)
    for key in ('created', 'tracked'):
        torch.testing.assert_close(cuda[key], cpu_outputs[key], rtol=0.0,
                                   atol=FLOAT32_LOGIT_ATOL * max(1.0, float(
                                       cpu_outputs[key].abs().max())))
    np.testing.assert_allclose(cuda['scores'], cpu_outputs['scores'], atol=0.01)


def test_sam2_bf16_autocast_on_cuda_gives_the_cpu_masks(cpu_outputs):
    cuda = _adapter_outputs('cuda', 'bfloat16')
    for key in ('created', 'tracked'):
        agree = float(((cuda[key] > 0) == (cpu_outputs[key] > 0)).float().mean())
        assert agree >= BF16_MASK_AGREEMENT, (key, agree)
    np.testing.assert_allclose(cuda['scores'], cpu_outputs['scores'], atol=0.05)


def test_upstream_cached_tables_live_on_the_model_device(cpu_outputs):
    """Upstream builds them on "cuda" whenever CUDA exists; a CPU model must not reach there."""
    assert cpu_outputs['tables'] and all(d.type == 'cpu' for d in cpu_outputs['tables'])
    cuda = _adapter_outputs('cuda', 'bfloat16')
    assert all(d.type == 'cuda' for d in cuda['tables'])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two CUDA devices')
def test_cuda_1_leaves_cuda_0_alone_and_gives_what_cuda_0_gives(clip):
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated(0)
    on_1 = _oracle_run(clip[:2], **{'model.device': 'cuda:1', 'engine.frame_path': 'torch'})
    assert torch.cuda.memory_allocated(0) == before
    on_0 = _oracle_run(clip[:2], **{'model.device': 'cuda:0', 'engine.frame_path': 'torch'})
    for a, b in zip(on_0, on_1):
        np.testing.assert_array_equal(a.labels, b.labels)


def test_sam2_on_the_device_path_runs_and_its_memory_stays_flat():
    """Random-weight SAM2, bf16, torch frame path: peak memory after warm-up does not grow."""
    flat = {**RANDOM_SAM2_FLAT, 'model.device': 'cuda', 'engine.frame_path': 'torch',
            'patches.size_px': 128, 'discovery.every_n_frames': 1000,
            'discovery.uncovered_fraction': 1.0}  # objects from frame 0 only: a fixed workload
    pipeline = SapPipeline(PipelineConfig.from_flat(flat))
    frames = synth_frames(8, width=512)
    peaks = []
    for k, frame in enumerate(frames):
        result = pipeline.step(frame)
        assert result.labels.shape == (128, 256)
        if k == 1:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if k >= 2:
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated())
    assert max(peaks) <= 1.05 * peaks[0], peaks
    pipeline.close()


def test_compiled_image_encoder_gives_the_plain_features_on_cuda():
    """``model.compile_image_encoder``: the same features (bf16 autocast, the robot's setting)."""
    features = []
    for compiled in (False, True):
        adapter = Sam2Adapter(ModelConfig(allow_random_weights=True, device='cuda', image_size=256,
                                          encode_batch=2, compile_image_encoder=compiled))
        patches = np.random.default_rng(3).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
        features.append([f.float().cpu() for f in adapter.encode(patches).backbone_fpn])
        adapter.close()
    for plain, compiled_f in zip(*features):
        torch.testing.assert_close(compiled_f, plain, rtol=0.05, atol=0.05)
