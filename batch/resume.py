"""Resuming a run in the same output folder: what was finished with the same settings is not done again.

Every manifest line records, per stage, a fingerprint of the options that change the stage's output, chained
through the stages whose audio it reads, and of the input file itself. On a rerun:
- a file whose report.json says done with the same fingerprints (and the same options for the stages' whole-file
  work, `Stage.finish_settings`), all its parts in the manifest and every output on disk is skipped whole;
- in any other file, each part keeps the outputs of the stages whose fingerprint still matches and whose files
  are on disk, and only the other stages run on it (a changed VAD threshold reruns VAD, not split or denoise;
  a changed speaker count keeps every part and only reclusters in diar's finish);
- everything else in the file's folder is removed before it is redone, and the manifest keeps only the lines of
  parts that need nothing redone, so it never lists a part twice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from audio_io import is_temp_name, read_jsonl, write_jsonl
from config import RunConfig
from layout import FILE_REPORTS, MANIFEST, REPORT_JSON, SUMMARY, remove, whole_file_name
from stages import STAGE_ORDER, STAGES

SIGNATURE_BYTES = 1 << 20  # the input's size and its first and last MiB tell a changed recording from a copy


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_signature(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            head = handle.read(SIGNATURE_BYTES)
            handle.seek(max(0, size - SIGNATURE_BYTES))
            tail = handle.read(SIGNATURE_BYTES)
    except OSError as error:
        return f"unreadable: {error.strerror}"
    return f"{size}:{hashlib.sha256(head + tail).hexdigest()[:16]}"


def stage_fingerprints(config: RunConfig, source: Path) -> dict[str, str]:
    """stage name -> fingerprint of its settings and of everything upstream that shaped the audio it reads."""
    audio = _digest({"source": source_signature(source)})
    prints = {}
    for name in STAGE_ORDER:
        if name in config.steps:
            stage = STAGES[name]
            prints[name] = _digest({"stage": name, "settings": stage.settings(config), "audio": audio})
            if stage.changes_audio:
                audio = prints[name]
    return prints


def finish_fingerprint(config: RunConfig) -> str:
    """The options that shape only the whole-file outputs (a new clustering threshold reclusters, no more)."""
    return _digest({name: STAGES[name].finish_settings(config) for name in STAGE_ORDER if name in config.steps})


def settings_fingerprint(job) -> str:
    """One value for the whole file, kept in its report.json: its parts' fingerprints and its finish settings."""
    return _digest({**job.fingerprints, "finish": job.finish_settings})


def read_manifest(output: Path) -> list[dict]:
    """The manifest's records, one per part (the last, should a part be listed twice); a last line cut short by a
    crash is ignored."""
    records = {(record.get("output"), record.get("part")): record
               for record in read_jsonl(output / MANIFEST) if isinstance(record, dict)}
    return list(records.values())


def _records_of(records: list[dict], job) -> list[dict]:
    return [r for r in records if r.get("output") == job.key and r.get("source") == str(job.source)]


def finished_reports(output: Path, jobs, records: list[dict]) -> dict[int, dict]:
    """job index -> the report of each file that need not be redone at all."""
    finished = {}
    for job in jobs:
        try:
            report = json.loads((output / job.key / REPORT_JSON).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        parts = _records_of(records, job)
        if (report.get("status") == "done" and report.get("settings") == settings_fingerprint(job)
                and sorted(r["part"] for r in parts) == list(range(report.get("parts", -1)))
                and all((output / path).exists() for r in parts for path in r["outputs"].values())):
            finished[job.index] = report
    return finished


def reusable_parts(output: Path, job, records: list[dict]) -> dict[int, dict]:
    """part index -> its earlier record, with "reusable": the stages whose output that part keeps."""
    earlier = {}
    for record in _records_of(records, job):
        if "start_frame" not in record or record.get("part") in earlier:
            continue
        reusable = []
        for name, fingerprint in job.fingerprints.items():
            stage = STAGES[name]
            outputs = record["outputs"]
            if (record.get("stages", {}).get(name) == fingerprint
                    and all(kind in outputs for kind in stage.output_kinds())
                    and all((output / outputs[kind]).exists() for kind in stage.outputs if kind in outputs)):
                reusable.append(name)
        if reusable and ("split" not in job.fingerprints or "split" in reusable):
            earlier[record["part"]] = {**record, "reusable": reusable}
    return earlier


def fully_reused(job, record: dict) -> bool:
    return set(record["reusable"]) == set(job.fingerprints)


def kept_outputs(earlier: dict[int, dict]) -> set[str]:
    """The output paths (relative to the output folder) that the redo of a file keeps."""
    kept = set()
    for record in earlier.values():
        for name in record["reusable"]:
            stage = STAGES[name]
            kept.update(record["outputs"][kind] for kind in stage.outputs if kind in record["outputs"])
    return kept


def own_files(output: Path, job) -> list[Path]:
    """The files a file's run writes, known by the names declared for them: in its folder its reports, the stages'
    whole-file and per-part outputs and temp files of a write cut short; and what is in its own subfolder of a
    shared output folder (utterances/<key>/). Nothing else there is touched."""
    folder = output / job.key
    whole = set(FILE_REPORTS) | {whole_file_name(job.file_id, pattern)
                                 for stage in STAGES.values() for pattern in stage.file_outputs}
    part_folders = {out.folder for stage in STAGES.values() for out in stage.outputs.values()}
    found = [path for path in _files_in(folder) if path.name in whole or is_temp_name(path.name)]
    for name in part_folders:
        found += [path for path in _files_in(folder / name)
                  if path.name.startswith("part_") or is_temp_name(path.name)]
    for name in {name for stage in STAGES.values() for name in stage.shared_outputs}:  # e.g. utterances/<key>/
        found += [path for path in (output / name / job.key).rglob("*") if path.is_file()]
    return found


def _files_in(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []


def prepare_redo(output: Path, job) -> None:
    """Clear a file's folder of what an earlier run left there, except the outputs its parts keep."""
    kept = kept_outputs(job.earlier)
    for path in own_files(output, job):
        if path.relative_to(output).as_posix() not in kept:
            remove(output, path)


def rewrite_manifest(output: Path, keep) -> None:
    """Rewrite the manifest with only the records `keep(record)` accepts (the others are about to be redone)."""
    path = output / MANIFEST
    if path.exists():
        kept = [r for r in read_manifest(output) if keep(r)]
        write_jsonl(path, kept)


def clear_outputs(output: Path, jobs) -> None:
    """--overwrite: forget the earlier run (only the outputs of this run's files are removed)."""
    for name in (MANIFEST, SUMMARY):
        remove(output, output / name)
    for job in jobs:
        for path in own_files(output, job):
            remove(output, path)
