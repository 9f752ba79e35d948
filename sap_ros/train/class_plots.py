"""Confusion matrices of ``sap_train classify``: CSV, JSON and a PNG."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np


def write_confusion(out: Path, sightings: np.ndarray, fused: np.ndarray,
                    names: Sequence[str], where: str) -> None:
    """``confusion.csv`` (sightings), ``confusion.json`` (both) and ``confusion.png`` (both).

    Rows: the true class, columns: the predicted one (per-sighting argmax; fused per track).
    """
    out = Path(out)
    with open(out / 'confusion.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['true \\ predicted'] + list(names))
        for name, row in zip(names, sightings):
            writer.writerow([name] + [int(v) for v in row])
    (out / 'confusion.json').write_text(json.dumps({
        'class_names': list(names), 'scored_on': where, 'rows': 'true class',
        'columns': 'predicted class', 'sightings': sightings.tolist(),
        'fused_tracks': fused.tolist()}, indent=1))
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(names), 2 + 0.6 * len(names)))
    for ax, matrix, title in zip(axes, (sightings, fused),
                                 ('per sighting (argmax)', 'fused per object track')):
        totals = matrix.sum(axis=1, keepdims=True)
        ax.imshow(matrix / np.maximum(totals, 1), vmin=0, vmax=1, cmap='Blues')
        for (r, c), value in np.ndenumerate(matrix):
            ax.text(c, r, str(int(value)), ha='center', va='center', fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel('predicted')
        ax.set_ylabel('true')
        ax.set_title(title)
    fig.suptitle(f'sap_train classify: {where}', fontsize=9)
    fig.tight_layout()
    fig.savefig(out / 'confusion.png', dpi=100)
    plt.close(fig)
