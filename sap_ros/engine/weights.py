"""SAM2 weight files: which file belongs to which ``model.config``, the cache, the download.

``model.checkpoint: auto`` (the default) names the official checkpoint of ``model.config``. It is
looked up in a cache folder (``$SAP_ROS_CACHE``, else the user cache dir, ``~/.cache/sap_ros`` on
Linux) and downloaded there on first use, with a progress bar, by ``pooch`` (a maintained
library for fetching data files by URL and hash). The bytes go to a temporary file in the cache
folder, are checked against the sha256 the project knows, and only then renamed to the file name;
a failed, interrupted or mismatched download leaves nothing behind that could be taken for a
checkpoint. ``$SAP_ROS_WEIGHTS_URL`` replaces the official download locations with a mirror (a
folder of ``.pt`` files served over HTTP), for robots without internet access and for tests.

This module needs neither torch nor sam2 (the ``sap_weights`` CLI starts fast); reading a file
into a model is :mod:`sap_ros.engine.sam2_checkpoint`'s job.
"""
from __future__ import annotations

from dataclasses import dataclass
import hashlib
import logging
import os
from pathlib import Path
import sys
from typing import Dict, Optional, Tuple

from sap_ros.errors import CheckpointError, ConfigError

AUTO = 'auto'  # model.checkpoint value: the official file of model.config, from the cache
CACHE_ENV = 'SAP_ROS_CACHE'
URL_ENV = 'SAP_ROS_WEIGHTS_URL'
SAM21_URL = 'https://dl.fbaipublicfiles.com/segment_anything_2/092824/'
SAM20_URL = 'https://dl.fbaipublicfiles.com/segment_anything_2/072824/'
DOWNLOAD_SCRIPT = 'checkpoints/download_ckpts.sh of https://github.com/facebookresearch/sam2'
READ_TIMEOUT_S = 30.0  # a connection that stalls this long fails the download

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One SAM2 variant: ``model.config`` name, sam2 yaml, official file name and URL."""

    name: str          # value of model.config, e.g. 'sam2.1_hiera_t'
    yaml: str          # config inside the sam2 package, e.g. 'configs/sam2.1/sam2.1_hiera_t.yaml'
    file_name: str     # official checkpoint file, e.g. 'sam2.1_hiera_tiny.pt'
    url: str           # official download URL of file_name
    trunk_dim: int     # Hiera embed_dim (first conv channels): 96 | 112 | 144
    trunk_blocks: int  # number of Hiera blocks: 12 | 16 | 24 | 48


def _specs() -> Dict[str, ModelSpec]:
    sizes = (('t', 'tiny', 96, 12), ('s', 'small', 96, 16), ('b+', 'base_plus', 112, 24),
             ('l', 'large', 144, 48))
    out = {}
    for version, folder, url in (('sam2.1', 'sam2.1', SAM21_URL), ('sam2', 'sam2', SAM20_URL)):
        for short, long, dim, blocks in sizes:
            name = f'{version}_hiera_{short}'
            file_name = f'{version}_hiera_{long}.pt'
            out[name] = ModelSpec(name, f'configs/{folder}/{name}.yaml', file_name,
                                  url + file_name, dim, blocks)
    return out


MODEL_SPECS: Dict[str, ModelSpec] = _specs()


@dataclass(frozen=True)
class OfficialFile:
    """An official release file, recognised by exact size in bytes and then by sha256."""

    config: str
    size_bytes: int
    sha256: str


# Values read from the Git LFS pointers of the Hugging Face copies of the release files
# (facebook/sam2.1-hiera-tiny|small and facebook/sam2-hiera-tiny|base-plus state the sha256
# themselves; sizes and the other hashes agree across several independent mirrors). Only values
# seen twice or from facebook's own repositories are listed. sam2_hiera_small is missing here:
# its exact size was seen only once, and a file is only hashed when its size matches (its sha256
# is in EXTRA_SHA256 below, so that a download can still be verified).
OFFICIAL_FILES: Tuple[OfficialFile, ...] = (
    OfficialFile('sam2.1_hiera_t', 156008466,
                 '7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69'),
    OfficialFile('sam2.1_hiera_s', 184416285,
                 '6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38'),
    OfficialFile('sam2.1_hiera_b+', 323606802,
                 'a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5'),
    OfficialFile('sam2.1_hiera_l', 898083611,
                 '2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318'),
    OfficialFile('sam2_hiera_t', 155906050,
                 '65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125'),
    OfficialFile('sam2_hiera_b+', 323493298,
                 'd0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071'),
    OfficialFile('sam2_hiera_l', 897952466,
                 '7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b'),
)
# sha256 without a confirmed size: sam2_hiera_small.pt, the same value in several independent
# projects that verify their download of the 072824 release.
EXTRA_SHA256: Dict[str, str] = {
    'sam2_hiera_s': '95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3'}


@dataclass(frozen=True)
class WeightFile:
    """A file ``auto`` can fetch: where it comes from and what it must hash to."""

    config: str                # model.config it belongs to
    file_name: str             # name in the cache folder (and on the mirror)
    url: str                   # official download URL
    sha256: str                # a download must hash to this
    size_bytes: Optional[int]  # None where not confirmed


def _weight_files() -> Dict[str, WeightFile]:
    sizes = {entry.config: entry.size_bytes for entry in OFFICIAL_FILES}
    hashes = {**{entry.config: entry.sha256 for entry in OFFICIAL_FILES}, **EXTRA_SHA256}
    return {name: WeightFile(name, spec.file_name, spec.url, hashes[name], sizes.get(name))
            for name, spec in MODEL_SPECS.items()}


#: Every official checkpoint, by ``model.config`` name.
WEIGHT_FILES: Dict[str, WeightFile] = _weight_files()


def spec_for(config_name: str) -> ModelSpec:
    """The spec of a ``model.config`` name; ConfigError naming ``model.config`` if unknown.

    A path ending in ``.yaml`` is a SAM2 model yaml of one's own (e.g. the nano model that
    ``sap_train`` trains): it has no official file, so ``model.checkpoint`` must be a file path.

    >>> spec_for('sam2.1_hiera_t').file_name
    'sam2.1_hiera_tiny.pt'
    """
    if config_name.endswith(('.yaml', '.yml')):
        path = Path(config_name).expanduser().resolve()
        if not path.is_file():
            raise ConfigError('model.config', f'no SAM2 model yaml at {path} (from '
                              f'{config_name!r}); give an existing file or one of '
                              f'{sorted(MODEL_SPECS)}')
        return ModelSpec(str(path), str(path), '', '', 0, 0)
    if config_name not in MODEL_SPECS:
        raise ConfigError('model.config', f'unknown SAM2 config {config_name!r}; expected one '
                          f'of {sorted(MODEL_SPECS)} or the path of a SAM2 model .yaml')
    return MODEL_SPECS[config_name]


def sha256_of(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(chunk_bytes), b''):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------- cache and download
def cache_dir() -> Path:
    """The cache folder: ``$SAP_ROS_CACHE``, else the platform's user cache dir + ``sap_ros``."""
    override = os.environ.get(CACHE_ENV, '').strip()
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs  # pooch's own dependency; XDG_CACHE_HOME is honoured on Linux
    return Path(platformdirs.user_cache_dir('sap_ros', appauthor=False))


def download_url(entry: WeightFile) -> str:
    """Download URL of ``entry``: the mirror in ``$SAP_ROS_WEIGHTS_URL``, else the official one."""
    mirror = os.environ.get(URL_ENV, '').strip()
    return f'{mirror.rstrip("/")}/{entry.file_name}' if mirror else entry.url


def weight_file_for(config_name: str) -> WeightFile:
    """The file ``auto`` means for ``model.config``; ConfigError if the config is unknown."""
    if config_name not in WEIGHT_FILES:
        raise ConfigError('model.config', f'unknown SAM2 config {config_name!r}; expected one '
                          f'of {sorted(WEIGHT_FILES)}')
    return WEIGHT_FILES[config_name]


def cached_path(entry: WeightFile, cache: Optional[Path] = None) -> Path:
    """Where ``entry`` lies in the cache (whether or not it is there)."""
    return (cache_dir() if cache is None else cache) / entry.file_name


def by_hand(entry: WeightFile, target: Path) -> str:
    """How to place ``entry`` without a download by sap_ros."""
    return (f'To place it by hand: download {entry.url} on a machine with internet, copy it to '
            f'{target} and check it with `sap_weights verify {target}` (sha256 {entry.sha256}); '
            f'or set model.checkpoint to the path of the file. ${CACHE_ENV} moves the cache, '
            f'${URL_ENV} points downloads at a mirror (a folder of .pt files served over HTTP).')


def fetch(entry: WeightFile, cache: Optional[Path] = None, progress: bool = True,
          check_cached: bool = False) -> Path:
    """Path of ``entry`` in the cache, downloaded and verified first if it is not there.

    A file at the cache path is taken as is (only a verified download or a copy by hand puts one
    there); ``check_cached`` hashes it first and downloads it again if it does not match. Raises
    CheckpointError naming the URL, the cache path and how to place the file by hand when the
    download fails, is cut short or does not hash to ``entry.sha256``.
    """
    target = cached_path(entry, cache)
    if target.is_file():
        if not check_cached or sha256_of(target) == entry.sha256:
            return target
        _LOG.warning('%s does not have the sha256 of %s: downloading it again', target,
                     entry.file_name)
    url = download_url(entry)
    _LOG.warning('downloading %s (model.config=%s) from %s to %s', entry.file_name,
                 entry.config, url, target)
    try:
        _download(url, target, entry.sha256, progress)
    except Exception as exc:  # noqa: BLE001 - requests, OSError, pooch's ValueError on a hash
        raise CheckpointError(_failure(entry, url, target, exc)) from exc
    return target


def _download(url: str, target: Path, sha256: str, progress: bool) -> None:
    import pooch
    from tqdm import tqdm

    class ProgressBar(tqdm):
        """A bar pooch may test for truth before it knows the size (a bare tqdm refuses)."""

        def __bool__(self) -> bool:
            return True

    pooch.get_logger().setLevel(logging.WARNING)  # fetch() has said what is downloaded where
    target.parent.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar(desc=target.name, unit='B', unit_scale=True, unit_divisor=1024,
                      file=sys.stderr, disable=not progress,
                      mininterval=0.5 if sys.stderr.isatty() else 10.0)
    try:
        downloader = pooch.HTTPDownloader(progressbar=bar if progress else False,
                                          timeout=READ_TIMEOUT_S)
        # pooch streams into a temporary file in the cache folder, checks the sha256, then
        # renames it to target; on any failure the temporary file is deleted.
        pooch.retrieve(url, known_hash=f'sha256:{sha256}', fname=target.name,
                       path=target.parent, downloader=downloader)
    finally:
        bar.close()


def _failure(entry: WeightFile, url: str, target: Path, exc: Exception) -> str:
    text = ' '.join(str(exc).split())
    detail = text if len(text) <= 240 else text[:240] + '...'
    if isinstance(exc, ValueError) and 'hash' in detail.lower():
        what = (f'the file downloaded from {url} does not have the expected sha256 '
                f'{entry.sha256} ({detail})')
    else:
        what = f'the download from {url} failed ({type(exc).__name__}: {detail})'
    return (f'model.checkpoint={AUTO}: {entry.file_name} (model.config={entry.config}) is not in '
            f'the cache {target.parent}, and {what}; nothing was kept. {by_hand(entry, target)}')


def resolve_checkpoint_path(raw: str, spec: ModelSpec) -> Path:
    """Absolute path of the checkpoint file for ``model.checkpoint`` = ``raw``.

    ``auto`` is the official file of ``spec`` from the cache, downloaded first if missing; a
    directory holding ``spec.file_name`` is accepted. Raises CheckpointError naming the path
    looked at (and the URL) and how to get the file.
    """
    if not spec.file_name and (raw.strip() == AUTO or Path(raw).expanduser().is_dir()):
        raise CheckpointError(f'model.checkpoint={raw!r}: {how_to_get(spec)}')
    if raw.strip() == AUTO:
        return fetch(weight_file_for(spec.name))
    path = Path(raw).expanduser().resolve()
    if path.is_dir():
        candidate = path / spec.file_name
        if candidate.is_file():
            return candidate
        raise CheckpointError(f'model.checkpoint={raw!r} is the directory {path}, which holds '
                              f'no {spec.file_name}. {how_to_get(spec)}.')
    if not path.is_file():
        raise CheckpointError(f'model.checkpoint={raw!r}: no file at {path}. '
                              f'{how_to_get(spec)}.')
    return path


def how_to_get(spec: ModelSpec) -> str:
    """One sentence telling a user where the checkpoint for ``spec`` comes from."""
    if not spec.file_name:  # a model yaml of one's own
        return (f'model.config={spec.name} is a model yaml with no official checkpoint: set '
                f'model.checkpoint to the path of a file trained for it (e.g. by sap_train fit)')
    return (f'model.config={spec.name} expects the official file {spec.file_name}: set '
            f'model.checkpoint={AUTO} to download it into the cache, or download {spec.url} '
            f'(or run {DOWNLOAD_SCRIPT}) and set model.checkpoint to its path')


def empty_checkpoint_message(spec: ModelSpec) -> str:
    """Message for an empty ``model.checkpoint`` when random weights are not allowed."""
    files = ', '.join(s.file_name for s in MODEL_SPECS.values())
    return (f'model.checkpoint is empty. {how_to_get(spec)}. Official SAM2 checkpoints: {files} '
            f'(2.1 files under {SAM21_URL}, 2.0 files under {SAM20_URL}); model.config must '
            f'match the file. For tests and demos only, set model.allow_random_weights=true to '
            f'run the real architecture with random weights.')
