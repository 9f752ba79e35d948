"""``sap_train eval``'s propagation scores: the object-score gate is measured, not only IoU."""
from __future__ import annotations

import pytest

pytest.importorskip('training.model.sam2', reason="sam2's training package is not installed: "
                    'SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation --no-binary '
                    'sam2 sam2==1.1.0 (make setup)')
import torch  # noqa: E402

from sap_ros.train import NANO_CONFIG  # noqa: E402
from sap_ros.train.evaluate import EVAL_SEED, EvalSpec, evaluate  # noqa: E402
from sap_ros.train.model import build_train_model  # noqa: E402
from sap_ros.train.videos import PatchVideos  # noqa: E402


def _gated(logit: float) -> torch.nn.Module:
    """The nano model whose object score is ``logit`` on every patch (the gate shut or open)."""
    model = build_train_model(str(NANO_CONFIG), 64, 0)
    head = model.sam_mask_decoder.pred_obj_score_head
    last = head if isinstance(head, torch.nn.Linear) else head.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(logit)
    return model


def test_propagation_of_a_model_that_calls_every_object_absent_is_zero_and_presence_says_why(
        heldout_export):
    videos = PatchVideos(heldout_export)
    spec = EvalSpec(patches=2, windows=6)
    shut, open_ = (evaluate(_gated(v), videos, spec) for v in (-10.0, 10.0))
    # The share of later patches the objects of the first patch are really in.
    windows = videos.windows(spec.num_frames)
    present = []
    for i in range(spec.windows):
        s = videos.sample(EVAL_SEED, 1, i, spec.num_frames, spec.max_objects, windows)
        present += [obj in videos.present[s.video][s.start + t]
                    for t in range(1, spec.num_frames) for obj in s.objects]
    assert 0 < sum(present) < len(present)  # the windows hold both cases
    share = sum(present) / len(present)
    assert shut['propagation'] == 0.0 and shut['presence'] == pytest.approx(1 - share)
    assert open_['propagation'] > 0.0 and open_['presence'] == pytest.approx(share)
