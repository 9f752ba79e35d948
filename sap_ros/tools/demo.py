"""``make demo``: the main job on an embedded default.

The full demo (a synthetic 360 rosbag replayed through the real ``sap_node`` process, with a
report and a contact sheet) belongs to the replay issue, which is still open. Until it lands,
the demo runs what is finished end to end: the geometry benchmark on synthetic 2K frames (layout
coverage, patch extraction vs py360convert, fusion, the geometric oracle against the naive
whole-ERP upper bound), and writes ``demo_out/geometry.json``.
"""
from __future__ import annotations

from pathlib import Path
import sys
from typing import List, Optional

from sap_ros.tools import bench

NOT_YET = ('sap_ros demo: the replay demo (synthetic bag -> sap_node -> report) is not there yet;'
           ' running the geometry benchmark at 2K instead.')


def main(argv: Optional[List[str]] = None) -> int:
    """Run the interim demo; returns the benchmark's exit code."""
    out = Path('demo_out')
    out.mkdir(exist_ok=True)
    print(NOT_YET, file=sys.stderr)
    args = ['geometry', '--erp-width', '2048', '--patch-size', '512', '--frames', '1',
            '--json', str(out / 'geometry.json')]
    seam = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data' / '360vot'
    seam_mask = seam / '0117_000211_0.png'
    if seam_mask.is_file():
        args += ['--seam-mask', str(seam_mask)]
    code = bench.main(args + list(argv or []))
    print(f'{NOT_YET}\nwrote {out / "geometry.json"}', file=sys.stderr)
    return code


if __name__ == '__main__':
    sys.exit(main())
