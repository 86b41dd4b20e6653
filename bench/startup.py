"""Start-up before and after the shared loader: the same folder through an earlier build and this one.

    .venv/bin/python bench/startup.py [--before 4b04c15] [--files 4] [--seconds 30] [--runs 1]

The earlier build is checked out with `git worktree` into the work folder. Both run the seed's four stages (time
split 60 s, DeepFilterNet3, Silero VAD, offline diarization) with 1 and 2 workers. Per run: wall seconds, seconds
to the first part written (summary.json), CPU seconds of the whole process tree (getrusage of the children, all
of which the tool waits for) and peak PSS of the tree; medians over the runs.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
from pathlib import Path

from common import ROOT, bench_parser, measured_run, tool_command, write_short_files


def checkout(revision: str, where: Path) -> Path:
    if where.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, check=False)
    subprocess.run(["git", "worktree", "add", "--detach", str(where), revision], cwd=ROOT, check=True,
                   capture_output=True)
    return where


def one_run(root: Path, folder: Path, output: Path, workers: int, models_dir: Path) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    command = tool_command(folder, output, "--steps", "split", "denoise", "vad", "diar", "--chunk_duration", "60",
                           "--denoiser", "deepfilternet", "--diarization_model", "offline", "--workers",
                           str(workers), "--models_dir", str(models_dir), build=root)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    measured = measured_run(command)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads((output / "summary.json").read_text())
    return {"wall": measured.seconds, "first": summary["time_to_first_output"],
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "pss": measured.peak_pss_mb, "start": summary.get("worker_start_seconds")}


def main() -> None:
    parser = bench_parser(__doc__, Path("/tmp/startup"))
    parser.add_argument("--before", default="4b04c15", help="git revision of the build to compare with (default: "
                                                            "the last one whose workers loaded their own models)")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=1)
    options = parser.parse_args()
    work, models_dir = options.work, options.models_dir.resolve()
    shutil.rmtree(work / "in", ignore_errors=True)
    folder = write_short_files(work / "in", options.files, options.seconds)
    builds = {options.before: checkout(options.before, work / "before"), "now": ROOT}
    results = {}
    try:
        for _ in range(options.runs):
            for workers in (1, 2):
                for name, root in builds.items():
                    run = one_run(root, folder, work / "out", workers, models_dir)
                    results.setdefault((name, workers), []).append(run)
                    print(f"{name}, {workers} worker(s): {run}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work / "before")], cwd=ROOT, check=False)
    print(f"\n{options.files} files of {options.seconds:g} s, four stages; medians of {options.runs} run(s)")
    print("| build | workers | wall s | first part written, s | CPU s, whole tree | peak PSS MB | worker start-up s |")
    print("|---|---|---|---|---|---|---|")
    for (name, workers), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0] != "now")):
        median = {key: statistics.median(run[key] for run in runs) for key in ("wall", "first", "cpu", "pss")}
        start = runs[-1]["start"]
        print(f"| {name} | {workers} | {median['wall']:.1f} | {median['first']:.1f} | {median['cpu']:.1f} | "
              f"{median['pss']:.0f} | {', '.join(f'{s:.1f}' for s in start) if start else 'not recorded'} |")


if __name__ == "__main__":
    main()
