"""Plumbing shared by the ``sap_bench`` subcommands: result fields, progress, running, output."""
from __future__ import annotations

import argparse
from dataclasses import field, fields
import json
from pathlib import Path
import statistics
import sys
import textwrap
import time
from typing import Any, Callable, List, Tuple, TypeVar

from sap_ros.errors import SapError


def result_field(help_text: str) -> Any:
    """A result dataclass field whose ``help`` feeds ``--help`` and the printed table."""
    return field(metadata={'help': help_text})


class Progress:
    """Timestamped progress lines on stderr (silent with ``quiet``)."""

    def __init__(self, quiet: bool) -> None:
        """Start the clock."""
        self.quiet = quiet
        self.start = time.perf_counter()

    def elapsed_s(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        """Print ``message`` with the elapsed time."""
        if not self.quiet:
            print(f'[{self.elapsed_s():7.1f} s] {message}', file=sys.stderr, flush=True)


def existing_file(text: str) -> Path:
    """Argparse type: a path that must name an existing file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f'no such file: {path}')
    return path


def run_and_report(name: str, args: argparse.Namespace,
                   measure: Callable[[argparse.Namespace, Progress], Any],
                   format_table: Callable[[Any], str]) -> int:
    """Measure, print the table, write ``--json``; 1 with one error line on failure."""
    try:
        result = measure(args, Progress(args.quiet))
    except SapError as err:
        print(f'sap_bench {name}: error: {err}', file=sys.stderr)
        return 1
    print(format_table(result))
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(result.to_dict(), indent=2) + '\n')
        except OSError as err:
            print(f'sap_bench {name}: error: cannot write {args.json}: {err}', file=sys.stderr)
            return 1
        print(f'wrote {args.json}')
    return 0


def result_keys_of(result_cls: type) -> List[Tuple[str, str]]:
    """``(key, explanation)`` of every JSON key of a result dataclass, in order."""
    return [(f.name, f.metadata['help']) for f in fields(result_cls)]


def keys_help(result_cls: type) -> str:
    """The report's keys with their explanations, indented for an argparse epilog."""
    return '\n'.join(textwrap.fill(f'{name}: {text}', width=96, initial_indent='  ',
                                   subsequent_indent='      ')
                     for name, text in result_keys_of(result_cls))


T = TypeVar('T')


def _no_sync() -> None:
    """Nothing to wait for (host work is done when the call returns)."""


def median_ms(fn: Callable[[], T], repeats: int, sync: Callable[[], None] = _no_sync, *,
              warm_up: bool = True) -> Tuple[float, T]:
    """Median ms of ``fn()`` over ``repeats`` calls (after a warm-up call); its last output.

    ``sync`` runs after every call and inside the timing (``torch.cuda.synchronize`` makes a
    call hold its GPU work); ``warm_up=False`` skips the warm-up call when the caller warmed up.
    """
    if warm_up:
        out = fn()  # tables, caches, allocator
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(times)), out
