"""What a run tells its user: manifest lines, per-file reports, and the run's summary and statistics."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from audio_io import write_json, write_text
from layout import REPORT_JSON, REPORT_TXT
from stages import MANIFEST_FIELDS


def manifest_record(job, part, ctx) -> dict:
    record = {"source": str(job.source), "output": job.key, "part": part.index, "offset": round(part.offset, 6),
              "duration": round(part.duration, 6), "sample_rate": part.sample_rate, "channels": part.channels,
              "start_frame": part.start_frame, "frames": part.frames, "status": "done",
              "outputs": dict(part.outputs), "stages": dict(job.fingerprints)}
    record.update({key: part.fields[key] for key in MANIFEST_FIELDS if key in part.fields})
    return record


def append_manifest(path: Path, record: dict) -> None:
    """One line per finished part, flushed to disk at once: the manifest is the record of what is done."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_file_report(ctx, job, status: str, error: str | None, timings: dict, seconds: float, device: str,
                      worker: int, started_at: float, settings: str, parts_reused: int = 0,
                      write: bool = True) -> dict:
    info = ctx.source_info
    duration = info.duration if info else 0.0
    stages = {name: dict(details) for name, details in ctx.stage_info.items()}
    for name, spent in timings.items():
        stages.setdefault(name, {})["seconds"] = round(spent, 3)
    report = {
        "source": str(job.source), "output": job.key, "status": status, "error": error,
        "duration": round(duration, 3), "sample_rate": info.sample_rate if info else None,
        "channels": info.channels if info else None, "parts": len(ctx.parts),
        "parts_reused": parts_reused,
        "speech_duration": round(sum(p.fields.get("speech_duration", 0.0) for p in ctx.parts), 3)
        if any("speech_duration" in p.fields for p in ctx.parts) else None,
        "speakers": stages.get("diar", {}).get("speakers"),
        "stages": stages, "fallbacks": dict(ctx.fallbacks), "skipped": dict(ctx.skipped),
        "notes": list(ctx.notes), "processing_seconds": round(seconds, 3),
        "real_time_factor": round(seconds / duration, 4) if duration else None, "device": device, "worker": worker,
        "started_at": round(started_at, 3), "settings": settings,
    }
    if write and (ctx.out_dir.exists() or status != "failed"):
        try:
            write_json(ctx.out_dir / REPORT_JSON, report)
            write_text(ctx.out_dir / REPORT_TXT, report_text(report))
        except OSError as problem:  # a full disk: the main process still gets the report (and a rerun redoes it)
            ctx.log.error("%s: %s not written: %s", ctx.source, REPORT_JSON, problem.strerror or problem)
    return report


def report_text(report: dict) -> str:
    lines = [f"File: {report['source']}", f"Status: {report['status']}"]
    if report["error"]:
        lines.append(f"Error: {report['error']}")
    if report["duration"]:
        lines.append(f"Duration: {report['duration']:.2f} s, {report['sample_rate']} Hz, "
                     f"{report['channels']} channel(s)")
    lines.append(f"Parts: {report['parts']}")
    if report["speech_duration"] is not None:
        lines.append(f"Speech: {report['speech_duration']:.2f} s")
    if report["speakers"] is not None:
        lines.append(f"Speakers: {report['speakers']}")
    lines.append(f"Processing time: {report['processing_seconds']:.2f} s on {report['device']}"
                 + (f" (real-time factor {report['real_time_factor']:.3f})" if report["real_time_factor"] else ""))
    for name, details in report["stages"].items():
        extras = ", ".join(f"{k}={v}" for k, v in details.items() if k != "seconds")
        lines.append(f"  {name}: {details.get('seconds', 0.0):.2f} s" + (f" ({extras})" if extras else ""))
    for note in report["notes"]:
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


def summarize(reports: list[dict], wall_seconds: float, workers: int, finished_at: float) -> dict:
    """Run statistics. The speed-up compares the files' own processing times with the time from the first
    file's start to the end, so worker start-up (importing torch) does not count against it."""
    done = [r for r in reports if r["status"] == "done"]
    incomplete = [r for r in reports if r["status"] == "incomplete"]  # processed, but a stage did not run
    processed = done + incomplete
    starts = [r["started_at"] for r in reports if r.get("started_at")]
    processing_span = finished_at - min(starts) if starts else wall_seconds
    failed = [r for r in reports if r["status"] == "failed"]
    audio_seconds = sum(r["duration"] for r in processed)
    busy_seconds = sum(r["processing_seconds"] for r in reports)
    stage_seconds: dict[str, float] = {}
    for report in processed:
        for name, details in report["stages"].items():
            stage_seconds[name] = round(stage_seconds.get(name, 0.0) + details.get("seconds", 0.0), 3)
    fallbacks = Counter(f"{stage} -> {used}" for r in reports for stage, used in (r.get("fallbacks") or {}).items())
    return {
        "files_total": len(reports), "files_processed": len(done), "files_failed": len(failed),
        "files_incomplete": len(incomplete), "fallbacks": dict(fallbacks),
        "failures": [{"source": r["source"], "status": r["status"], "error": r["error"]} for r in failed + incomplete],
        "wall_seconds": round(wall_seconds, 3),
        "time_per_file": round(sum(r["processing_seconds"] for r in processed) / len(processed), 3)
        if processed else 0.0,
        "speedup_from_parallelization": round(busy_seconds / processing_span, 2) if processing_span > 0 else 1.0,
        "gpu_used": any(r.get("device", "cpu") != "cpu" for r in reports), "workers": workers,
        "audio_hours": round(audio_seconds / 3600, 4),
        "real_time_factor": round(wall_seconds / audio_seconds, 4) if audio_seconds else None,
        "stage_seconds": stage_seconds,
        "parts": sum(r["parts"] for r in processed),
    }


def statistics(summary: dict) -> list[tuple[str, str]]:
    """The run's statistics as (label, value): the console block and report.html both show these."""
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in summary["stage_seconds"].items()) or "none"
    rtf = summary["real_time_factor"]
    workers = summary["workers"]
    return [
        ("Files processed", f"{summary['files_processed']}"),
        ("Files failed", f"{summary['files_failed']}"),
        *([("Files incomplete", f"{summary['files_incomplete']}")] if summary.get("files_incomplete") else []),
        *([("Fallbacks", ", ".join(f"{what} ({count} file{'s' if count != 1 else ''})"
                                   for what, count in summary["fallbacks"].items()))]
          if summary.get("fallbacks") else []),
        *([("Files skipped (done in an earlier run)", f"{summary['files_skipped']}")]
          if summary.get("files_skipped") else []),
        *([("Parts kept from an earlier run", f"{summary['parts_reused']}")] if summary.get("parts_reused") else []),
        ("Time per file", f"{summary['time_per_file']:.1f} seconds"),
        ("Speedup from parallelization", f"~{summary['speedup_from_parallelization']:.1f}x "
                                         f"({workers} worker{'s' if workers != 1 else ''})"),
        ("GPU used", "Yes" if summary["gpu_used"] else "No"),
        ("Audio processed", f"{summary['audio_hours']:.3f} hours in {summary['parts']} parts"),
        ("Real-time factor", "n/a" if rtf is None else f"{rtf:.3f} (wall time / audio duration)"),
        ("Time per stage", stages),
        *([("Time to first output", f"{summary['time_to_first_output']:.1f} s (start-up included)")]
          if summary.get("time_to_first_output") is not None else []),
        *([("Worker start-up", ", ".join(f"{seconds:.1f} s" for seconds in summary["worker_start_seconds"])
            + " (to its first file: models loaded, or shared on the CPU)")] if summary.get("worker_start_seconds")
          else []),
    ]


def statistics_block(summary: dict) -> str:
    """The seed guide's statistics block, then one line per failed file."""
    lines = ["PERFORMANCE STATISTICS:", *(f"  - {label}: {value}" for label, value in statistics(summary)),
             "  - Logic: Optimized parallel processing with memory management"]
    for failure in summary["failures"]:
        lines.append(f"  ! {failure['source']}: {failure.get('status', 'failed')}: {failure['error']}")
    return "\n".join(lines)
