"""Memory flat in file length: the peak memory of the whole process tree processing a 3-hour file against a
10-minute one (time split, denoise, vad).

    .venv/bin/python bench/memory_flat.py [--runs 1] [--long_hours 3] [--models_dir .models]

Inputs are registered real speech, repeated. The denoiser is DeepFilterNet3: Demucs (RTF 0.5 here) would
take about 1.5 hours for the long file on this machine, and both stream in blocks the same way. Default workers
(2): the long file is shared out in shards; the short one is 2 parts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common import Measured, Row, measured_run, medians, scenario_main, tool_command, write_speech

ARGS = ["--steps", "split", "denoise", "vad", "--denoiser", "deepfilternet"]


def measure(work: Path, models_dir: Path, runs: int = 1, long_hours: float = 3.0) -> list[Row]:
    shutil.rmtree(work, ignore_errors=True)
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir.resolve())}
    peaks: dict[str, Measured] = {}
    for name, seconds in (("short", 600.0), ("long", long_hours * 3600)):
        source = write_speech(work / name / "speech.flac", seconds)
        results = []
        for run in range(runs):
            output = work / f"{name}_out{run}"
            results.append(measured_run(tool_command(source, output, *ARGS, "--overwrite"), env))
        peaks[name] = medians(results)
        print(f"{seconds / 60:.0f} min: {peaks[name].seconds:.1f} s, peak RSS {peaks[name].peak_rss_mb:.0f} MB, "
              f"peak PSS {peaks[name].peak_pss_mb:.0f} MB", flush=True)
    ratio = peaks["long"].peak_pss_mb / peaks["short"].peak_pss_mb
    return [Row(f"4. peak memory, {long_hours:g} h file / 10 min file (split, denoise, vad)", "<= 1.20",
                f"{peaks['long'].peak_pss_mb:.0f} / {peaks['short'].peak_pss_mb:.0f} MB PSS "
                f"(RSS {peaks['long'].peak_rss_mb:.0f} / {peaks['short'].peak_rss_mb:.0f})", ratio, ratio <= 1.2)]


def main() -> None:
    scenario_main(__doc__, Path("/tmp/memory_flat"), measure)


if __name__ == "__main__":
    main()
