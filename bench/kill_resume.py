"""Kill and resume: a batch killed with SIGKILL (main process and workers together) at random moments and resumed
each time ends with the same outputs as an uninterrupted run, and no part finished before a kill is done again.

    .venv/bin/python bench/kill_resume.py [--seeds 5] [--kills 3] [--models_dir DIR]

Per seed: --kills runs, each killed at a random moment (after a random number of further parts, 0 included,
plus a random 0-1.5 s), then a last run to the end. A part counts as redone when an output it had when a kill
came is written again later (a new inode); the per-part RTTM is not counted, as the file's speaker linking
rewrites it on purpose at the end. Outputs are compared byte for byte with the uninterrupted run; manifests as
sets of lines.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from common import ROOT, bench_parser, data, tool_command  # first: it puts the project on sys.path

from batch.resume import read_manifest  # noqa: E402
from layout import FILE_REPORTS, MANIFEST, RUN_NAMES  # noqa: E402

INPUTS = [data("pyannote_sample/sample.flac"), data("falcon/test.flac"), data("conv3/conv3.flac")]
ARGS = ["--steps", "split", "denoise", "vad", "diar", "--denoiser", "deepfilternet", "--diarization_model",
        "offline", "--chunk_duration", "10", "--workers", "2"]
REWRITTEN_AT_THE_END = {"diarization"}  # manifest output kinds the file's last step writes again
NOT_COMPARED = {*FILE_REPORTS, *RUN_NAMES}  # times, pids and pictures differ; the manifest is compared by record


def run(folder: Path, output: Path, args: list[str], env: dict, kill_when=None) -> bool:
    """One run; killed (whole process group, SIGKILL) once kill_when(output) holds. True when it was killed
    before it ended."""
    process = subprocess.Popen(tool_command(folder, output, *args), cwd=ROOT, env={**os.environ, **env},
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None:
        if kill_when and kill_when(output):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    if process.returncode not in (0, 1):
        raise RuntimeError(f"run ended with exit status {process.returncode}")
    return False


def finished_outputs(output: Path) -> dict[tuple[str, int], dict[Path, int]]:
    """(file, part) -> {output path: inode} for every part the manifest lists as finished."""
    finished = {}
    for record in read_manifest(output):
        paths = [output / path for kind, path in record["outputs"].items() if kind not in REWRITTEN_AT_THE_END]
        finished[(record["output"], record["part"])] = {p: p.stat().st_ino for p in paths if p.exists()}
    return finished


def redone(before: dict[tuple[str, int], dict[Path, int]]) -> int:
    """Parts finished at a kill whose outputs were written again since."""
    return sum(1 for inodes in before.values()
               if any(not path.exists() or path.stat().st_ino != inode for path, inode in inodes.items()))


def mismatches(output: Path, reference: Path) -> list[str]:
    """Outputs that differ from the uninterrupted run's, missing ones and extra ones included."""
    def files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*")
                if p.is_file() and p.name not in NOT_COMPARED and p.relative_to(root).parts[0] not in NOT_COMPARED}

    ours, theirs = files(output), files(reference)
    problems = [f"missing {p}" for p in sorted(theirs - ours)] + [f"extra {p}" for p in sorted(ours - theirs)]
    problems += [f"differs {p}" for p in sorted(ours & theirs)
                 if (output / p).read_bytes() != (reference / p).read_bytes()]
    lines = {json.dumps(r, sort_keys=True) for r in read_manifest(output)}
    expected = {json.dumps(r, sort_keys=True) for r in read_manifest(reference)}
    if lines != expected or len(lines) != len((output / MANIFEST).read_text().splitlines()):
        problems.append("manifest differs (or lists a part twice)")
    return problems


class KillMoment:
    """A random moment while the run works: once a random number of further parts is done (0 included: during
    start-up or the first part), plus a random 0-1.5 s so that kills also land in the middle of a part."""

    def __init__(self, rng: random.Random, done: int, total: int):
        self.target = done + rng.randint(0, max(0, total - done - 1))
        self.delay, self.reached = rng.uniform(0.0, 1.5), None

    def __call__(self, output: Path) -> bool:
        if self.reached is None and len(read_manifest(output)) >= self.target:
            self.reached = time.monotonic()
        return self.reached is not None and time.monotonic() - self.reached >= self.delay


def kill_and_resume(folder: Path, output: Path, reference: Path, args: list[str], env: dict, seed: int,
                    kills: int, total_parts: int) -> dict:
    rng = random.Random(seed)
    killed, finished_at_kills = 0, []
    first_seen: dict[tuple[str, int], dict[Path, int]] = {}  # part -> its outputs when a kill first found it done
    for _ in range(kills):
        if not run(folder, output, args, env, kill_when=KillMoment(rng, len(read_manifest(output)), total_parts)):
            break  # the run ended before its kill: nothing left to interrupt
        killed += 1
        finished = finished_outputs(output)
        finished_at_kills.append(len(finished))
        first_seen = {**finished, **first_seen}
    run(folder, output, args, env)
    return {"seed": seed, "kills": killed, "parts_finished_at_kills": finished_at_kills,
            "parts_redone": redone(first_seen), "mismatches": mismatches(output, reference)}


def prepare_inputs(work: Path) -> Path:
    """A fresh work folder with the input recordings in work/in."""
    shutil.rmtree(work, ignore_errors=True)
    folder = work / "in"
    folder.mkdir(parents=True)
    for source in INPUTS:
        shutil.copy(source, folder / f"{source.parent.name}_{source.name}")
    return folder


def main() -> None:
    parser = bench_parser(__doc__, Path("/tmp/kill_resume"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--kills", type=int, default=3)
    options = parser.parse_args()
    env = {"AUDIO_PROCESSING_MODELS": str(options.models_dir.resolve())}
    folder = prepare_inputs(options.work)
    reference = options.work / "reference"
    begun = time.monotonic()
    run(folder, reference, ARGS, env)
    longest = time.monotonic() - begun
    print(f"uninterrupted run: {longest:.1f} s, {len(read_manifest(reference))} parts")
    totals = {"runs": 0, "kills": 0, "parts_redone": 0, "mismatches": 0}
    for seed in range(options.seeds):
        output = options.work / f"seed{seed}"
        parts = len(read_manifest(reference))
        result = kill_and_resume(folder, output, reference, ARGS, env, seed, options.kills, parts)
        print(json.dumps(result))
        totals["runs"] += result["kills"] + 1
        totals["kills"] += result["kills"]
        totals["parts_redone"] += result["parts_redone"]
        totals["mismatches"] += len(result["mismatches"])
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
