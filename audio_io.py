"""Audio and file I/O: finding inputs, decoding, block reads, and writes that are never half-done.

Samples are read in the file's own precision (int32 for PCM, float for float files) so that parts written back
with the same subtype are sample-exact copies. Formats libsndfile cannot read (m4a, aac, opus, webm...) are
decoded once by ffmpeg into a temporary WAV that is then read like any other file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".oga", ".opus", ".aac", ".webm", ".wma",
                    ".aif", ".aiff", ".mp4", ".mka", ".w64", ".caf"}

INT_FULL_SCALE = float(2 ** 31)


class AudioError(Exception):
    """An input that cannot be used; the message says why, in a few words."""


def printable_path(path: Path) -> str:
    """The path as text that can be printed and written to UTF-8 files: a name that is not valid UTF-8 (its
    bytes come in as lone surrogates) shows those bytes as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def name_problem(path: Path) -> str | None:
    """Why the tool cannot carry this input's name into its UTF-8 manifest and reports, or None."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (rename it, e.g. with convmv -f latin1 -t utf8)"
    return None


def find_audio_files(root: Path) -> list[Path]:
    """Audio files under root (or root itself), sorted; symlinked folders are followed once (no loops)."""
    root = Path(root)
    if root.is_file():
        return [root]
    found, seen_dirs = [], set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        try:
            key = (os.stat(folder).st_dev, os.stat(folder).st_ino)
        except OSError:
            subfolders[:] = []
            continue
        if key in seen_dirs:  # a symlink loop or a second link to a folder already walked
            subfolders[:] = []
            continue
        seen_dirs.add(key)
        subfolders.sort()
        found.extend(Path(folder) / name for name in files if Path(name).suffix.lower() in AUDIO_EXTENSIONS)
    return sorted(found)


@dataclass
class AudioInfo:
    path: Path  # the readable file (the input itself, or its decoded copy)
    sample_rate: int
    channels: int
    frames: int
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    @property
    def read_dtype(self) -> str:
        """int32 keeps PCM samples exact; float files stay float."""
        if self.subtype.startswith("PCM_"):
            return "int32"
        return "float64" if self.subtype == "DOUBLE" else "float32"

    @property
    def write_subtype(self) -> str:
        if self.subtype in ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
            return self.subtype
        return "PCM_16"  # 8-bit PCM and lossy codecs


def _decode_with_ffmpeg(path: Path, scratch_dir: Path) -> Path:
    if shutil.which("ffmpeg") is None:
        raise AudioError("format not readable without ffmpeg (install ffmpeg)")
    scratch_dir.mkdir(parents=True, exist_ok=True)
    handle, decoded = tempfile.mkstemp(suffix=".wav", dir=scratch_dir)
    os.close(handle)
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(path), "-vn", "-c:a", "pcm_s16le",
               "-f", "wav", "-rf64", "auto", decoded]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(decoded)
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise AudioError(f"cannot decode audio ({lines[-1] if lines else 'ffmpeg failed'})")
    return Path(decoded)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise AudioError("is a directory, not an audio file")
    if not path.exists():
        raise AudioError("file not found")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")


@dataclass(frozen=True)
class Probe:
    duration: float
    sample_rate: int
    channels: int


def probe_audio(path: Path) -> Probe:
    """Duration, rate and channels without decoding (ffprobe for what libsndfile cannot read). Raises AudioError."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
        return Probe(info.frames / info.samplerate, int(info.samplerate), int(info.channels))
    except (sf.LibsndfileError, RuntimeError):
        pass
    if shutil.which("ffprobe") is None:
        raise AudioError("format not readable without ffmpeg (install ffmpeg)")
    command = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
               "stream=sample_rate,channels:format=duration", "-of", "json", str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        found = json.loads(result.stdout)
        stream = found["streams"][0]
        return Probe(float(found["format"]["duration"]), int(stream["sample_rate"]), int(stream["channels"]))
    except (ValueError, KeyError, IndexError):
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise AudioError(f"cannot read audio ({lines[-1] if lines else 'no audio stream'})") from None


def open_audio(path: Path, scratch_dir: Path) -> AudioInfo:
    """Probe an input; decode it with ffmpeg when libsndfile cannot read it. Raises AudioError."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
        readable = path
    except (sf.LibsndfileError, RuntimeError):
        readable = _decode_with_ffmpeg(path, scratch_dir)
        info = sf.info(str(readable))
    if info.frames <= 0:
        raise AudioError("no audio samples (zero-length audio)")
    return AudioInfo(readable, int(info.samplerate), int(info.channels), int(info.frames), info.subtype)


def read_frames(info: AudioInfo, start: int, frames: int, dtype: str | None = None) -> np.ndarray:
    """(frames, channels) from start; fewer at the end of the file."""
    with sf.SoundFile(str(info.path)) as handle:
        handle.seek(start)
        return handle.read(frames, dtype=dtype or info.read_dtype, always_2d=True)


def iter_blocks(info: AudioInfo, start: int, frames: int, block_frames: int,
                dtype: str | None = None) -> Iterator[np.ndarray]:
    """The frames [start, start+frames) in blocks of at most block_frames, so memory stays bounded."""
    with sf.SoundFile(str(info.path)) as handle:
        handle.seek(start)
        remaining = frames
        while remaining > 0:
            block = handle.read(min(block_frames, remaining), dtype=dtype or info.read_dtype, always_2d=True)
            if len(block) == 0:
                raise AudioError(f"audio ends early: {remaining} frames missing (truncated file?)")
            remaining -= len(block)
            yield block


def as_float(block: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] from any dtype read_frames returns."""
    if block.dtype == np.int32:
        return (block / INT_FULL_SCALE).astype(np.float32)
    return block.astype(np.float32, copy=False)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- writes that are never half-done: a temporary name in the same folder, then an atomic rename ----

@functools.cache
def new_file_mode() -> int:
    """The mode open() gives a new file under this process's umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


TEMP_STEM = 32  # characters of the final name's stem kept in a temporary name


def is_temp_name(name: str) -> bool:
    """A temporary name of atomic_path's, left by a run that was killed while writing."""
    return re.fullmatch(r"\..*\.[a-z0-9_]{8}\.tmp(\.[^.]*)?", name) is not None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # short whatever the final name (a 250-byte name must still fit), and recognisable (is_temp_name)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem[:TEMP_STEM]}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp's 0600 would make a data set written for a group unreadable
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class AudioWriter:
    """Streams blocks into a WAV file that appears under its final name only when complete."""

    def __init__(self, path: Path, sample_rate: int, channels: int, subtype: str):
        self._context = atomic_path(path)
        tmp = self._context.__enter__()
        self._file = sf.SoundFile(str(tmp), "w", samplerate=sample_rate, channels=channels, subtype=subtype,
                                  format="WAV")

    def write(self, block: np.ndarray) -> None:
        self._file.write(block)

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()
        self._context.__exit__(*exc)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
