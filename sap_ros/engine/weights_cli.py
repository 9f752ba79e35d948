"""``sap_weights``: list, fetch, locate and verify the SAM2 checkpoints ``auto`` uses.

Everything goes through :mod:`sap_ros.engine.weights`, exactly as ``model.checkpoint: auto`` does
in the node, ``sap_replay`` and ``make demo``; no torch import, so it answers at once.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import List, Optional

from sap_ros.engine import weights
from sap_ros.errors import SapError

EXIT_MISSING = 1  # path: not cached; verify: not an official file (or not the one asked for)
EXIT_ERROR = 2    # a download failed, an unknown config, an unreadable file

EPILOG = f"""\
model.checkpoint: auto (the default of sap_node, sap_replay and make demo) means the official
file of model.config, taken from the cache and downloaded there once, verified by sha256.

environment:
  {weights.CACHE_ENV}        cache folder (default: the user cache dir + sap_ros, e.g.
                       ~/.cache/sap_ros, or $XDG_CACHE_HOME/sap_ros)
  {weights.URL_ENV}  download from this mirror instead of the official URLs: a folder
                       of .pt files served over HTTP (e.g. python3 -m http.server)

examples:
  sap_weights list
  sap_weights fetch sam2.1_hiera_t
  ros2 launch sap_ros sap.launch.py checkpoint:=$(sap_weights path sam2.1_hiera_t)
  sap_weights verify ~/Downloads/sam2.1_hiera_tiny.pt
"""


def _human(size_bytes: Optional[int]) -> str:
    return '?' if size_bytes is None else f'{size_bytes / 1e6:.0f} MB'


def cmd_list(_: argparse.Namespace) -> int:
    """One line per official file: config, file, size, cached path or 'not cached'."""
    cache = weights.cache_dir()
    print(f'cache: {cache}')
    print(f'{"model.config":<16} {"file":<26} {"size":>7}  cached')
    for entry in weights.WEIGHT_FILES.values():
        path = weights.cached_path(entry, cache)
        state = str(path) if path.is_file() else 'not cached'
        print(f'{entry.config:<16} {entry.file_name:<26} {_human(entry.size_bytes):>7}  {state}')
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download (unless cached) and print the cache path."""
    entry = weights.weight_file_for(args.config)
    path = weights.fetch(entry, progress=not args.quiet, check_cached=args.check)
    print(path)
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    """Print where the file of CONFIG lies in the cache; exit 1 (and say so) if it is not there."""
    entry = weights.weight_file_for(args.config)
    path = weights.cached_path(entry)
    print(path)
    if not path.is_file():
        print(f'sap_weights: {entry.file_name} is not cached yet: sap_weights fetch '
              f'{entry.config}', file=sys.stderr)
        return EXIT_MISSING
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Hash PATH and name the official file it is; exit 1 if none (or not --config's)."""
    path = Path(args.path).expanduser()
    if not path.is_file():
        print(f'sap_weights: error: no file at {path.resolve()}', file=sys.stderr)
        return EXIT_ERROR
    digest = weights.sha256_of(path)
    size = path.stat().st_size
    matches = [e for e in weights.WEIGHT_FILES.values() if e.sha256 == digest]
    if not matches:
        print(f'{path}: NOT an official SAM2 checkpoint (sha256 {digest}, {size} bytes); '
              f'it can still be loaded with model.checkpoint:={path} if it fits model.config')
        return EXIT_MISSING
    entry = matches[0]
    print(f'{path}: official {entry.file_name} (model.config={entry.config}), sha256 {digest}, '
          f'{size} bytes')
    if args.config and args.config != entry.config:
        print(f'sap_weights: {path} belongs to model.config={entry.config}, not {args.config}',
              file=sys.stderr)
        return EXIT_MISSING
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``sap_weights`` argument parser."""
    parser = argparse.ArgumentParser(
        prog='sap_weights', epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description='List, fetch, locate and verify the SAM2 checkpoints that '
                    'model.checkpoint: auto uses.')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    configs = sorted(weights.WEIGHT_FILES)
    sub = commands.add_parser('list', help='the official files, cached or not')
    sub.set_defaults(run=cmd_list)
    sub = commands.add_parser('fetch', help='download the file of CONFIG into the cache (with a '
                              'progress bar, sha256-verified) unless it is there; print its path')
    sub.add_argument('config', metavar='CONFIG', choices=configs,
                     help=f'a model.config name: {", ".join(configs)}')
    sub.add_argument('--check', action='store_true', help='hash a cached file too, and '
                     'download it again if it does not match')
    sub.add_argument('--quiet', action='store_true', help='no progress bar')
    sub.set_defaults(run=cmd_fetch)
    sub = commands.add_parser('path', help='print the cache path of the file of CONFIG (exit 1 '
                              'when it is not cached yet)')
    sub.add_argument('config', metavar='CONFIG', choices=configs, help='a model.config name')
    sub.set_defaults(run=cmd_path)
    sub = commands.add_parser('verify', help='sha256 of PATH: which official file it is (exit 1 '
                              'when none)')
    sub.add_argument('path', metavar='PATH', help='a .pt file')
    sub.add_argument('--config', choices=configs, metavar='CONFIG',
                     help='also require the file to belong to this model.config')
    sub.set_defaults(run=cmd_verify)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``sap_weights`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SapError as err:
        print(f'sap_weights: error: {err}', file=sys.stderr)
        return EXIT_ERROR


if __name__ == '__main__':
    sys.exit(main())
