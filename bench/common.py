"""What the benchmarks share: inputs made of the registered real speech, the tool's command line, and a runner
that times a command and samples the memory of its whole process tree."""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loaders.model_store import default_models_dir  # noqa: E402
from sample_data import glob as data_glob, resolve as data  # noqa: E402  (recordings by name)
SPEECH = [data("pyannote_sample/sample.flac"), data("falcon/test.flac"), data("conv3/conv3.flac"),
          *data_glob("librivox/*.flac")]
SAMPLE_RATE = 16000


def bench_parser(doc: str, work: Path) -> argparse.ArgumentParser:
    """The options the benchmarks that run the command line share."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--models_dir", type=Path, default=default_models_dir())
    parser.add_argument("--work", type=Path, default=work, help="scratch folder (emptied first)")
    return parser


def scenario_main(doc: str, work: Path, measure) -> None:
    """A scenario script's command line: measure()'s keyword defaults become flags; prints its table rows."""
    parser = bench_parser(doc, work)
    defaults = {name: parameter.default for name, parameter in inspect.signature(measure).parameters.items()
                if parameter.default is not parameter.empty}
    for name, default in defaults.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    options = parser.parse_args()
    for row in measure(options.work, options.models_dir, **{name: getattr(options, name) for name in defaults}):
        print(row)


def speech_16k() -> np.ndarray:
    """About four minutes of real speech (int16, 16 kHz mono): every recording in SPEECH, joined."""
    pieces = []
    for path in SPEECH:
        audio, rate = sf.read(path, dtype="int16", always_2d=True)
        assert rate == SAMPLE_RATE, path
        pieces.append(audio[:, 0])
    return np.concatenate(pieces)


def write_speech(path: Path, seconds: float, offset: float = 0.0) -> Path:
    """`seconds` of real speech starting `offset` seconds into the joined recordings, repeated as needed."""
    speech = speech_16k()
    start, frames = int(offset * SAMPLE_RATE) % len(speech), int(seconds * SAMPLE_RATE)
    repeats = -(-(start + frames) // len(speech))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.tile(speech, repeats)[start:start + frames], SAMPLE_RATE)
    return path


def write_short_files(folder: Path, count: int, seconds: float) -> Path:
    """`count` files of `seconds` each, from different places in the speech."""
    rng = np.random.default_rng(0)
    total = len(speech_16k()) / SAMPLE_RATE
    for index in range(count):
        write_speech(folder / f"file{index}.flac", seconds, float(rng.uniform(0, total - seconds)))
    return folder


def tool_command(source: Path, output: Path, *args: str, build: Path = ROOT) -> list[str]:
    """The tool's command line; `build` is the checkout to run (another build, for a side-by-side bench)."""
    return [sys.executable, str(build / "audio_processing.py"), "--input", str(source), "--output", str(output),
            "--quiet", *args]


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float  # the whole process tree, sampled; shared pages counted once per process
    peak_pss_mb: float  # the same, shared pages divided among the processes that share them


def tree_memory(root: psutil.Process) -> tuple[float, float]:
    rss = pss = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss, pss = rss + info.rss, pss + info.pss
    return rss / 2 ** 20, pss / 2 ** 20


def measured_run(command: list[str], env: dict | None = None, interval: float = 0.1) -> Measured:
    """Run a command to its end: wall seconds and the peak memory of its process tree."""
    begun = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    root, peak_rss, peak_pss = psutil.Process(process.pid), 0.0, 0.0
    while process.poll() is None:
        rss, pss = tree_memory(root)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(interval)
    seconds = time.monotonic() - begun
    errors = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... ended with status {process.returncode}: {errors[-2000:]}")
    return Measured(seconds, peak_rss, peak_pss)


def medians(runs: list[Measured]) -> Measured:
    return Measured(*(statistics.median(getattr(run, field) for run in runs)
                      for field in ("seconds", "peak_rss_mb", "peak_pss_mb")))


@dataclass
class Row:
    """One line of the performance table."""
    scenario: str
    target: str
    measured: str
    ratio: float
    met: bool

    def __str__(self) -> str:
        return f"| {self.scenario} | {self.target} | {self.measured} | {self.ratio:.2f} | " \
               f"{'yes' if self.met else 'no'} |"
