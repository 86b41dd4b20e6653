"""The parts of one long file shared out over the workers (shards): same results as one worker, resumable."""

from __future__ import annotations

import pytest
import json
import shutil
import sys

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
