"""Parallel scaling: 2 workers against 1 on this machine, for a folder of files and for one long file (whose
parts are shared out over the workers in shards).

    .venv/bin/python bench/scaling.py [--runs 2] [--long_minutes 30] [--models_dir .models]

Throughput ratio = wall time with 1 worker / wall time with 2 workers, medians, for the whole command (start-up
included) and for the batch (summary.json's wall time: worker start-up included, interpreter start not).
Inputs are real speech from tests/data, joined and repeated to the lengths needed. Stages: time split (60 s),
denoise (DeepFilterNet3), vad.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from kill_resume import bench_parser  # noqa: E402

DATA = ROOT / "tests" / "data"
SPEECH = [DATA / "pyannote_sample" / "sample.flac", DATA / "falcon" / "test.flac", DATA / "conv3" / "conv3.flac",
          *sorted((DATA / "librivox").glob("*.flac"))]
ARGS = ["--steps", "split", "denoise", "vad", "--denoiser", "deepfilternet", "--chunk_duration", "60", "--quiet"]


def speech_16k() -> np.ndarray:
    pieces = []
    for path in SPEECH:
        audio, rate = sf.read(path, dtype="int16", always_2d=True)
        assert rate == 16000, path
        pieces.append(audio[:, 0])
    return np.concatenate(pieces)


def write_inputs(work: Path, long_minutes: float) -> tuple[Path, Path]:
    speech = speech_16k()  # ~4 min of real speech
    files = work / "files"
    files.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(8):  # 8 files of 45 s from different places in the speech
        start = int(rng.integers(0, len(speech) - 45 * 16000))
        sf.write(files / f"file{index}.flac", speech[start:start + 45 * 16000], 16000)
    long = work / "long"
    long.mkdir()
    repeats = int(np.ceil(long_minutes * 60 * 16000 / len(speech)))
    sf.write(long / "long.flac", np.tile(speech, repeats)[:int(long_minutes * 60 * 16000)], 16000)
    return files, long


def timed_run(folder: Path, output: Path, workers: int, models_dir: Path) -> tuple[float, float]:
    subprocess.run(["rm", "-rf", str(output)], check=True)
    begun = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "audio_processing.py"), "--input", str(folder), "--output",
                    str(output), "--workers", str(workers), "--models_dir", str(models_dir), *ARGS],
                   cwd=ROOT, check=True, capture_output=True)
    command = time.monotonic() - begun
    summary = json.loads((output / "summary.json").read_text())
    return command, summary["wall_seconds"]


def main() -> None:
    parser = bench_parser(__doc__, Path("/tmp/scaling"))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--long_minutes", type=float, default=30.0)
    options = parser.parse_args()
    subprocess.run(["rm", "-rf", str(options.work)], check=True)
    files, long = write_inputs(options.work, options.long_minutes)
    models = options.models_dir.resolve()
    for name, folder in (("8 files of 45 s", files), (f"one {options.long_minutes:g}-minute file", long)):
        times = {1: [], 2: []}
        for _ in range(options.runs):
            for workers in times:  # interleaved: a noisy moment does not favour one side
                times[workers].append(timed_run(folder, options.work / f"out{workers}", workers, models))
        one = [statistics.median(t[i] for t in times[1]) for i in (0, 1)]
        two = [statistics.median(t[i] for t in times[2]) for i in (0, 1)]
        print(f"{name}: 1 worker {one[0]:.1f} s (batch {one[1]:.1f} s), 2 workers {two[0]:.1f} s "
              f"(batch {two[1]:.1f} s); throughput ratio {one[0] / two[0]:.2f} (batch {one[1] / two[1]:.2f})")


if __name__ == "__main__":
    main()
