"""Local process pool against Ray on this machine: same folder, same settings, wall time of the whole command
(start-up included) and of the files' processing, and whether the outputs are identical.

    .venv/bin/python bench/backends.py [--runs 3] [--workers 2] [--models_dir DIR]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from common import bench_parser, tool_command
from kill_resume import INPUTS, mismatches, prepare_inputs

ARGS = ["--steps", "split", "denoise", "vad", "diar", "--denoiser", "deepfilternet", "--diarization_model",
        "offline", "--chunk_duration", "10"]


def run(folder: Path, output: Path, backend: str, workers: int, models_dir: Path) -> tuple[float, dict]:
    shutil.rmtree(output, ignore_errors=True)
    begun = time.monotonic()
    subprocess.run(tool_command(folder, output, "--backend", backend, "--workers", str(workers), "--models_dir",
                                str(models_dir), *ARGS), check=True, capture_output=True)
    return time.monotonic() - begun, json.loads((output / "summary.json").read_text())


def main() -> None:
    parser = bench_parser(__doc__, Path("/tmp/backends"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    folder = prepare_inputs(options.work)
    audio = None
    times: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    for _ in range(options.runs):
        for backend in times:  # interleaved, so a noisy moment does not favour one backend
            wall, summary = run(folder, options.work / backend, backend, options.workers, options.models_dir.resolve())
            times[backend].append((wall, summary["wall_seconds"]))
            audio = summary["audio_hours"] * 3600
    print(f"{len(INPUTS)} files, {audio:.1f} s of audio, {options.workers} workers, {options.runs} runs each")
    for backend, runs in times.items():
        command = statistics.median(w for w, _ in runs)
        batch = statistics.median(b for _, b in runs)
        print(f"{backend}: command {command:.1f} s (median), batch {batch:.1f} s, real-time factor "
              f"{batch / audio:.3f}")
    ratio = statistics.median(w for w, _ in times["ray"]) / statistics.median(w for w, _ in times["local"])
    print(f"ray / local, whole command: {ratio:.2f}")
    print(f"outputs identical: {mismatches(options.work / 'ray', options.work / 'local') == []}")


if __name__ == "__main__":
    main()
