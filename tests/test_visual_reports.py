"""timeline.png and report.html, as a real run draws them; the page checked as headless Chromium renders it."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from conftest import data, data_glob, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ODD_NAME = 'a "quoted" & <b>é name.flac'


@pytest.fixture(scope="module")
def results(tmp_path_factory, models_dir) -> Path:
    folder = tmp_path_factory.mktemp("visual") / "in"
    folder.mkdir()
    shutil.copy(data("pyannote_sample/sample.flac"), folder)
    shutil.copy(data_glob("librivox/*.flac")[0], folder / ODD_NAME)
    (folder / "broken.wav").write_text("not audio at all")
    output = folder.parent / "out"
    result = run_cli("--input", folder, "--output", output, "--steps", "split", "vad", "diar", "--diarization_model",
                     "offline", "--chunk_duration", "10", "--workers", "1", AUDIO_PROCESSING_MODELS=str(models_dir))
    assert result.returncode == 1, result.stderr  # broken.wav
    return output


@pytest.mark.e2e
@pytest.mark.xdist_group(name="visual_reports")  # shares the one run of the results fixture
def test_timeline_shows_speech_where_the_vad_found_it(results):
    from matplotlib.image import imread

    from reporting.timeline import DPI, SIZE, WAVE_AXES

    assert (results / "a \"quoted\" & <b>é name" / "timeline.png").exists()
    assert not list(results.glob("broken*/timeline.png"))
    image = imread(results / "sample" / "timeline.png")[..., :3]
    assert image.shape[:2] == (SIZE[1] * DPI, SIZE[0] * DPI)
    records = [json.loads(line) for line in (results / "manifest.jsonl").read_text().splitlines()
               if json.loads(line)["output"] == "sample"]
    segments = [s for r in records for s in json.loads((results / r["outputs"]["speech_segments"]).read_text())
                ["segments"]]
    duration, cuts = 30.0, [r["offset"] for r in records]
    gaps = [(end["end"], start["start"]) for end, start in zip([{"end": 0.0}] + segments, segments)]
    longest_speech = max(segments, key=lambda s: s["end"] - s["start"])
    longest_gap = max(gaps, key=lambda g: g[1] - g[0])
    assert longest_gap[1] - longest_gap[0] > 2  # the sample starts with several seconds of silence

    left, bottom, width, height = WAVE_AXES
    row = round(image.shape[0] * (1 - (bottom + height * (1.12 + 1.25) / 2.5)))  # above the waveform's peaks

    def pixel(seconds: float) -> np.ndarray:
        assert all(abs(seconds - cut) > 0.3 for cut in cuts)
        return image[row, round(image.shape[1] * (left + width * seconds / duration))]

    in_speech = pixel((longest_speech["start"] + longest_speech["end"]) / 2 + 0.25)
    in_silence = pixel((longest_gap[0] + longest_gap[1]) / 2)
    assert np.allclose(in_silence, 1.0, atol=0.02)  # white
    assert in_speech[1] > in_speech[0] + 0.08 and in_speech[1] > in_speech[2] + 0.08  # green shading


def test_waveform_envelope_streams_in_small_blocks(monkeypatch, tmp_path):
    """The min/max per column a whole-file read gives, from small blocks that columns span (flat memory)."""
    from reporting import timeline
    from audio_io import as_float, open_audio, read_frames

    info = open_audio(data("pyannote_sample/sample.flac"), tmp_path)
    sizes, real = [], timeline.iter_blocks

    def recording(*args, **kwargs):
        for block in real(*args, **kwargs):
            sizes.append(len(block))
            yield block

    monkeypatch.setattr(timeline, "iter_blocks", recording)
    monkeypatch.setattr(timeline, "BLOCK_FRAMES", 4099)  # not a divisor of a column
    lows, highs = timeline.envelope(info, columns=37)
    mono = as_float(read_frames(info, 0, info.frames)).mean(axis=1)
    per_column = -(-info.frames // 37)
    expected = [(mono[i:i + per_column].min(), mono[i:i + per_column].max()) for i in range(0, len(mono), per_column)]
    assert np.allclose(np.c_[lows, highs], expected)
    assert max(sizes) <= 4099 and sum(sizes) == info.frames


class Table(HTMLParser):
    """Rows of the table with id="files" and every link on the page, as the browser's DOM has them."""

    def __init__(self):
        super().__init__()
        self.rows, self.links, self.images, self.in_table = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "files":
            self.in_table = True
        elif tag == "tr" and self.in_table and "data-status" in attrs:
            self.rows.append({"status": attrs["data-status"], "text": ""})
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_table = False

    def handle_data(self, data):
        if self.in_table and self.rows:
            self.rows[-1]["text"] += data


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
@pytest.mark.e2e
@pytest.mark.xdist_group(name="visual_reports")
def test_html_report_as_chromium_renders_it(results, tmp_path):
    page = results / "report.html"
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + str(tmp_path / "b")]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr
    table = Table()
    table.feed(dom.stdout)
    assert sorted(row["status"] for row in table.rows) == ["done", "done", "failed"]
    failed = next(row for row in table.rows if row["status"] == "failed")
    assert "broken.wav" in failed["text"] and "not an audio file" in failed["text"]
    odd = next(row for row in table.rows if "quoted" in row["text"])
    assert ODD_NAME in odd["text"]  # quotes, ampersand and markup shown as text, not parsed
    assert "30.0 s" in next(row for row in table.rows if "sample.flac" in row["text"])["text"]
    statistics = dom.stdout[dom.stdout.index('id="statistics"'):dom.stdout.index('id="files"')]
    assert "<dt>Files</dt><dd>3</dd>" in statistics and "<dt>Files failed</dt><dd>1</dd>" in statistics
    assert len(table.images) == 2
    for href in table.links + table.images:
        assert (results / unquote(href)).exists(), href

    shot = tmp_path / "report.png"
    subprocess.run([*browser, "--screenshot=" + str(shot), "--window-size=1280,2000", "--hide-scrollbars",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    # The failed file stands out: its row is drawn on the failure tint (#fdecea) across the table, one row high.
    tint = np.all(np.abs(pixels - np.array([0xfd, 0xec, 0xea]) / 255) < 0.02, axis=2)
    tinted_rows = np.flatnonzero(tint.mean(axis=1) > 0.5)
    assert len(tinted_rows) >= 20 and tinted_rows.max() - tinted_rows.min() < 200, tinted_rows
