"""Resuming a run in the same output folder: files already finished with the same settings are not redone.

A file counts as finished when its report.json says done, was made with the same output-affecting settings,
the manifest holds every one of its parts, and every output the manifest names is on disk. Anything less and
the file is redone: its old manifest lines are dropped first, so the manifest never lists a part twice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from audio_io import write_text
from config import RunConfig

# The settings that change what a stage writes; workers, timeout, GPU use and paths do not.
OUTPUT_SETTINGS = ("steps", "split_method", "chunk_duration", "asr_backend", "whisper_model", "language",
                   "denoiser", "demucs_model", "demucs_segment", "vad_threshold", "min_speech_ms",
                   "min_silence_ms", "speech_pad_ms", "diarization_model", "num_speakers", "min_speakers",
                   "max_speakers", "clustering_threshold", "min_cluster_size", "segmentation_step")


def settings_fingerprint(config: RunConfig) -> str:
    values = {name: getattr(config, name) for name in OUTPUT_SETTINGS}
    values["steps"] = list(config.steps)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(output: Path) -> list[dict]:
    """The manifest's records; a last line cut short by a crash is ignored."""
    path = output / "manifest.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def finished_reports(config: RunConfig, jobs) -> dict[int, dict]:
    """job index -> the report of each file that need not be redone."""
    records = read_manifest(config.output)
    fingerprint = settings_fingerprint(config)
    finished = {}
    for job in jobs:
        try:
            report = json.loads((config.output / job.key / "report.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        parts = [r for r in records if r.get("output") == job.key and r.get("source") == str(job.source)]
        if (report.get("status") == "done" and report.get("settings") == fingerprint
                and sorted(r["part"] for r in parts) == list(range(report.get("parts", -1)))
                and all((config.output / path).exists() for r in parts for path in r["outputs"].values())):
            finished[job.index] = report
    return finished


def keep_manifest_lines(output: Path, keys: set[str]) -> None:
    """Rewrite the manifest with the lines of these files only (the others are about to be redone)."""
    path = output / "manifest.jsonl"
    if path.exists():
        kept = [r for r in read_manifest(output) if r.get("output") in keys]
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


def clear_outputs(output: Path, jobs) -> None:
    """--overwrite: forget the earlier run (only the folders of this run's files are removed)."""
    for name in ("manifest.jsonl", "summary.json"):
        (output / name).unlink(missing_ok=True)
    for job in jobs:
        shutil.rmtree(output / job.key, ignore_errors=True)
