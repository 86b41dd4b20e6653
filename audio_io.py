"""Audio and file I/O: finding inputs, decoding, block reads, and writes that are never half-done.

Samples are read in the file's own precision (int32 for PCM, float for float files) so that parts written back
with the same subtype are sample-exact copies. Formats libsndfile cannot read (m4a, aac, opus, webm...) are
decoded once by ffmpeg into a temporary WAV that is then read like any other file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
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
    notes: tuple[str, ...] = ()  # caveats on what is used (a WAV shorter than its header claims)

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


UNREADABLE = "not an audio file, or damaged beyond reading"


def _ffmpeg_reason(stderr: str, path: Path) -> str:
    """ffmpeg's last complaint without its internals ("[mp3 @ 0x55d0] ", the path)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "unknown format"
    reason = re.sub(r"^\[[^]]*@ 0x[0-9a-f]+\] ", "", lines[-1])
    return reason.removeprefix(f"{path}: ")


def _ffmpeg(tool: str) -> str:
    if shutil.which(tool) is None:
        raise AudioError("format not readable without ffmpeg (install ffmpeg)")
    return tool


def _ffprobe(path: Path) -> Probe:
    """What ffmpeg finds in a file libsndfile cannot read, with a reason a user can act on when it is no audio."""
    command = [_ffmpeg("ffprobe"), "-v", "error", "-show_entries",
               "stream=codec_type,sample_rate,channels:format=duration", "-of", "json", str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        found = json.loads(result.stdout)
        streams = found["streams"]
    except (ValueError, KeyError):
        raise AudioError(f"{UNREADABLE} ({_ffmpeg_reason(result.stderr, path)})") from None
    audio = [stream for stream in streams if stream.get("codec_type") == "audio"]
    if not audio:
        kinds = sorted({stream.get("codec_type", "data") for stream in streams})
        raise AudioError(f"no audio stream (the file has {' and '.join(kinds)} only)" if kinds
                         else "no audio stream (not an audio file, or damaged)")
    try:
        return Probe(float(found["format"]["duration"]), int(audio[0]["sample_rate"]), int(audio[0]["channels"]))
    except (ValueError, KeyError):
        raise AudioError(f"{UNREADABLE} (no readable audio stream)") from None


def _decode_with_ffmpeg(path: Path, scratch_dir: Path) -> Path:
    _ffprobe(path)  # its reasons are clearer than a failed decode's
    scratch_dir.mkdir(parents=True, exist_ok=True)
    handle, decoded = tempfile.mkstemp(suffix=".wav", dir=scratch_dir)
    os.close(handle)
    command = [_ffmpeg("ffmpeg"), "-nostdin", "-v", "error", "-y", "-i", str(path), "-vn", "-c:a", "pcm_s16le",
               "-f", "wav", "-rf64", "auto", decoded]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(decoded)
        raise AudioError(f"cannot decode audio ({_ffmpeg_reason(result.stderr, path)})")
    return Path(decoded)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise AudioError("is a directory, not an audio file")
    if not path.exists():
        raise AudioError("file not found")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")


def _soundfile_info(path: Path):
    """libsndfile's view of a file, or None when it cannot read it. Its mp3 decoder prints notes on damaged data
    straight to the process's stderr: they go nowhere, not across the console."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return None
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass(frozen=True)
class Probe:
    duration: float
    sample_rate: int
    channels: int


def probe_audio(path: Path) -> Probe:
    """Duration, rate and channels without decoding (ffprobe for what libsndfile cannot read). Raises AudioError."""
    path = Path(path)
    _check_file(path)
    info = _soundfile_info(path)
    if info is not None:
        return Probe(info.frames / info.samplerate, int(info.samplerate), int(info.channels))
    return _ffprobe(path)


def open_audio(path: Path, scratch_dir: Path) -> AudioInfo:
    """Probe an audio file; decode it with ffmpeg when libsndfile cannot read it. Raises AudioError."""
    path = Path(path)
    _check_file(path)
    info, readable = _soundfile_info(path), path
    if info is None:
        readable = _decode_with_ffmpeg(path, scratch_dir)
        info = sf.info(str(readable))
    if info.frames <= 0:
        raise AudioError("no audio samples (zero-length audio)")
    return AudioInfo(readable, int(info.samplerate), int(info.channels), int(info.frames), info.subtype)


def open_input(path: Path, scratch_dir: Path) -> AudioInfo:
    """open_audio for a user's recording, checked once before any work (the tool's own outputs need not be):
    AudioError for float audio with NaN or Inf, a note for a WAV shorter than its header says."""
    audio = open_audio(path, scratch_dir)
    if audio.subtype in ("FLOAT", "DOUBLE"):
        _check_finite(audio)
    if audio.path == Path(path):  # read as it is (not an ffmpeg decode): a RIFF header is checked
        audio.notes = _wav_shortfall(Path(path), audio)
    return audio


def _check_finite(audio: AudioInfo) -> None:
    """Float audio can hold NaN or Inf: copied into training data they poison it, and they silently change what
    the VAD finds. Such a file is failed, saying where."""
    start = 0
    for block in iter_blocks(audio, 0, audio.frames, 1 << 20):
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            first = start + int(np.argmax(bad))
            raise AudioError(f"samples that are not numbers (NaN or Inf) from {first / audio.sample_rate:.2f} s: "
                             "damaged float audio")
        start += len(block)


def _wav_shortfall(path: Path, audio: AudioInfo) -> tuple[str, ...]:
    """A note when a WAV's header claims more audio than the file holds (a recording cut short): what is there
    is used, and the report says so."""
    with open(path, "rb") as handle:
        header = handle.read(1 << 16)
        size = handle.seek(0, 2)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return ()
    position = 12
    while position + 8 <= len(header):
        chunk, length = header[position:position + 4], int.from_bytes(header[position + 4:position + 8], "little")
        if chunk == b"data":
            if length in (0, 0xFFFFFFFF):  # written by a stream that could not go back to fill it in
                return ()
            held = size - (position + 8)
            if held >= length or held <= 0:
                return ()
            claimed = audio.duration * length / held
            return (f"the WAV header says {claimed:.2f} s but the file holds "
                    f"{audio.duration:.2f} s (truncated file?): the {audio.duration:.2f} s are processed",)
        position += 8 + length + (length & 1)
    return ()


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


FULL_DISK_BYTES = 1 << 20


def out_of_space(problem: BaseException, folder: Path) -> bool:
    """Whether a write failed for want of space: ENOSPC or EDQUOT anywhere in the exception's chain, or (as
    libsndfile keeps no errno and says only "System error.") a file system with less than 1 MiB left."""
    seen = problem
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(folder).free < FULL_DISK_BYTES
    except OSError:
        return False


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
        try:
            self._file.close()  # on a full disk this fails too: the temp file must still go
        except BaseException as problem:
            self._context.__exit__(type(problem), problem, problem.__traceback__)
            raise
        self._context.__exit__(*exc)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_jsonl(path: Path) -> list:
    """The values of a JSON-lines file ([] when there is none); a last line cut short by a crash is left out."""
    if not Path(path).exists():
        return []
    values = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return values


def write_jsonl(path: Path, values: list) -> None:
    write_text(path, "".join(json.dumps(value, ensure_ascii=False) + "\n" for value in values))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
