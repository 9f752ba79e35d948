"""``sap_train fit --workers 2`` on Ray Train (gloo): replicas agree, the global batch is kept."""
from __future__ import annotations

import pytest

pytest.importorskip('training.model.sam2', reason="sam2's training package is not installed: "
                    'SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation --no-binary '
                    'sam2 sam2==1.1.0 (make setup)')
pytest.importorskip('ray.train', reason='ray[train] is not installed: pip install "ray[train]"')

pytestmark = pytest.mark.slow  # Ray start-up and two worker processes: ~50 s on 2 cores

import ray  # noqa: E402

from sap_ros.train.fit import FitConfig, run  # noqa: E402
from sap_ros.train.plots import read_metrics  # noqa: E402
from sap_ros.train.ray_fit import REPLICAS, run_on_ray  # noqa: E402

# Mask prompts on the first patch, no dropout: the forward depends only on the batch, so one
# process and two workers must compute the same losses (up to summation order).
PLAIN = (('prob_to_use_pt_input_for_train', 0.0), ('num_init_cond_frames_for_train', 1))
NO_DROPOUT = ('memory_attention.layer.dropout=0.0',
              'memory_attention.layer.self_attention.dropout=0.0',
              'memory_attention.layer.cross_attention.dropout=0.0')
# Stated tolerance: float32 sums in another order (two half batches, gloo all-reduce).
RTOL = 1e-4


@pytest.fixture(scope='module')
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_two_gloo_workers_hold_identical_replicas_and_follow_the_one_worker_curve(
        train_export, tmp_path, local_ray):
    def cfg(out):
        return FitConfig(data=str(train_export), out=str(out), steps=3, batch_size=2,
                         lr=1e-3, train=('all',), prompts=PLAIN, model_set=NO_DROPOUT,
                         checkpoint_every=2)

    result = run_on_ray(cfg(tmp_path / 'two'), workers=2)
    assert result['steps'] == 3
    digests = sorted((tmp_path / 'two' / REPLICAS).glob('rank*.sha256'))
    assert [d.name for d in digests] == ['rank0.sha256', 'rank1.sha256']
    assert digests[0].read_text() == digests[1].read_text()
    assert (tmp_path / 'two' / 'model.pt').is_file()
    run(cfg(tmp_path / 'one'), progress=False)  # one worker (this process), same global batch
    two, _ = read_metrics(tmp_path / 'two' / 'metrics.jsonl')
    one, _ = read_metrics(tmp_path / 'one' / 'metrics.jsonl')
    assert [e['step'] for e in two] == [e['step'] for e in one] == [1, 2, 3]
    for a, b in zip(one, two):
        for key in ('core_loss', 'loss_mask', 'loss_dice', 'loss_iou', 'loss_class'):
            assert b[key] == pytest.approx(a[key], rel=RTOL), (a['step'], key)
