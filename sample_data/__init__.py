"""Test and demo recordings by name: where each one comes from, and one resolver that finds or fetches it.

No third-party recording or annotation is kept in this repository. `registry.toml` beside this file names each
one, with its licence, its upstream file at a fixed commit and the SHA-256 of the file as used. `resolve(name)`
returns a local path, looking in this order:

1. `$AUDIO_PROCESSING_DATA` (a folder laid out like the names), when set;
2. `../shared/data` beside the checkout (every development and CI machine of the project has it);
3. the user cache (`$XDG_CACHE_HOME/audio_processing/data`), filled by `fetch()`: the upstream file is downloaded
   with pooch and checked against its SHA-256, then turned into the file as used (for instance WAV to FLAC).

A copy found in 1 or 2 must match the registry's SHA-256 byte for byte. A file made in the cache must match it
too, or, for audio re-encoded here, its decoded samples must (FLAC bytes differ between encoder versions). Two
derivations cannot be bit-exact anywhere (a cut of a lossy Ogg file, and the espeak-ng conversation whose
voices change between espeak-ng releases): for those the downloaded upstream file is what the checksum proves.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from audio_io import file_sha256

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = Path(__file__).with_name("registry.toml")
CONVERSATION_SCRIPT = Path(__file__).with_name("make_conv.sh")
DATA_ENV = "AUDIO_PROCESSING_DATA"
SHARED_DATA = ROOT.parent / "shared" / "data"
HOW_TO_PROVIDE = (f"set {DATA_ENV} to a folder that holds it, or run `make data` (python -m sample_data fetch) "
                  "on a machine with internet")


class DataError(Exception):
    """A recording that cannot be had, or one that is not what the registry says; the message is one line."""


@dataclass(frozen=True)
class Source:
    """An upstream repository at a fixed commit, and the terms its files come under."""

    key: str
    repository: str
    commit: str
    licence: str
    attribution: str
    base_url: str = ""  # tests serve a source from 127.0.0.1

    def url(self, path: str) -> str:
        base = self.base_url or f"https://raw.githubusercontent.com/{self.repository}/{self.commit}/"
        return base + path


@dataclass(frozen=True)
class Entry:
    """One file as the tests and the demo use it."""

    name: str  # relative path, e.g. "pyannote_sample/sample.flac"
    sha256: str  # of the file as used
    source: Source | None  # None: made by this project (derive = "conversation")
    path: str = ""  # the upstream file inside the source
    derive: str = "copy"  # how the file as used is made from the upstream one (DERIVATIONS)
    upstream_sha256: str = ""  # of the upstream file, when it is not the file as used
    samples_sha256: str = ""  # of the decoded samples, for audio re-encoded here

    @property
    def upstream_checksum(self) -> str:
        return self.upstream_sha256 or self.sha256


@dataclass(frozen=True)
class Registry:
    entries: dict[str, Entry]

    @classmethod
    def load(cls, path: Path = REGISTRY) -> Registry:
        document = tomllib.loads(Path(path).read_text())
        sources = {key: Source(key=key, **fields) for key, fields in document.get("sources", {}).items()}
        entries = {}
        for name, fields in document["files"].items():
            fields = dict(fields)
            source = sources[fields.pop("source")] if "source" in fields else None
            entries[name] = Entry(name=name, source=source, **fields)
        return cls(entries)

    def entry(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise DataError(f"{name}: not a registered recording (see {REGISTRY.relative_to(ROOT)})") from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(name for name in self.entries if fnmatch.fnmatchcase(name, pattern))


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audio_processing" / "data"


def default_search_paths() -> list[Path]:
    paths = [Path(os.environ[DATA_ENV]).expanduser()] if os.environ.get(DATA_ENV) else []
    return paths + [SHARED_DATA]


def samples_sha256(path: Path) -> str:
    """SHA-256 of the decoded samples (as int32) with the rate and channel count: the same for any encoder."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="int32", always_2d=True)
    return hashlib.sha256(f"{rate} {data.shape[1]}\n".encode() + data.astype("<i4").tobytes()).hexdigest()


class DataStore:
    """Finds registered files in the search paths or the cache, and fetches them into the cache."""

    def __init__(self, registry: Registry | None = None, search_paths: list[Path] | None = None,
                 cache: Path | None = None):
        self.registry = registry or Registry.load()
        self.search_paths = default_search_paths() if search_paths is None else list(search_paths)
        self.cache = cache or default_cache()
        self._verified: dict[Path, tuple[int, int]] = {}
        self._names: dict[Path, str] = {}  # resolved path -> registered name, for companion()

    def resolve(self, name: str) -> Path:
        """A local path holding the registered file `name`; never downloads (see fetch)."""
        entry = self.registry.entry(name)
        problems = []
        for folder in self.search_paths:
            candidate = folder / name
            if candidate.is_file():
                if self._matches(candidate, entry.sha256):
                    self._names[candidate] = name
                    return candidate
                problems.append(f"{candidate} differs from the registry's SHA-256")
        cached = self.cache / name
        if cached.is_file():
            self._names[cached] = name
            return cached  # checked when it was made
        where = ", ".join(str(path) for path in [*self.search_paths, self.cache])
        found = f" ({'; '.join(problems)})" if problems else ""
        raise DataError(f"{name}: not found in {where}{found}; {HOW_TO_PROVIDE}")

    def companion(self, path: Path, suffix: str) -> Path:
        """The registered file beside a resolved one, e.g. its reference: companion(clip, ".rttm")."""
        name = self._names[Path(path)]
        return self.resolve(name[:-len(Path(name).suffix)] + suffix)

    def glob(self, pattern: str) -> list[Path]:
        """Every registered file whose name matches `pattern` (fnmatch), resolved, in name order."""
        names = self.registry.names(pattern)
        if not names:
            raise DataError(f"{pattern}: no registered recording matches (see {REGISTRY.relative_to(ROOT)})")
        return [self.resolve(name) for name in names]

    def fetch(self, name: str) -> Path:
        """The file from the search paths or the cache, else downloaded from upstream and derived into the cache."""
        try:
            return self.resolve(name)
        except DataError:
            pass
        entry = self.registry.entry(name)
        if entry.derive == "conversation":
            self._make_conversation()
        else:
            self._derive(entry, self._download(entry))
        return self.resolve(name)

    def _matches(self, path: Path, sha256: str) -> bool:
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(path) != signature:
            if file_sha256(path) != sha256:
                return False
            self._verified[path] = signature
        return True

    def _download(self, entry: Entry) -> Path:
        """The upstream file in the cache's downloads, checked against its SHA-256 (pooch keeps no bad file)."""
        import pooch

        pooch.get_logger().setLevel("WARNING")  # one line per file is noise in a test run
        url = entry.source.url(entry.path)
        folder = self.cache / ".upstream" / entry.source.key
        try:
            return Path(pooch.retrieve(url, known_hash=f"sha256:{entry.upstream_checksum}", path=folder,
                                       fname=entry.path.replace("/", "__"), progressbar=False))
        except ValueError as error:  # pooch's checksum mismatch
            raise DataError(f"{entry.name}: download from {url} failed its checksum check ({error})") from None
        except Exception as error:  # network errors come in many types; the message is what matters
            raise DataError(f"{entry.name}: could not download {url} ({type(error).__name__}: {error})") from None

    def _derive(self, entry: Entry, upstream: Path) -> None:
        target = self.cache / entry.name
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
        os.close(handle)
        tmp = Path(tmp)
        try:
            DERIVATIONS[entry.derive](upstream, tmp)
            _check_derived(entry, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def _make_conversation(self) -> None:
        """The synthetic 3-voice conversation family (conv3/*), made by make_conv.sh with espeak-ng and sox."""
        missing = [tool for tool in ("espeak-ng", "sox", "soxi") if not shutil.which(tool)]
        if missing:
            raise DataError(f"conv3: making it needs {', '.join(missing)} (apt-get install espeak-ng sox "
                            "libsox-fmt-all); or " + HOW_TO_PROVIDE)
        music = self.fetch("noise/vibe_ace_full.ogg")
        family = self.registry.names("conv3/*")
        with tempfile.TemporaryDirectory(dir=self.cache) as work:
            subprocess.run(["bash", str(CONVERSATION_SCRIPT)], check=True, capture_output=True, cwd=work,
                           env={**os.environ, "OUT": work, "URI": "conv3", "MUSIC": str(music)})
            for name in family:
                made = Path(work) / Path(name).name
                if made.suffix == ".flac":
                    DERIVATIONS["flac"](made.with_suffix(".wav"), made)
                _check_derived(self.registry.entry(name), made)
                (self.cache / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(made, self.cache / name)


# ---- how a file as used is made from its upstream file ----

def _ffmpeg(source: Path, target: Path, *options: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), *options, "-map_metadata", "-1",
                    "-fflags", "+bitexact", "-flags:a", "+bitexact", "-c:a", "flac", "-f", "flac", str(target)],
                   check=True)


def _lab_regions(source: Path, target: Path) -> None:
    """pocketsphinx's .lab (a `speech` onset line, a `silence` offset line) as `start end` lines."""
    onset = offset = None
    for line in source.read_text().splitlines():
        time, _, label = line.split("\t")
        if label == "speech":
            onset = time
        elif label == "silence" and onset is not None:
            offset = time
    target.write_text(f"{onset} {offset}\n")


def _segments_rttm(source: Path, target: Path) -> None:
    """Picovoice falcon's test_data.json diarization segments as RTTM (speaker_tag n -> spkn)."""
    test = json.loads(source.read_text())["tests"]["diarization_tests"][0]
    uri = Path(test["audio_file"]).stem
    target.write_text("".join(
        f"SPEAKER {uri} 1 {segment['start_sec']:.3f} {segment['end_sec'] - segment['start_sec']:.3f} <NA> <NA> "
        f"spk{segment['speaker_tag']} <NA> <NA>\n" for segment in test["segments"]))


DERIVATIONS = {
    "copy": lambda source, target: shutil.copyfile(source, target),
    "flac": lambda source, target: _ffmpeg(source, target, "-sample_fmt", "s16"),  # lossless: same samples
    "lstrip": lambda source, target: target.write_text(source.read_text().lstrip()),
    "lab_regions": _lab_regions,
    "segments_rttm": _segments_rttm,
    # 30 s of music with a steady level (15-45 s), mono, 16 kHz: decoded from lossy Ogg and resampled
    "music_cut": lambda source, target: _ffmpeg(source, target, "-ss", "15", "-t", "30", "-ac", "1", "-ar",
                                                "16000", "-sample_fmt", "s16"),
}
INEXACT = {"music_cut", "conversation"}  # re-made from verified upstream files, but not bit-exact anywhere


def _check_derived(entry: Entry, path: Path) -> None:
    if entry.derive in INEXACT:
        return
    if entry.samples_sha256 and samples_sha256(path) == entry.samples_sha256:
        return
    if file_sha256(path) != entry.sha256:
        raise DataError(f"{entry.name}: the file made from {entry.path} does not match the registry's checksum")


@functools.cache
def default_store() -> DataStore:
    return DataStore()


def resolve(name: str) -> Path:
    """A local path for the registered recording `name` (see the module's docstring for where it looks)."""
    return default_store().resolve(name)


def glob(pattern: str) -> list[Path]:
    return default_store().glob(pattern)


def companion(path: Path, suffix: str) -> Path:
    return default_store().companion(path, suffix)
