"""timeline.png: one picture per file with its waveform, the cut points, the speech found and the speaker turns.

The waveform is an envelope (lowest and highest sample of each pixel column) read block by block, so a
three-hour file is drawn in bounded memory. Everything is on the original file's timeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from audio_io import AudioInfo, as_float, atomic_path, iter_blocks
from layout import TIMELINE
from stages.diarize import read_rttm

COLUMNS = 1200  # waveform resolution: one min/max pair per pixel column
BLOCK_FRAMES = 1 << 18  # frames read at a time (a few MB)
SIZE, DPI = (12, 4), 100
WAVE_AXES = [0.07, 0.42, 0.9, 0.48]  # left, bottom, width, height as figure fractions: fixed, so tests can locate
TURN_AXES = [0.07, 0.1, 0.9, 0.25]  # the waveform and the speaker lanes in pixels
SPEECH_COLOUR = "#7fc97f"
CUT_COLOUR = "#d62728"


def envelope(info: AudioInfo, columns: int = COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest value (mono, float) in each of `columns` equal slices of the file. Blocks have a fixed
    size, not a column's, so memory stays flat however long the file is; a column may span several blocks."""
    per_column = max(1, -(-info.frames // columns))
    count = -(-info.frames // per_column)
    lows, highs = np.full(count, np.inf, np.float32), np.full(count, -np.inf, np.float32)
    start = 0
    for block in iter_blocks(info, 0, info.frames, BLOCK_FRAMES):
        mono = as_float(block).mean(axis=1)
        first = start // per_column  # the column this block starts in; the others start at column boundaries
        bounds = np.concatenate([[0], np.arange((first + 1) * per_column - start, len(mono), per_column)])
        index = np.arange(first, first + len(bounds))
        lows[index] = np.minimum(lows[index], np.minimum.reduceat(mono, bounds))
        highs[index] = np.maximum(highs[index], np.maximum.reduceat(mono, bounds))
        start += len(mono)
    return lows, highs


def write_timeline(ctx) -> Path:
    """Draw the file's timeline.png from what its stages wrote."""
    info = ctx.source_info
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    duration = info.frames / info.sample_rate
    lows, highs = envelope(info)
    times = (np.arange(len(lows)) + 0.5) * (duration / len(lows))
    speech = []
    for part in ctx.parts:
        if "speech_segments" in part.outputs:
            saved = json.loads((ctx.output_root / part.outputs["speech_segments"]).read_text(encoding="utf-8"))
            speech += [(segment["start"], segment["end"]) for segment in saved["segments"]]
    diarization = ctx.stage_info.get("diar", {})
    rttm = diarization.get("rttm")
    turns = read_rttm(ctx.output_root / rttm) if rttm else []

    figure = plt.figure(figsize=SIZE, dpi=DPI)
    wave = figure.add_axes(WAVE_AXES)
    peak = max(float(np.abs(lows).max()), float(np.abs(highs).max()), 1e-6)
    for start, end in speech:
        wave.axvspan(start, end, color=SPEECH_COLOUR, alpha=0.5, linewidth=0)
    wave.fill_between(times, lows / peak, highs / peak, color="#404040", linewidth=0)
    for part in ctx.parts[1:]:
        wave.axvline(part.offset, color=CUT_COLOUR, linestyle="--", linewidth=1)
    wave.set_xlim(0, duration)
    wave.set_ylim(-1.25, 1.25)
    wave.set_yticks([])
    wave.tick_params(labelbottom=False)
    speech_seconds = sum(part.fields.get("speech_duration", 0.0) for part in ctx.parts)
    ratio = f", speech {speech_seconds / duration:.0%}" if "vad" in ctx.stage_info else ""
    speakers = f", {diarization['speakers']} speaker(s)" if "speakers" in diarization else ""
    wave.set_title(f"{ctx.source.name}: {duration:.1f} s, {len(ctx.parts)} part(s){ratio}{speakers}   "
                   "(green: speech, red dashes: cuts)", fontsize=10, loc="left")
    lanes = figure.add_axes(TURN_AXES, sharex=wave)
    labels = sorted({speaker for _, _, speaker in turns})
    colours = plt.get_cmap("tab10")
    for row, label in enumerate(labels):
        spans = [(start, end - start) for start, end, speaker in turns if speaker == label]
        lanes.broken_barh(spans, (row - 0.4, 0.8), color=colours(row % 10))
    lanes.set_yticks(range(len(labels)), labels, fontsize=8)
    lanes.set_ylim(max(len(labels), 1) - 0.4, -0.6)  # SPEAKER_00 on top
    lanes.set_xlabel("seconds")
    if not labels:
        lanes.text(0.5, 0.5, "no diarization", transform=lanes.transAxes, ha="center", va="center", color="grey")
    path = ctx.out_dir / TIMELINE
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
    return path
