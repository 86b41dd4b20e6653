"""Fault matrix: every fault case of issue 17 run against the real tool (real processes, real workers, real
speech, `--steps split vad`), one table row per case.

    .venv/bin/python bench/fault_matrix.py [--only SUBSTRING] [--jobs 2] [--work /tmp/fault_matrix] [--keep]

Each case gets a folder of its own under --work (removed at the end unless --keep): its inputs in `in/`, its
results in `results/`, and files the user owns that the tool must never touch; the tool runs with that folder as
its working folder (so `--output ""` would show). The name, option and bad-audio cases run --jobs at a time; the
run cases (two runs, kills, signals, full disk, environment, umask) run alone, one after the other. Columns:

- handled cleanly: the exit status is the one the README promises (0 ok, 1 some file failed or is incomplete,
  2 usage error or refused run, 130 Ctrl-C, 143 SIGTERM); no "Traceback" (nor a leaked-semaphore warning) in
  stdout or stderr; each bad file (or bad option) named on exactly one console line, with the expected reason
  (a substring); no temp file left (`audio_io.is_temp_name` on every name under --output) and the scratch
  folder (`layout.scratch_root(output)`) empty or absent. For usage errors, also: --output not created.
- batch finished: every good input of the case is done: summary.json's `files_processed` plus `files_skipped`
  (done by an earlier run with the same settings) equals the number of good inputs, after every run of the case
  (the run that was let finish, for cases that stop a run; the full-disk case cannot finish). n-a for usage
  errors and refused runs.
- data lost: a file the user owns changed or vanished (a sentinel beside --output in its parent folder, one in
  the input folder, one in each per-file results folder an earlier run wrote, and the inputs themselves), or
  anything was written outside --output (the case folder is snapshot before and after), or an output a previous
  finished run wrote was deleted or changed when it should have been kept (a --vad_threshold rerun keeps the
  split parts; every output the manifest lists exists), or two inputs share one results folder, or the
  manifest lists a part twice.

Cases that run a batch run it twice: as given, then with `--vad_threshold 0.6`, which redoes the VAD of every
file and so runs the clean-up of its earlier outputs. The script exits 0 only when every case is handled
cleanly and no data is lost. About 5 minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
import soundfile as sf

from common import SAMPLE_RATE, bench_parser, data, tool_command  # first: it puts the project on sys.path

from audio_io import is_temp_name  # noqa: E402
from kill_resume import mismatches  # noqa: E402
from layout import MANIFEST, SUMMARY, scratch_root  # noqa: E402

SPEECH = data("librivox/sense_and_sensibility_01_austen_64kb-0880.flac")  # 3 s, 16 kHz
ARGS = ["--steps", "split", "vad", "--chunk_duration", "1", "--workers", "1"]
RERUN = ["--vad_threshold", "0.6"]  # redoes every file's VAD: its clean-up of the earlier outputs runs
NOISE = ("Traceback", "leaked semaphore")
MINE = "mine.txt"  # the user's own files: beside --output, in the input folder, in per-file results folders
CANARY = "hf_secret_canary_123"
GOOD = "plain.flac"  # the well-behaved companion of the odd inputs
NOT_UTF8 = b"caf\xe9.flac"


class Failed(Exception):
    """The case could not go on (the tool hung, a run did not start): not handled cleanly."""


# ---- inputs ----------------------------------------------------------------------------------------------------

def speech(seconds: float = 3.0) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(SPEECH, dtype="int16")
    return np.tile(audio, -(-int(seconds * rate) // len(audio)))[: int(seconds * rate)], rate


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def write_audio(path: Path) -> None:
    """Real speech in the format the name's suffix says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".flac":
        shutil.copy(SPEECH, path)
    elif path.suffix == ".wav":
        sf.write(path, *speech(), subtype="PCM_16")
    else:
        ffmpeg("-i", str(SPEECH), str(path))


def short_wav(path: Path) -> None:
    """A WAV whose header claims 3 s while it holds 1 s."""
    audio, rate = speech()
    sf.write(path, audio, rate, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: 44 + 2 * rate])


def nan_wav(path: Path) -> None:
    audio, rate = sf.read(SPEECH, dtype="float32")
    audio[rate] = np.nan
    sf.write(path, audio, rate, subtype="FLOAT")


def write_clips(folder: Path, count: int, seconds: float, rate: int = SAMPLE_RATE, suffix: str = ".flac") -> None:
    """count files of real speech (16-bit; at another rate, the speech's samples played faster), each shifted."""
    audio, _ = speech(seconds * rate / SAMPLE_RATE)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        sf.write(folder / f"clip{index}{suffix}", np.roll(audio, index * 997), rate, subtype="PCM_16")


MAKERS: dict[str, Callable[[Path], None]] = {
    "audio": write_audio,
    "empty": lambda p: p.write_bytes(b""),
    "zero length": lambda p: sf.write(p, np.zeros((0, 1), dtype=np.int16), 16000, subtype="PCM_16"),
    "text": lambda p: p.write_text("hello, not audio\n"),
    "truncated": lambda p: p.write_bytes(SPEECH.read_bytes()[:5000]),
    "random": lambda p: p.write_bytes(np.random.default_rng(len(p.name)).bytes(20000)),
    "video only": lambda p: ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=5", str(p)),
    "nan": nan_wav,
    "short wav": short_wav,
    "folder": lambda p: p.mkdir(),
    "loop": lambda p: p.symlink_to(".", target_is_directory=True),
    "dead link": lambda p: p.symlink_to("missing.flac"),
}
NOT_INPUTS = {"folder", "loop"}  # no file to process: neither good nor bad


# ---- snapshots and runs ----------------------------------------------------------------------------------------

def snapshot(folder: Path, skip: set[Path]) -> dict[bytes, str]:
    """Every name under folder (bytes: names need not be UTF-8) -> what it is; folders in skip left out."""
    found, skipped = {}, {os.fsencode(path) for path in skip}
    for top, dirs, files in os.walk(os.fsencode(folder)):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in skipped]
        for name in dirs + files:
            path = os.path.join(top, name)
            if os.path.islink(path):
                found[path] = "link " + os.fsdecode(os.readlink(path))
            elif os.path.isdir(path):
                found[path] = "folder"
            else:
                with open(path, "rb") as handle:
                    found[path] = hashlib.sha1(handle.read()).hexdigest()
    return found


def changes(before: dict[bytes, str], after: dict[bytes, str], root: Path) -> list[str]:
    def name(path: bytes) -> str:
        return os.fsdecode(os.path.relpath(path, os.fsencode(root))).encode("utf-8", "backslashreplace").decode()

    return ([f"{name(p)} vanished" for p in before.keys() - after.keys()]
            + [f"{name(p)} changed" for p in before.keys() & after.keys() if before[p] != after[p]]
            + [f"{name(p)} written" for p in after.keys() - before.keys()])


@dataclass
class Run:
    code: int
    console: str  # stdout and stderr
    pid: int
    stragglers: int  # processes of its group still alive 15 s after it ended (workers that outlived it)


@dataclass
class Case:
    """One case's folder, its user-owned files and what was found wrong."""
    name: str
    dir: Path
    models_dir: Path
    input: Path | None = None  # default: its own in/
    unclean: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    finished: bool | None = None
    notes: list[str] = field(default_factory=list)
    before: dict[bytes, str] | None = None  # the snapshot taken once the inputs and the user's files are there

    def __post_init__(self):
        self.input = self.input or self.dir / "in"
        self.output = self.dir / "results"
        self.input.mkdir(parents=True, exist_ok=True)

    def protect(self) -> None:
        """The user's own files beside --output and in the input folder; then the snapshot to compare with."""
        (self.output.parent / MINE).write_text("the user's, beside the results\n")
        (self.input / MINE).write_text("the user's, among the recordings\n")
        (self.dir / "other").mkdir(exist_ok=True)
        (self.dir / "other" / "part_0000.wav").write_bytes(b"the user's, in another folder")
        self.before = self.take_snapshot()

    def take_snapshot(self) -> dict[bytes, str]:
        shots = snapshot(self.dir, {self.output})
        if not self.input.is_relative_to(self.dir):  # shared inputs
            shots.update(snapshot(self.input, {self.output}))
        return shots

    def command(self, *args: str, output: Path | None = None) -> list[str]:
        return tool_command(self.input, output or self.output, *ARGS, *args)

    def start(self, *args: str, output: Path | None = None, env: dict | None = None, umask: int | None = None,
              ctrl_c: bool = False) -> subprocess.Popen:
        """The tool in a session (process group) of its own, the case folder as its working folder. ctrl_c: SIGINT
        restored to its default (a shell starts background jobs with it ignored, and Python keeps it so), and
        umask: both set in the child before it starts, which only the cases that run alone ask for (a preexec_fn
        is not safe beside other threads)."""
        def child() -> None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if umask is not None:
                os.umask(umask)

        environment = {**os.environ, "AUDIO_PROCESSING_MODELS": str(self.models_dir), **(env or {})}
        return subprocess.Popen(self.command(*args, output=output), cwd=self.dir, env=environment,
                                start_new_session=True, preexec_fn=child if ctrl_c or umask is not None else None,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="backslashreplace")

    def run(self, *args: str, **options) -> Run:
        return finish(self.start(*args, **options))

    def check_run(self, run: Run, code: int, bad: dict[str, str] | None = None, good: int | None = None) -> None:
        """The exit status, the console (bad: the text naming each bad thing -> its reason), temp files and
        scratch, the summary's count of good files done, and the manifest."""
        output = self.output
        if run.code != code:
            self.unclean.append(f"exit {run.code}, expected {code}: {last_line(run.console)}")
        if run.stragglers:
            self.unclean.append(f"{run.stragglers} process(es) outlived the run")
        for noise in NOISE:
            if noise in run.console:
                self.unclean.append(f"{noise!r} on the console")
        lines = run.console.splitlines()
        for name, reason in (bad or {}).items():
            named = [line for line in lines if name in line]
            if len(named) != 1 or reason not in named[0]:
                self.unclean.append(f"{name}: {len(named)} console lines, expected one with {reason!r}: "
                                    f"{named[:2]}")
        left = leftovers(output)
        if left:
            self.unclean.append(f"left behind: {left[:3]}")
        if good is not None:
            done = files_done(output)
            self.finished = self.finished is not False and done == good
            if done != good:
                self.notes.append("no summary.json" if done is None else f"{done} of {good} good files done")
        self.check_manifest(output)

    def check_manifest(self, output: Path) -> None:
        if not (output / MANIFEST).exists():
            return
        records = [json.loads(line) for line in (output / MANIFEST).read_text().splitlines() if line.strip()]
        twice = [key for key, n in Counter((r["output"], r["part"]) for r in records).items() if n > 1]
        if twice:
            self.lost.append(f"manifest lists {len(twice)} part(s) twice, e.g. {twice[0]}")
        sources = {}
        for record in records:
            sources.setdefault(record["output"], set()).add(record["source"])
        shared = [key for key, names in sources.items() if len(names) > 1]
        if shared:
            self.lost.append(f"inputs share results folder {shared[0]!r}: {sorted(sources[shared[0]])}")
        for record in records:
            for path in record["outputs"].values():
                where = (output / path).resolve()
                if not where.is_relative_to(output.resolve()):
                    self.lost.append(f"manifest output outside --output: {path}")
                elif not where.is_file():
                    self.lost.append(f"manifest output missing: {path}")

    def close(self) -> None:
        if self.before is not None:
            self.lost += [f"outside --output: {change}" for change in changes(self.before, self.take_snapshot(),
                                                                               self.dir)]


def finish(process: subprocess.Popen, timeout: float = 300) -> Run:
    """Waits for the run's end, then for every process of its group (it was started in a session of its own)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise Failed(f"still running after {timeout:.0f} s") from None
    _, alive = psutil.wait_procs(group(process.pid), timeout=15)
    for straggler in alive:
        straggler.kill()
    return Run(process.returncode, out + err, process.pid, len(alive))


def group(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                members.append(process)
        except (OSError, psutil.Error):
            pass
    return members


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else "(no output)"


def leftovers(output: Path) -> list[str]:
    if not output.is_dir():
        return []
    scratch = scratch_root(output)
    return [str(p.relative_to(output)) for p in output.rglob("*") if is_temp_name(p.name)] + (
        [str(p.relative_to(output)) for p in scratch.iterdir()] if scratch.is_dir() else [])


def files_done(output: Path) -> int | None:
    try:
        summary = json.loads((output / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary["files_processed"] + summary["files_skipped"]


def wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise Failed(f"waited {timeout:.0f} s in vain")
        time.sleep(0.02)


def reports(output: Path) -> int:
    return len(list(output.glob("*/report.json")))


def split_outputs(output: Path) -> dict[str, bytes]:
    if not (output / MANIFEST).exists():
        return {}
    return {r["outputs"]["split"]: (output / r["outputs"]["split"]).read_bytes()
            for r in map(json.loads, (output / MANIFEST).read_text().splitlines()) if "split" in r["outputs"]}


# ---- the cases -------------------------------------------------------------------------------------------------

def batch(case: Case, inputs: dict[str | bytes, str], bad: dict[str, str] | None = None, args: tuple = (),
          check: Callable[[Case], None] | None = None) -> None:
    """inputs (name -> MAKERS key) beside a plain good file, run twice (the second with RERUN); bad names the
    bad files' console names and reasons; every other audio input must finish."""
    inputs = {GOOD: "audio", **inputs}
    for name, kind in inputs.items():
        path = Path(os.fsdecode(os.fsencode(case.input) + b"/" + name)) if isinstance(name, bytes) \
            else case.input / name
        path.parent.mkdir(parents=True, exist_ok=True)
        MAKERS[kind](path)
    bad = bad or {}
    good = sum(1 for kind in inputs.values() if kind not in NOT_INPUTS) - len(bad)
    case.protect()
    code = 1 if bad else 0
    case.check_run(case.run(*args), code, bad, good)
    kept, planted = split_outputs(case.output), []
    for folder in {report.parent for report in case.output.rglob("report.json")}:
        (folder / "speech").mkdir(exist_ok=True)
        for mine in (folder / MINE, folder / "speech" / MINE):
            mine.write_text("the user's, in a results folder\n")
            planted.append(mine)
    case.check_run(case.run(*args, *RERUN), code, bad, good)
    for mine in planted:
        if not mine.is_file():
            case.lost.append(f"{mine.relative_to(case.output)} deleted by the rerun")
    changed = [path for path, audio in kept.items() if split_outputs(case.output).get(path) != audio]
    if changed:
        case.lost.append(f"split outputs the rerun should keep changed or gone: {changed[:2]}")
    for report in case.output.rglob("report.json"):
        status = json.loads(report.read_text())["status"]
        if status != "done":
            case.notes.append(f"{report.parent.relative_to(case.output)}: {status}")
    if check:
        check(case)


def note_in_report(key: str, text: str) -> Callable[[Case], None]:
    def check(case: Case) -> None:
        notes = json.loads((case.output / key / "report.json").read_text()).get("notes", [])
        if not any(text in note for note in notes):
            case.unclean.append(f"{key}: no note with {text!r} in report.json ({notes})")
    return check


def usage_error(case: Case, args: list[str], message: str, make: Callable[[Case], None] | None = None) -> None:
    """A bad option: exit 2 naming it on one line, nothing written anywhere (the cwd is the case folder)."""
    write_audio(case.input / "speech.wav")
    if make:
        make(case)
    case.protect()
    run = case.run(*args)
    case.check_run(run, 2, {message: message})
    if case.output.exists():
        case.unclean.append(f"--output created: {sorted(p.name for p in case.output.iterdir())}")


def latin1_config(case: Case) -> None:
    (case.dir / "latin1.toml").write_bytes('output = "r\xe9sultats"\n'.encode("latin-1"))


def short_batch(case: Case, count: int = 3) -> int:
    for index in range(count):
        write_audio(case.input / f"clip{index}.flac")
    case.protect()
    return count


def two_runs_together(case: Case) -> None:
    good = short_batch(case)
    first, second = case.start(), case.start()
    runs = sorted([finish(first), finish(second)], key=lambda run: run.code)
    refused_by = {first.pid: second.pid, second.pid: first.pid}[runs[1].pid]
    case.check_run(runs[0], 0, good=good)
    case.check_run(runs[1], 2, {"in use by another run": f"in use by another run (pid {refused_by})"})


@dataclass
class LongInputs:
    """Inputs that take a while (for stopping a run part-way), and one uninterrupted run of them."""
    folder: Path
    reference: Path
    count: int = 6


@cache
def long_inputs(work: Path, models_dir: Path) -> LongInputs:
    folder, reference = work / "long" / "in", work / "long" / "reference"
    write_clips(folder, LongInputs.count, 15)
    run = Case("reference", work / "long", models_dir, input=folder).run(output=reference)
    if run.code != 0:
        raise Failed(f"the uninterrupted run failed: {last_line(run.console)}")
    return LongInputs(folder, reference)


def long_case(case: Case) -> LongInputs:
    """The case works on the shared long inputs (its own sentinel in their folder)."""
    long = long_inputs(case.dir.parent, case.models_dir)
    case.input = long.folder
    case.protect()
    return long


def second_run_midway(case: Case) -> None:
    long = long_case(case)
    first = case.start()
    wait_for(lambda: reports(case.output) >= 1)
    second = finish(case.start())
    first_run = finish(first)  # then the checks: the first run's scratch is in use until it ends
    case.check_run(second, 2, {"in use by another run": f"in use by another run (pid {first.pid})"})
    case.check_run(first_run, 0, good=long.count)
    case.notes.append("second run refused while the first ran")


def resumed_like_reference(case: Case, long: LongInputs) -> None:
    """A run to the end after the stop: exit 0, outputs as an uninterrupted run's."""
    case.check_run(case.run(), 0, good=long.count)
    problems = mismatches(case.output, long.reference)
    if problems:
        case.lost.append(f"resumed outputs differ from an uninterrupted run's: {problems[:3]}")


def kill_main(case: Case) -> None:
    long = long_case(case)
    process = case.start()
    wait_for(lambda: reports(case.output) >= 1)
    os.kill(process.pid, signal.SIGKILL)  # the main process only, as the OOM killer would
    if finish(process).stragglers:
        case.unclean.append("workers outlived the killed main process")
    case.notes.append(f"killed after {reports(case.output)} file(s); rerun")
    resumed_like_reference(case, long)


def stopped(case: Case, stop: signal.Signals, to_group: bool, code: int) -> None:
    long = long_case(case)
    process = case.start(ctrl_c=True)
    wait_for(lambda: reports(case.output) >= 2)
    time.sleep(0.3)
    os.killpg(process.pid, stop) if to_group else os.kill(process.pid, stop)
    run = finish(process, timeout=60)
    case.check_run(run, code)  # (--quiet: the console has no "interrupted" line, only errors)
    summary = json.loads((case.output / SUMMARY).read_text()) if (case.output / SUMMARY).exists() else {}
    if summary.get("interrupted_by") != stop.name:
        case.unclean.append(f"summary.json says interrupted by {summary.get('interrupted_by')}, not {stop.name}")
    case.notes.append(f"{summary.get('files_processed')} file(s) before the stop; rerun")
    resumed_like_reference(case, long)


def full_disk(case: Case) -> None:
    disk = case.dir / "small_disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        case.notes.append("skipped: cannot mount a tmpfs here (needs root)")
        return
    try:
        case.output = disk / "results"
        write_clips(case.input, 6, 30, rate=32000, suffix=".wav")  # 1.9 MB of parts each: the 2nd fills it
        case.protect()
        run = case.run("--steps", "split", "--chunk_duration", "10")
        full = f"no space left on device ({case.output}): no new file is started"
        case.check_run(run, 1, {full: full}, good=6)
        if run.console.count("no space left") > 3:
            case.unclean.append(f"{run.console.count('no space left')} 'no space left' lines: one per file?")
        if "System error" in run.console:
            case.unclean.append("'System error' on the console")
        case.notes.append("as expected: the disk fills up during the second file")
        case.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    case.before = None  # compared above, while the disk was there


def secret_in_environment(case: Case) -> None:
    good = short_batch(case, 2)
    run = case.run(env={"HF_TOKEN": CANARY})
    case.check_run(run, 0, good=good)
    leaks = [str(p.relative_to(case.output)) for p in case.output.rglob("*")
             if p.is_file() and CANARY.encode() in p.read_bytes()]
    if leaks or CANARY in run.console:
        case.lost.append(f"the token leaked into {leaks or 'the console'}")


def group_umask(case: Case) -> None:
    good = short_batch(case, 2)
    case.check_run(case.run(umask=0o002), 0, good=good)
    wrong = [f"{p.relative_to(case.output)} {p.stat().st_mode & 0o777:o}" for p in case.output.rglob("*")
             if p.stat().st_mode & 0o777 != (0o775 if p.is_dir() else 0o664)]
    if wrong:
        case.unclean.append(f"not group-readable under umask 002: {wrong[:3]}")


REASON_UNREADABLE = "not an audio file, or damaged beyond reading"
LONG_NAME = "x" * 246 + ".wav"  # a legal 250-byte name
DIAR = ("--steps", "split", "vad", "diar", "--diarization_model", "offline")

# Cases that can run side by side (--jobs at a time), then the cases that run alone (timing, signals, umask).
CASES: list[tuple[str, Callable[[Case], None]]] = [
    # 1. names
    ("name ...flac", partial(batch, inputs={"...flac": "audio"})),
    ("name ..flac", partial(batch, inputs={"..flac": "audio"})),
    ("names a.wav a.flac a.wav.mp3", partial(batch, inputs={"a.wav": "audio", "a.flac": "audio",
                                                            "a.wav.mp3": "audio"})),
    ("name summary.json.flac", partial(batch, inputs={"summary.json.flac": "audio"})),
    ("name audio_processing.log.flac", partial(batch, inputs={"audio_processing.log.flac": "audio"})),
    ("name manifest.jsonl.flac", partial(batch, inputs={"manifest.jsonl.flac": "audio"})),
    ("name report.html.flac", partial(batch, inputs={"report.html.flac": "audio"})),
    ("name config.toml.flac", partial(batch, inputs={"config.toml.flac": "audio"})),
    ("names b.flac b/speech.flac", partial(batch, inputs={"b.flac": "audio", "b/speech.flac": "audio"})),
    ("name .scratch-0-x.flac", partial(batch, inputs={".scratch-0-x.flac": "audio"})),
    ("name .audio_processing.flac", partial(batch, inputs={".audio_processing.flac": "audio"})),
    ("name not UTF-8 (2 workers)", partial(batch, inputs={NOT_UTF8: "audio"}, args=("--workers", "2"),
                                           bad={"caf\\xe9.flac": "file name is not valid UTF-8"})),
    ("name of 250 bytes (with diar)", partial(batch, inputs={LONG_NAME: "audio"}, args=DIAR)),
    ("names spaces quotes unicode", partial(batch, inputs={"two  spaces .flac": "audio",
                                                           "quote's \"name\" é ü 日本.flac": "audio"})),
    ("names starting with -", partial(batch, inputs={"-rf.flac": "audio", "--output.wav": "audio"})),
    # 2. bad audio among good files
    ("empty file", partial(batch, inputs={"empty.wav": "empty"}, bad={"empty.wav": "empty file (0 bytes)"})),
    ("zero-length WAV", partial(batch, inputs={"zero.wav": "zero length"},
                                bad={"zero.wav": "no audio samples (zero-length audio)"})),
    ("text file named .wav", partial(batch, inputs={"text.wav": "text"}, bad={"text.wav": REASON_UNREADABLE})),
    ("truncated flac", partial(batch, inputs={"truncated.flac": "truncated"},
                               bad={"truncated.flac": REASON_UNREADABLE})),
    ("random bytes .mp3", partial(batch, inputs={"random.mp3": "random"}, bad={"random.mp3": REASON_UNREADABLE})),
    ("random bytes .flac", partial(batch, inputs={"random.flac": "random"},
                                   bad={"random.flac": REASON_UNREADABLE})),
    ("video without audio", partial(batch, inputs={"video.mp4": "video only"},
                                    bad={"video.mp4": "no audio stream (the file has video only)"})),
    ("NaN sample in float WAV", partial(batch, inputs={"nan.wav": "nan"},
                                        bad={"nan.wav": "samples that are not numbers (NaN or Inf) from 1.00 s"})),
    ("WAV shorter than its header", partial(batch, inputs={"short.wav": "short wav"}, check=note_in_report(
        "short", "the WAV header says 3.00 s but the file holds 1.00 s (truncated file?)"))),
    ("folder named x.mp3", partial(batch, inputs={"x.mp3": "folder"})),
    ("symlink loop", partial(batch, inputs={"loop": "loop"})),
    ("broken symlink", partial(batch, inputs={"dead.flac": "dead link"}, bad={"dead.flac": "file not found"})),
    # 3. options: usage errors, nothing written
    ("--chunk_duration nan", partial(usage_error, args=["--chunk_duration", "nan"],
                                     message="must be a finite number, got nan")),
    ("--chunk_duration inf", partial(usage_error, args=["--chunk_duration", "inf"],
                                     message="must be a finite number, got inf")),
    ("--timeout nan", partial(usage_error, args=["--timeout", "nan"], message="must be a finite number, got nan")),
    ("--gpu_memory_limit nan", partial(usage_error, args=["--gpu_memory_limit", "nan"],
                                       message="must be a finite number, got nan")),
    ("--output ''", partial(usage_error, args=["--output", ""], message="--output: must not be empty")),
    ("--output = --input", partial(usage_error, args=["--output", "in"], message="is the --input folder")),
    ("--output an existing file", partial(usage_error, args=["--output", "in/speech.wav"],
                                          message="is a file, not a folder")),
    ("--speech_pad_ms -30", partial(usage_error, args=["--speech_pad_ms", "-30"],
                                    message="must be at least 0, got -30")),
    ("--config not UTF-8", partial(usage_error, args=["--config", "latin1.toml"], message="not UTF-8 text",
                                   make=latin1_config)),
    ("unknown step", partial(usage_error, args=["--steps", "split", "sharpen"], message="invalid choice: 'sharpen'")),
]
RUN_CASES: list[tuple[str, Callable[[Case], None]]] = [
    # 4. runs
    ("two runs started together", two_runs_together),
    ("second run while the first works", second_run_midway),
    ("kill -9 of the main process, rerun", kill_main),
    ("SIGTERM to the main process", partial(stopped, stop=signal.SIGTERM, to_group=False, code=143)),
    ("SIGTERM to the process group", partial(stopped, stop=signal.SIGTERM, to_group=True, code=143)),
    ("Ctrl-C (SIGINT to the group)", partial(stopped, stop=signal.SIGINT, to_group=True, code=130)),
    ("full disk (3 MiB tmpfs)", full_disk),
    ("HF_TOKEN in the environment", secret_in_environment),
    ("umask 002", group_umask),
]


# ---- the table -------------------------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    clean: bool
    finished: bool | None
    lost: bool
    detail: str
    seconds: float


def run_case(name: str, function: Callable[[Case], None], work: Path, models_dir: Path) -> Row:
    folder = work / "".join(c if c.isalnum() else "_" for c in name).strip("_")
    case, begun = Case(name, folder, models_dir), time.monotonic()
    try:
        function(case)
    except Failed as error:
        case.unclean.append(str(error))
    except Exception as error:  # the script's own failure is a case not handled: show it, go on
        case.unclean.append(f"{type(error).__name__}: {error}")
    case.close()
    detail = "; ".join(dict.fromkeys(case.lost + case.unclean + case.notes)) or "ok"
    return Row(name, not case.unclean, case.finished, bool(case.lost), detail, time.monotonic() - begun)


def yes_no(value: bool | None) -> str:
    return "n-a" if value is None else "yes" if value else "no"


def main() -> int:
    parser = bench_parser(__doc__, Path("/tmp/fault_matrix"))
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--jobs", type=int, default=2, help="cases run side by side (the timed ones run alone)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (to look into a case)")
    options = parser.parse_args()
    work, models_dir = options.work.resolve(), options.models_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    begun, rows = time.monotonic(), []
    width = max(len(name) for name, _ in CASES + RUN_CASES)
    print(f"| {'case':<{width}} | clean | finished | lost |    s | detail |")
    print(f"|{'-' * (width + 2)}|-------|----------|------|------|--------|")

    def show(row: Row) -> None:
        rows.append(row)
        print(f"| {row.name:<{width}} | {yes_no(row.clean):<5} | {yes_no(row.finished):<8} | "
              f"{yes_no(row.lost):<4} | {row.seconds:4.0f} | {row.detail[:400]} |", flush=True)

    with ThreadPoolExecutor(options.jobs) as pool:
        for row in pool.map(lambda case: run_case(*case, work, models_dir),
                            [case for case in CASES if options.only in case[0]]):
            show(row)
    for name, function in RUN_CASES:
        if options.only in name:
            show(run_case(name, function, work, models_dir))
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wall time {time.monotonic() - begun:.0f} s")
    print(f"cases {len(rows)} / handled cleanly {sum(r.clean for r in rows)} / batch finished "
          f"{sum(r.finished is True for r in rows)} / data lost {sum(r.lost for r in rows)}")
    return 0 if all(r.clean and not r.lost for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
