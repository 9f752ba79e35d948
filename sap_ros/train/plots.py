"""The curves of a ``sap_train fit`` run from its ``metrics.jsonl``: losses and held-out IoU."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

LOSS_PARTS = ('core_loss', 'loss_mask', 'loss_dice', 'loss_iou', 'loss_class')


def read_metrics(path: Path) -> Tuple[List[dict], List[dict]]:
    """``(per-step entries, evaluation entries)`` of a metrics log.

    A resumed run repeats the steps after its last checkpoint: the last entry of a step counts.
    """
    steps: Dict[int, dict] = {}
    evals: Dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        entry = json.loads(line)
        (evals if 'eval' in entry else steps)[int(entry['step'])] = entry
    return [steps[k] for k in sorted(steps)], [evals[k] for k in sorted(evals)]


def plot(metrics: Path, out: Path) -> Path:
    """Write ``out`` (PNG): loss parts per step (smoothed) and the held-out scores."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    steps, evals = read_metrics(metrics)
    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
    x = [e['step'] for e in steps]
    window = max(1, len(steps) // 50)
    for part in LOSS_PARTS:
        values = [e.get(part, 0.0) for e in steps]
        smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):
                                                                           i + 1])
                  for i in range(len(values))]
        ax_loss.plot(x, smooth, label=part)
    ax_loss.set_yscale('log')
    ax_loss.set_xlabel('step')
    ax_loss.set_title(f'training loss (mean of {window} steps)')
    ax_loss.legend(fontsize=8)
    for key in ('one_click_best_of_3', 'propagation', 'presence'):
        shown = [e for e in evals if key in e['eval']]  # presence: not in older logs
        ax_eval.plot([e['step'] for e in shown], [e['eval'][key] for e in shown], 'o-',
                     label=key)
    ax_eval.set_ylim(0, 1)
    ax_eval.set_xlabel('step')
    ax_eval.set_title('held-out patch IoU (presence: share right)')
    ax_eval.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
