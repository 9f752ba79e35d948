"""``sap_bench``: benchmarks that print ratios measured side by side in one run (ARCHITECTURE §9).

Each subcommand lives in its own module ``sap_ros.bench.cli_<name>`` exposing two functions:

* ``add_arguments(parser: argparse.ArgumentParser) -> None``: adds its options; it may also set
  ``parser.description`` / ``parser.epilog`` / ``parser.formatter_class`` for its ``--help``;
* ``run(args: argparse.Namespace) -> int``: runs it and returns the exit status; the first
  line of its docstring is the one-line summary shown by ``sap_bench --help``.

:data:`SUBCOMMANDS` maps each subcommand name to that ``(add_arguments, run)`` pair. ``engine``
(``sap_ros.bench.engine``) and ``parity`` (``sap_ros.bench.parity``) are registered when their
modules are installed.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Callable, Dict, List, NamedTuple, Optional

from sap_ros.bench import geometry as bench_geometry

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


class Subcommand(NamedTuple):
    """One ``sap_bench`` subcommand: how to declare its options and how to run it."""

    add_arguments: AddArguments
    run: Run


SUBCOMMANDS: Dict[str, Subcommand] = {
    'geometry': Subcommand(bench_geometry.add_arguments, bench_geometry.run),
}

_OPTIONAL_MODULES = {'engine': 'sap_ros.bench.engine', 'parity': 'sap_ros.bench.parity'}


def _register_optional() -> None:
    """Add subcommands whose module exists (import errors inside them are not hidden)."""
    for name, module_name in _OPTIONAL_MODULES.items():
        if name not in SUBCOMMANDS and importlib.util.find_spec(module_name) is not None:
            module = importlib.import_module(module_name)
            SUBCOMMANDS[name] = Subcommand(module.add_arguments, module.run)


def _summary(run: Run) -> str:
    doc = (run.__doc__ or '').strip()
    return doc.splitlines()[0] if doc else ''


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``sap_bench`` (one subparser per entry of SUBCOMMANDS)."""
    _register_optional()
    parser = argparse.ArgumentParser(
        prog='sap_bench',
        description='Benchmarks of the sap_ros pipeline. Each one measures its candidates side '
                    'by side in the same run and prints ratios (and optionally JSON); none of '
                    'them needs a SAM2 checkpoint unless it says so.',
        epilog='example: sap_bench geometry --erp-width 2048 --json /tmp/geometry.json')
    sub = parser.add_subparsers(dest='subcommand', metavar='SUBCOMMAND', required=True)
    for name, command in SUBCOMMANDS.items():
        summary = _summary(command.run)
        child = sub.add_parser(name, help=summary, description=summary)
        command.add_arguments(child)
        child.set_defaults(_run=command.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``sap_bench`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args._run(args))


if __name__ == '__main__':
    sys.exit(main())
