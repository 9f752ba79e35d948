"""The repository explains itself: README and docs/*.md link only to files that exist in it.

A relative link must resolve to a path inside the repository that exists (a clone has nothing
beside it, e.g. no ../shared); web links are left alone. Section citations of
docs/ARCHITECTURE.md ("ARCHITECTURE §5" in code and docs) must name a section that exists.
"""
from __future__ import annotations

from pathlib import Path
import re
from typing import Iterator, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
INLINE = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
REFERENCE = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$', re.MULTILINE)
FENCE = re.compile(r'^```.*?^```', re.MULTILINE | re.DOTALL)
CITATION = re.compile(r'ARCHITECTURE(?:\.md)?((?:(?:,| and)? §\d+)+)')  # ARCHITECTURE §7, §10


def links(text: str) -> Iterator[str]:
    """Link targets of a Markdown text, outside fenced code blocks.

    >>> list(links('[a](x.md) ![b](img/c.png "t") [d](https://e.org) [r]: ../f.md'))
    ['x.md', 'img/c.png', 'https://e.org']
    >>> list(links('[r]: ../f.md'))
    ['../f.md']
    """
    text = FENCE.sub('', text)
    yield from INLINE.findall(text)
    yield from REFERENCE.findall(text)


def broken_links(text: str, base: Path) -> List[Tuple[str, str]]:
    """``(target, why)`` per bad relative link of ``text``, a Markdown file in folder ``base``."""
    problems = []
    for target in links(text):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.IGNORECASE) or target.startswith('#'):
            continue  # https:, mailto: ... and anchors within the page
        path = target.split('#', 1)[0].split('?', 1)[0]
        resolved = (base / path).resolve()
        if 'shared/' in path.replace('\\', '/') or REPO not in (resolved, *resolved.parents):
            problems.append((target, 'points outside the repository'))
        elif not resolved.exists():
            problems.append((target, f'{resolved.relative_to(REPO)} does not exist'))
    return problems


@pytest.mark.parametrize('doc', DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_relative_links_resolve_inside_the_repository(doc):
    text = doc.read_text()
    assert list(links(text)), f'{doc.name} has no links at all: is the link pattern broken?'
    assert broken_links(text, doc.parent) == []


def test_the_checker_catches_missing_and_outside_links():
    text = ('[ok](ARCHITECTURE.md#12-sam2-weights) [gone](nowhere.md) '
            '[design](../../shared/docs/D.md) [up](../../x.md) [web](https://example.org/x.md)\n'
            '```\n[in code](ignored.md)\n```\n')
    assert broken_links(text, REPO / 'docs') == [
        ('nowhere.md', 'docs/nowhere.md does not exist'),
        ('../../shared/docs/D.md', 'points outside the repository'),
        ('../../x.md', 'points outside the repository')]


def test_architecture_sections_cited_anywhere_exist():
    architecture = (REPO / 'docs' / 'ARCHITECTURE.md').read_text()
    sections = set(re.findall(r'^## §(\d+) ', architecture, re.MULTILINE))
    assert {str(n) for n in range(1, 14)} <= sections and '## Glossary' in architecture
    files = [*REPO.glob('sap_ros/**/*.py'), *REPO.glob('test/**/*.py'), *DOCS,
             REPO / 'launch' / 'sap.launch.py', REPO / 'config' / 'sap.yaml']
    cited = {(f.relative_to(REPO), n) for f in files for group in CITATION.findall(f.read_text())
             for n in re.findall(r'§(\d+)', group)}
    assert [(str(f), n) for f, n in sorted(cited) if n not in sections] == []
