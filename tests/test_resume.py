"""Rerunning into the same output folder: finished files are skipped, changed settings redo, kills lose nothing."""

from __future__ import annotations

import pytest
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import ROOT, data, data_glob, leftovers, read_rttm, run_cli

sys.path.insert(0, str(ROOT / "bench"))
from kill_resume import finished_outputs, mismatches, redone, run  # noqa: E402

CLIPS = data_glob("librivox/*.flac")
SAMPLE = data("pyannote_sample/sample.flac")

pytestmark = pytest.mark.e2e  # every test here starts the tool as a process


def lines(output: Path) -> list[str]:
    return (output / "manifest.jsonl").read_text().splitlines()


def test_rerun_skips_finished_files_and_redoes_on_changed_settings(tmp_path, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    for clip in CLIPS[:3]:
        shutil.copy(clip, folder)
    output = folder / "results"  # inside the input folder: its wav files must not become inputs
    args = ["--input", folder, "--output", output, "--steps", "split", "vad", "--chunk_duration", "2",
            "--workers", "1"]
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir)}
    assert run_cli(*args, **env).returncode == 0
    first = lines(output)
    reports = {p: p.stat().st_mtime_ns for p in output.rglob("report.json")}
    again = run_cli(*args, **env)
    assert again.returncode == 0 and "already done with the same settings are skipped" in again.stderr
    assert lines(output) == first
    assert {p: p.stat().st_mtime_ns for p in output.rglob("report.json")} == reports
    assert json.loads((output / "summary.json").read_text())["files_skipped"] == 3
    changed = run_cli(*args, "--vad_threshold", "0.6", **env)
    assert changed.returncode == 0 and len(lines(output)) == len(first)
    assert json.loads((output / "summary.json").read_text())["files_skipped"] == 0
    assert run_cli(*args, "--vad_threshold", "0.6", "--overwrite", **env).returncode == 0
    assert json.loads((output / "summary.json").read_text())["files_skipped"] == 0
    assert len(lines(output)) == len(first)
    shutil.copy(CLIPS[3], folder / CLIPS[0].name)  # same name, another recording: redone
    assert run_cli(*args, "--vad_threshold", "0.6", **env).returncode == 0
    assert json.loads((output / "summary.json").read_text())["files_skipped"] == 2


def test_killed_run_resumes_to_the_same_outputs(tmp_path, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    for clip in CLIPS:
        shutil.copy(clip, folder)
    args = ["--steps", "split", "vad", "--chunk_duration", "2", "--workers", "1"]
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir)}
    reference = tmp_path / "reference"
    assert run_cli("--input", folder, "--output", reference, *args, **env).returncode == 0

    output = tmp_path / "out"
    command = [sys.executable, str(ROOT / "audio_processing.py"), "--input", str(folder), "--output", str(output),
               *args]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(output.glob("*/report.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole tree: main process and workers
    process.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in output.glob("*/report.json")}
    assert done_before and len(done_before) < len(CLIPS)

    result = run_cli("--input", folder, "--output", output, *args, **env)
    assert result.returncode == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["files_skipped"] >= len(done_before) - 1  # a report written as the kill came may be partial
    for name, mtime in done_before.items():  # finished files were not redone
        if (output / name / "report.json").stat().st_mtime_ns != mtime:
            assert summary["files_skipped"] == len(done_before) - 1
    for kind in ("parts", "speech"):
        produced = sorted(p.relative_to(output) for p in output.glob(f"*/{kind}/*"))
        assert produced == sorted(p.relative_to(reference) for p in reference.glob(f"*/{kind}/*"))
        assert all((output / p).read_bytes() == (reference / p).read_bytes() for p in produced)
    records = [json.loads(line) for line in lines(output)]
    assert len(records) == len({(r["output"], r["part"]) for r in records}) == len(lines(reference))
    assert not leftovers(output)


@pytest.mark.parametrize("stop, to_group, code", [
    (signal.SIGINT, True, 130),  # a terminal's Ctrl-C: the whole foreground group
    (signal.SIGTERM, False, 143),  # docker stop, systemd: the main process
    (signal.SIGTERM, True, 143),  # Slurm: every process of the job
])
def test_ctrl_c_and_sigterm_stop_cleanly_and_say_what_finished(tmp_path, models_dir, stop, to_group, code):
    folder = tmp_path / "in"
    folder.mkdir()
    import soundfile as sf

    audio, rate = sf.read(CLIPS[0], dtype="int16")
    for index in range(10):  # 35 s each: enough work left after the second file that the run cannot end first
        sf.write(folder / f"clip{index}.flac", np.tile(audio, 5), rate)
    output = tmp_path / "out"
    command = [sys.executable, str(ROOT / "audio_processing.py"), "--input", str(folder), "--output", str(output),
               "--steps", "split", "vad", "--chunk_duration", "1", "--workers", "1"]
    # A shell starts background jobs with SIGINT ignored, and Python keeps it so (as it should, for nohup and &):
    # when the suite runs in the background (CI), the tool must still get the Ctrl-C a terminal would send it.
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "AUDIO_PROCESSING_MODELS": str(models_dir)},
                               start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list(output.glob("*/report.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the main process has taken in the first file's result
    os.killpg(process.pid, stop) if to_group else os.kill(process.pid, stop)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stdout + stderr
    assert "interrupted" in stderr and "Traceback" not in stderr and "leaked" not in stderr
    summary = json.loads((output / "summary.json").read_text())
    assert summary["interrupted"] and 1 <= summary["files_processed"] < 10
    assert "PERFORMANCE STATISTICS" in stdout
    assert not leftovers(output)
    assert not [p for p in psutil_children(process.pid)]


def psutil_children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_killed_in_the_middle_of_a_file_keeps_its_finished_parts(tmp_path, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, folder)
    shutil.copy(data("falcon/test.flac"), folder)
    args = ["--steps", "split", "vad", "diar", "--diarization_model", "offline", "--chunk_duration", "5",
            "--workers", "1"]
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir)}
    reference = tmp_path / "reference"
    run(folder, reference, args, env)
    output = tmp_path / "out"

    def some_parts_of_the_first_file_done(out: Path) -> bool:
        return (out / "manifest.jsonl").exists() and len(lines(out)) >= 3

    assert run(folder, output, args, env, kill_when=some_parts_of_the_first_file_done)
    finished = finished_outputs(output)
    assert len(finished) >= 3 and not list(output.glob("*/report.json"))  # killed inside the first file
    run(folder, output, args, env)
    assert redone(finished) == 0
    assert mismatches(output, reference) == []  # audio, speech segments, RTTMs, manifest: as if never killed
    reports = [json.loads(p.read_text()) for p in output.glob("*/report.json")]
    assert sum(r["parts_reused"] for r in reports) == len(finished)


def test_a_changed_option_redoes_only_the_stages_it_affects(tmp_path, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, folder)
    args = ["--input", folder, "--steps", "split", "denoise", "vad", "diar", "--denoiser", "deepfilternet",
            "--diarization_model", "offline", "--chunk_duration", "10", "--workers", "1"]
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir)}
    output = tmp_path / "out"

    def inodes(kind: str) -> list[int]:
        return [(output / r["outputs"][kind]).stat().st_ino for r in map(json.loads, lines(output))]

    assert run_cli(*args, "--output", output, **env).returncode == 0
    kinds = ("split", "denoise", "speech", "speaker_embeddings")
    before = {kind: inodes(kind) for kind in kinds}

    assert run_cli(*args, "--output", output, "--vad_threshold", "0.7", **env).returncode == 0
    after = {kind: inodes(kind) for kind in kinds}
    assert [kind for kind in kinds if after[kind] != before[kind]] == ["speech"]
    fresh = tmp_path / "fresh"
    assert run_cli(*args, "--output", fresh, "--vad_threshold", "0.7", **env).returncode == 0
    assert mismatches(output, fresh) == []

    # a speaker-count or clustering option reclusters the stored analyses: no part is analysed again
    speakers = ["--vad_threshold", "0.7", "--num_speakers", "3"]
    assert run_cli(*args, "--output", output, *speakers, **env).returncode == 0
    again = {kind: inodes(kind) for kind in kinds}
    assert [kind for kind in kinds if again[kind] != after[kind]] == []
    assert len({speaker for _, _, speaker in read_rttm(output / "sample" / "sample.rttm")}) == 3
    assert run_cli(*args, "--output", fresh, *speakers, **env).returncode == 0
    assert mismatches(output, fresh) == []
    assert run_cli(*args, "--output", output, *speakers, "--segmentation_step", "0.5", **env).returncode == 0
    assert [kind for kind in kinds if inodes(kind) != again[kind]] == ["speaker_embeddings"]

    assert run_cli(*args, "--output", output, "--chunk_duration", "7", **env).returncode == 0
    records = [json.loads(line) for line in lines(output)]
    assert len(records) == 5 and sorted(r["part"] for r in records) == list(range(5))
    for kind in ("parts", "denoised", "speech", "diarization"):  # nothing left of the 10-second parts
        named = {output / r["outputs"][k] for r in records for k in r["outputs"]}
        assert {p for p in (output / "sample" / kind).iterdir()} <= named


def test_workers_do_not_outlive_a_killed_main_process(tmp_path, models_dir):
    import psutil

    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(4):
        shutil.copy(CLIPS[0], folder / f"clip{index}.flac")
    output = tmp_path / "out"
    command = [sys.executable, str(ROOT / "audio_processing.py"), "--input", str(folder), "--output", str(output),
               "--steps", "split", "vad", "--chunk_duration", "1", "--workers", "2"]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "AUDIO_PROCESSING_MODELS": str(models_dir)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (output / "manifest.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers
    process.kill()  # the main process only, as the OOM killer would
    process.wait()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive
