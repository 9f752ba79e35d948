"""``sap_train bench``: a short prepared training benchmark (what ``make train-gpu`` runs).

Renders a few synthetic scenes, exports them as patch videos at the model's input size, trains
``--steps`` steps from random weights with SAP's freezing (or ``--train all``) and reports what
a GPU user sizes a run by: steps/s, videos/s and patches/s after ``--warmup`` steps, the peak
CUDA memory (``torch.cuda.max_memory_allocated``), the device and the settings. Nothing is
learned that matters (random init, a few steps); the figures are speed and memory only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import statistics
import tempfile
from typing import Any, Dict

from sap_ros.train.fit import METRICS, FitConfig, run
from sap_ros.train.plots import read_metrics


def add_bench(sub: argparse._SubParsersAction) -> None:
    """The ``bench`` sub-command."""
    p = sub.add_parser('bench', help='short training benchmark: steps/s and peak memory')
    p.add_argument('--model-config', default='sam2.1_hiera_t',
                   help='model.config name or a SAM2 model .yaml (default: sam2.1_hiera_t)')
    p.add_argument('--image-size', type=int, default=1024, help='patch side = model input')
    p.add_argument('--steps', type=int, default=30)
    p.add_argument('--warmup', type=int, default=5, help='steps left out of the timing')
    p.add_argument('--batch-size', type=int, default=4, help='videos per step')
    p.add_argument('--num-frames', type=int, default=8, help='patches per video (upstream 8)')
    p.add_argument('--train', default='default', help="'default' (SAP) or 'all'")
    p.add_argument('--device', default='auto')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--scenes', type=int, default=2, help='synthetic scenes rendered')
    p.add_argument('--json', type=Path, help='also write the result here')


def run_bench(args: argparse.Namespace) -> Dict[str, Any]:
    """Render, export, train; the timing and memory figures."""
    import cv2
    import torch

    from sap_ros.synth.scene import SynthScene
    from sap_ros.synth.spec import SceneSpec
    from sap_ros.train.data import ExportSpec, export
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        clips = []
        for seed in range(args.scenes):
            scene = SynthScene(SceneSpec(seed=seed, kind='room' if seed % 2 == 0 else 'outdoor'))
            clip = root / f'scene{seed}'
            (clip / 'frames').mkdir(parents=True)
            (clip / 'labels').mkdir()
            rgb, labels = scene.render(scene.start_pose, 2 * args.image_size)
            cv2.imwrite(str(clip / 'frames' / '0000.png'), rgb[..., ::-1])
            cv2.imwrite(str(clip / 'labels' / '0000.png'), labels)
            clips.append(clip)
        export(clips, root / 'data', ExportSpec(size_px=args.image_size))
        cfg = FitConfig(data=str(root / 'data'), out=str(root / 'run'),
                        model_config=args.model_config, steps=args.steps,
                        batch_size=args.batch_size, num_frames=args.num_frames,
                        train=tuple(args.train.split(',')), device=args.device,
                        threads=args.threads, checkpoint_every=10 ** 9, lr=1e-5)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        run(cfg)
        steps, _ = read_metrics(root / 'run' / METRICS)
        timed = [e['s'] for e in steps[args.warmup:]] or [e['s'] for e in steps]
        per_step = statistics.median(timed)
        cuda = torch.cuda.is_available() and args.device != 'cpu'
        result = {
            'model_config': args.model_config, 'image_size': args.image_size,
            'batch_size': args.batch_size, 'num_frames': args.num_frames, 'train': args.train,
            'device': torch.cuda.get_device_name() if cuda else 'cpu',
            'autocast': 'bfloat16' if cuda else 'float32',
            'steps_timed': len(timed), 'seconds_per_step_median': per_step,
            'steps_per_s': 1.0 / per_step, 'videos_per_s': args.batch_size / per_step,
            'patches_per_s': args.batch_size * args.num_frames / per_step,
            'peak_cuda_memory_gib': (torch.cuda.max_memory_allocated() / 2 ** 30
                                     if cuda else None)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result
