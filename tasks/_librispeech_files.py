"""LibriSpeech files: layout, downloads, split lists, phone labels and the decoded-audio cache.

Layout under the data root (the openslr tarball and the CPC label folder side by side)::

    LibriSpeech/train-clean-100/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
    LibriSpeech100_labels_split/{train_split.txt,test_split.txt,converted_aligned_phones.txt}

``--data-root`` may be that folder or a folder holding ``librispeech/`` with it inside.

Cache: the FLACs of the listed utterances are decoded once into ``audio.int16`` (every utterance's int16
samples back to back, read as a np.memmap) with ``index.npz`` (ids, offsets); the phone labels go into
``phones.npz``. The cache folder is named by a hash of the utterance ids, their files' sizes and mtimes and
the label file's, so a changed corpus builds a new cache; it is written to a temporary folder and renamed,
so an interrupted build leaves nothing half-written. It lives in ``DATA_ROOT/.bench_cache`` when the data
root is writable, else in ``~/.cache/bench`` (``bench.data.cache_dir``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.data import DataError, cache_dir, download, sha256_file
from tasks._waveforms import Recordings

log = logging.getLogger(__name__)
SR = 16000
SUBSET = "train-clean-100"
LABELS = "LibriSpeech100_labels_split"
CORPUS_URL = "https://www.openslr.org/resources/12/train-clean-100.tar.gz"
CORPUS_SHA256 = "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2"
CORPUS_MD5 = "2a93770f6d5c6c964bc36631d331a522"  # the one openslr publishes
MIRROR = "https://raw.githubusercontent.com/s3prl/s3prl/ec8064b5889f81ca460fbe2c094ce576a6f120b7/s3prl/downstream/phone_linear/data"
LABEL_FILES = {  # name -> sha256 (None: no published checksum; checked by structure instead)
    "train_split.txt": "c37e1c4831552fad4c9595526166fc0ff0481eed8e02622c3c5d73386cd8b62d",
    "test_split.txt": "a961da3bdcd86ae56ba186e07c36e20ba6e2532f985b2b77811e9df93605770c",
    "converted_aligned_phones.txt": None,
}


def find_root(root: Path) -> Path:
    """The folder holding ``LibriSpeech/`` (``root`` itself or ``root/librispeech``); ``root`` if neither."""
    for candidate in (root, root / "librispeech"):
        if (candidate / "LibriSpeech").is_dir() or (candidate / LABELS).is_dir():
            return candidate
    return root


def flac_path(root: Path, utt: str) -> Path:
    spk, chapter, _ = utt.split("-")
    return root / "LibriSpeech" / SUBSET / spk / chapter / f"{utt}.flac"


def fetch_labels(root: Path) -> None:
    """Download the missing CPC split lists and phone labels from the public mirror (sha256 where known)."""
    for name, sha in LABEL_FILES.items():
        dest = root / LABELS / name
        if not dest.is_file():
            download(f"{MIRROR}/{name}", dest, sha256=sha)
            if sha is None:
                check_phone_file(dest)
                log.info("%s has no published checksum; downloaded with sha256 %s", name, sha256_file(dest))


def fetch_corpus(root: Path) -> None:
    """Download train-clean-100 (6.3 GB, checksum-verified) from openslr and extract it under ``root``."""
    archive = download(CORPUS_URL, root / "train-clean-100.tar.gz", sha256=CORPUS_SHA256, md5=CORPUS_MD5)
    log.info("extracting %s into %s", archive, root)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")


def check_phone_file(path: Path) -> None:
    with path.open() as fh:
        first = fh.readline().split()
    if len(first) < 2 or first[0].count("-") != 2 or not all(t.isdigit() for t in first[1:]):
        path.unlink()
        raise DataError(f"{path} is not a CPC phone-label file (id followed by integers); it was removed")


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"missing split list {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_phones(path: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """Phone labels (int64 per 10 ms Kaldi frame) of the utterances in ``wanted``."""
    out: dict[str, np.ndarray] = {}
    if not path.is_file():
        return out
    with path.open() as fh:
        for line in fh:
            utt, _, rest = line.partition(" ")
            if utt in wanted:
                out[utt] = np.array(rest.split(), dtype=np.int64)
    return out


def cache_key(paths: list[Path], phones: Path) -> str:
    digest = hashlib.sha256()
    for p in [*paths, phones]:
        st = p.stat() if p.exists() else None
        digest.update(f"{p.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}\n".encode())
    return digest.hexdigest()[:16]


def load_cached(root: Path, ids: list[str], phones_file: Path) -> tuple[Recordings, dict[str, np.ndarray]]:
    """Recordings (memory-mapped int16) and phone labels of ``ids``, decoding the FLACs only on a cache miss."""
    paths = [flac_path(root, u) for u in ids]
    folder = cache_dir(root) / f"librispeech-{cache_key(paths, phones_file)}"
    if not (folder / "index.npz").is_file():
        build_cache(folder, ids, paths, phones_file)
    index = np.load(folder / "index.npz")
    audio = np.memmap(folder / "audio.int16", dtype=np.int16, mode="r")
    labels = np.load(folder / "phones.npz")
    return Recordings(audio, index["offsets"], [str(u) for u in index["ids"]]), {
        k: labels[k] for k in labels.files
    }


def build_cache(folder: Path, ids: list[str], paths: list[Path], phones_file: Path) -> None:
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    log.info("decoding %d FLAC files once into %s", len(ids), folder)
    with (tmp / "audio.int16").open("wb") as fh:
        for i, path in enumerate(paths):
            wave, sr = sf.read(path, dtype="int16", always_2d=True)
            if sr != SR:
                raise DataError(f"{path} is sampled at {sr} Hz; LibriSpeech is 16000 Hz")
            fh.write(np.ascontiguousarray(wave[:, 0]).tobytes())
            offsets[i + 1] = offsets[i] + len(wave)
    np.savez(tmp / "index.npz", ids=np.array(ids), offsets=offsets)
    np.savez(tmp / "phones.npz", **read_phones(phones_file, set(ids)))
    if folder.exists():  # another process built it meanwhile
        shutil.rmtree(tmp)
        return
    tmp.rename(folder)
