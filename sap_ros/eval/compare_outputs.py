"""Are two runs' outputs the same? ``python -m sap_ros.eval.compare_outputs A.mcap B.mcap``.

Compares the ``/sap/masks`` label maps byte for byte and the ``/sap/objects`` clouds field by
field over the fields both bags carry (a newer layout's extra fields, e.g. ``class_id`` and
``class_score``, are listed but not compared; ``--ignore`` leaves more out), message by message
in order. Exit 0 when
everything compared is identical, 1 when something differs (the first differences are
printed), 2 on unreadable input. Use it to check that an option left the outputs unchanged:
``sap_replay ... --out a`` before and ``--out b`` after, then compare ``a/sap.mcap`` with
``b/sap.mcap``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Any, Dict, List, Optional, Sequence, Set

from sap_ros.eval.replay_gt import ReplayError
from sap_ros.io.image_codec import cloud_to_objects_array

MASKS, OBJECTS = '/sap/masks', '/sap/objects'


def _messages(path: Path) -> Dict[str, List[Any]]:
    from rosbags.highlevel import AnyReader
    if not path.exists():
        raise ReplayError(f'{path} does not exist')
    out: Dict[str, List[Any]] = {}
    with AnyReader([path]) as reader:
        for conn in reader.connections:
            if conn.topic not in (MASKS, OBJECTS):
                continue
            for c, _, raw in reader.messages(connections=[conn]):
                out.setdefault(conn.topic, []).append(reader.deserialize(raw, c.msgtype))
    for topic in (MASKS, OBJECTS):
        if topic not in out:
            raise ReplayError(f'{path} has no {topic} messages (is it a sap_replay output?)')
    return out


def compare(a: Path, b: Path, ignore: Sequence[str] = ()) -> List[str]:
    """Lines describing the comparison; the first line says 'identical' or 'DIFFERENT'.

    ``ignore``: object fields left out of the comparison (e.g. ``class_id``).
    """
    first, second = _messages(a), _messages(b)
    problems: List[str] = []
    masks_a, masks_b = first[MASKS], second[MASKS]
    if len(masks_a) != len(masks_b):
        problems.append(f'{MASKS}: {len(masks_a)} vs {len(masks_b)} messages')
    for k, (x, y) in enumerate(zip(masks_a, masks_b)):
        if ((x.height, x.width, x.encoding) != (y.height, y.width, y.encoding)
                or bytes(x.data) != bytes(y.data)):
            problems.append(f'{MASKS}: message {k} differs')
    clouds_a, clouds_b = first[OBJECTS], second[OBJECTS]
    if len(clouds_a) != len(clouds_b):
        problems.append(f'{OBJECTS}: {len(clouds_a)} vs {len(clouds_b)} messages')
    objects = 0
    only: Set[str] = set()
    for k, (x, y) in enumerate(zip(clouds_a, clouds_b)):
        rows_a = cloud_to_objects_array(x.fields, x.point_step, x.width, x.data)
        rows_b = cloud_to_objects_array(y.fields, y.point_step, y.width, y.data)
        names_a, names_b = set(rows_a.dtype.names or ()), set(rows_b.dtype.names or ())
        only |= names_a ^ names_b
        objects += len(rows_a)
        if len(rows_a) != len(rows_b):
            problems.append(f'{OBJECTS}: message {k} has {len(rows_a)} vs {len(rows_b)} objects')
            continue
        for name in sorted((names_a & names_b) - set(ignore)):
            if rows_a[name].tobytes() != rows_b[name].tobytes():
                problems.append(f'{OBJECTS}: message {k} field {name} differs')
    verdict = 'DIFFERENT' if problems else 'identical'
    lines = [f'{verdict}: {len(masks_a)} label maps byte for byte, {len(clouds_a)} object clouds '
             f'({objects} objects) on their common fields'
             + (f'; not compared (in one bag only): {", ".join(sorted(only))}' if only else '')
             + (f'; ignored: {", ".join(ignore)}' if ignore else '')]
    return lines + problems[:20]


def main(argv: Optional[List[str]] = None) -> int:
    """Print the comparison; exit 0 identical, 1 different, 2 bad input."""
    parser = argparse.ArgumentParser(prog='python -m sap_ros.eval.compare_outputs',
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('a', type=Path, help='first sap_replay output bag (sap.mcap)')
    parser.add_argument('b', type=Path, help='second sap_replay output bag')
    parser.add_argument('--ignore', default='', metavar='FIELD[,FIELD...]',
                        help='object fields not to compare, e.g. class_id,class_score')
    args = parser.parse_args(argv)
    try:
        lines = compare(args.a, args.b, [f for f in args.ignore.split(',') if f])
    except (ReplayError, OSError, ValueError) as err:
        print(f'compare_outputs: error: {err}', file=sys.stderr)
        return 2
    print('\n'.join(lines))
    return 0 if lines[0].startswith('identical') else 1


if __name__ == '__main__':
    raise SystemExit(main())
