"""--backend ray: on a local Ray instance, the same results as the local process pool; failures and a killed Ray
worker handled as the local backend handles them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import ROOT, data, leftovers, run_cli

pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")
sys.path.insert(0, str(ROOT / "bench"))
from kill_resume import mismatches  # noqa: E402

ARGS = ["--steps", "split", "vad", "diar", "--diarization_model", "offline", "--chunk_duration", "10",
        "--workers", "2"]

# every test here starts the tool as a process; one test process runs them all, sharing the local results
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group(name="ray")]


@pytest.fixture(scope="module")
def batch(tmp_path_factory, models_dir):
    """A folder of real recordings and one corrupt file, and the local backend's results for it."""
    root = tmp_path_factory.mktemp("ray")
    folder = root / "in"
    folder.mkdir()
    shutil.copy(data("pyannote_sample/sample.flac"), folder)
    shutil.copy(data("falcon/test.flac"), folder / "falcon.flac")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    local = root / "local"
    result = run_cli("--input", folder, "--output", local, *ARGS, AUDIO_PROCESSING_MODELS=str(models_dir))
    assert result.returncode == 1, result.stderr  # the corrupt file
    return folder, local


def test_ray_backend_gives_the_local_results_even_when_a_worker_is_killed(batch, tmp_path, models_dir):
    """One Ray run (Ray's start-up costs ~10 s here): an actor killed mid-run is restarted and its file retried,
    and the results are the local backend's, byte for byte; the corrupt file is reported as locally."""
    folder, local = batch
    output = tmp_path / "ray"
    command = [sys.executable, str(ROOT / "audio_processing.py"), "--input", str(folder), "--output", str(output),
               *ARGS, "--backend", "ray"]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "AUDIO_PROCESSING_MODELS": str(models_dir)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.monotonic() + 180
    while victim is None and time.monotonic() < deadline and process.poll() is None:
        manifest = output / "manifest.jsonl"
        if manifest.exists() and manifest.read_text().count("\n") >= 1:  # workers are busy with files
            victim = next((p for p in psutil.process_iter(["cmdline"])
                           if "ray::FileWorker.process" in " ".join(p.info["cmdline"] or [])), None)
        time.sleep(0.05)
    assert victim is not None, "no Ray worker was seen at work"
    victim.send_signal(signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr  # only the corrupt file failed: Ray restarted the worker and retried
    log = (output / "audio_processing.log").read_text()
    assert "started again, its worker was restarted" in log
    assert mismatches(output, local) == []  # audio byte for byte, speech segments, RTTMs, manifest lines
    summary = json.loads((output / "summary.json").read_text())
    assert summary["files_processed"] == 2 and summary["files_failed"] == 1
    assert summary["failures"][0]["source"].endswith("broken.wav")
    assert "broken.wav" in stderr and "broken.wav" in log
    assert "[ray-worker-" in log  # the actors' log records came back
    assert not leftovers(output)


def test_without_ray_the_ray_backend_is_a_clear_usage_error(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; sys.path.insert(0, '.'); import audio_processing; "
            f"sys.exit(audio_processing.main(['--input', {str(data('jfk/jfk.flac'))!r}, '--output', "
            f"{str(tmp_path / 'out')!r}, '--backend', 'ray']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "--backend ray needs Ray, which is not installed: pip install -r requirements-ray.txt" in result.stderr
    assert not (tmp_path / "out").exists()
