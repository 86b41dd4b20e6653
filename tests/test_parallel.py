"""The parts of one long file shared out over the workers (shards): same results as one worker, resumable."""

from __future__ import annotations

import pytest
import json
import os
import shutil
import sys
from pathlib import Path

from conftest import ROOT, data, leftovers

sys.path.insert(0, str(ROOT / "bench"))
from kill_resume import finished_outputs, mismatches, read_manifest, redone, run  # noqa: E402

ARGS = ["--steps", "split", "vad", "diar", "--diarization_model", "offline", "--chunk_duration", "8"]

pytestmark = pytest.mark.e2e  # every test here starts the tool as a process


def test_one_long_file_is_shared_out_and_gives_the_one_worker_result(tmp_path, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(data("conv3/conv3.flac"), folder)  # 63 s: 8 parts of 8 s
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir)}
    alone = tmp_path / "one_worker"
    run(folder, alone, [*ARGS, "--workers", "1"], env)
    shared = tmp_path / "two_workers"

    def some_parts_done(out):
        return len(read_manifest(out)) >= 3

    assert run(folder, shared, [*ARGS, "--workers", "2"], env, kill_when=some_parts_done)  # killed mid-way
    finished = finished_outputs(shared)
    run(folder, shared, [*ARGS, "--workers", "2"], env)  # resumed
    log = (shared / "audio_processing.log").read_text()
    assert "1 long file(s) shared out in 4 shards" in log
    assert "[worker-0] " in log and "[worker-1] " in log and log.count("conv3.flac: parts ") >= 5
    assert redone(finished) == 0
    assert mismatches(shared, alone) == []  # parts, speech, per-part and whole-file RTTMs, manifest lines
    report = json.loads((shared / "conv3" / "report.json").read_text())
    assert report["parts"] == 8 and report["status"] == "done" and report["speakers"] >= 2
    assert (shared / "conv3" / "timeline.png").exists()
    assert not leftovers(shared)


def _memory_mb(pid: int) -> dict[str, float]:
    """The process's memory by kind (Linux's smaps_rollup), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024
    return fields


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's /proc/<pid>/smaps_rollup")
def test_cpu_workers_share_the_models_of_one_loader(tmp_path, models_dir):
    """Workers forked from the loader hold its models in shared pages: each one's private memory is a small part
    of what the loader holds, and so is a replacement's for a worker that was killed (a fork, not a reload)."""
    import time

    import psutil

    from batch.local_pool import WorkerPool
    from config import RunConfig
    from gpu_memory import DevicePlan

    config = RunConfig(input=tmp_path, output=tmp_path, models_dir=models_dir, steps=("vad", "diar"),
                       diarization_model="offline")
    pool = WorkerPool(config, DevicePlan(use_gpu=False), size=2, threads=1)
    try:
        loader = psutil.Process(pool.workers[0].process.pid).ppid()
        assert loader != os.getpid() and psutil.Process(pool.workers[1].process.pid).ppid() == loader
        killed = pool.workers[0]
        killed.process.kill()
        pool.replace(killed)
        assert psutil.Process(pool.workers[0].process.pid).ppid() == loader
        time.sleep(2)  # the workers' own set-up: logging, threads
        held = _memory_mb(loader)["Anonymous"]  # torch, pyannote, the weights: what a worker would load itself
        assert held > 300
        for worker in pool.workers:
            memory = _memory_mb(worker.process.pid)
            assert memory["Private_Dirty"] < 0.2 * held and memory["Shared_Dirty"] > 0.7 * held, memory
    finally:
        pool.close()
    log = (tmp_path / "audio_processing.log").read_text()
    assert log.count("loaded diarization model offline") == 1 and "[loader] " in log
