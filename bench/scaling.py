"""Parallel scaling: 2 workers against 1 on this machine, for a folder of files and for one long file (whose
parts are shared out over the workers in shards).

    .venv/bin/python bench/scaling.py [--runs 2] [--long_minutes 30] [--models_dir .models]

Throughput ratio = wall time with 1 worker / wall time with 2 workers, medians, for the whole command (start-up
included) and for the batch (summary.json's wall time: worker start-up included, interpreter start not).
Inputs are registered real speech, joined and repeated to the lengths needed. Stages: time split (60 s),
denoise (DeepFilterNet3), vad.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from common import Row, scenario_main, tool_command, write_short_files, write_speech

ARGS = ["--steps", "split", "denoise", "vad", "--denoiser", "deepfilternet", "--chunk_duration", "60"]


def timed_run(folder: Path, output: Path, workers: int, models_dir: Path) -> tuple[float, float]:
    shutil.rmtree(output, ignore_errors=True)
    begun = time.monotonic()
    subprocess.run(tool_command(folder, output, "--workers", str(workers), "--models_dir", str(models_dir), *ARGS),
                   check=True, capture_output=True)
    command = time.monotonic() - begun
    summary = json.loads((output / "summary.json").read_text())
    return command, summary["wall_seconds"]


def measure(work: Path, models_dir: Path, runs: int = 2, long_minutes: float = 30.0) -> list[Row]:
    shutil.rmtree(work, ignore_errors=True)
    files = write_short_files(work / "files", 8, 45.0)
    long = write_speech(work / "long" / "long.flac", long_minutes * 60).parent
    models, rows = models_dir.resolve(), []
    for name, folder, target in (("8 files of 45 s", files, 1.7),
                                 (f"one {long_minutes:g}-minute file, time split", long, 1.6)):
        times = {1: [], 2: []}
        for _ in range(runs):
            for workers in times:  # interleaved: a noisy moment does not favour one side
                times[workers].append(timed_run(folder, work / f"out{workers}", workers, models))
        one = [statistics.median(t[i] for t in times[1]) for i in (0, 1)]
        two = [statistics.median(t[i] for t in times[2]) for i in (0, 1)]
        print(f"{name}: 1 worker {one[0]:.1f} s (batch {one[1]:.1f} s), 2 workers {two[0]:.1f} s "
              f"(batch {two[1]:.1f} s); throughput ratio {one[0] / two[0]:.2f} (batch {one[1] / two[1]:.2f})",
              flush=True)
        ratio = one[0] / two[0]
        rows.append(Row(f"2. parallel scaling, {name}: 1 worker / 2 workers", f">= {target}",
                        f"{one[0]:.1f} / {two[0]:.1f} s (batch {one[1] / two[1]:.2f})", ratio, ratio >= target))
    return rows


def main() -> None:
    scenario_main(__doc__, Path("/tmp/scaling"), measure)


if __name__ == "__main__":
    main()
