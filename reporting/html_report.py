"""report.html: the run on one page (statistics, one row per file with links to its picture and outputs).

Self-contained: inline style, no script, relative links, so the results folder can be moved or served as is.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from urllib.parse import quote

from audio_io import read_jsonl, write_text
from layout import CONFIG, HTML_REPORT, LOG, MANIFEST, REPORT_JSON, REPORT_TXT, SUMMARY, TIMELINE, UTTERANCE_MANIFEST
from reporting.reports import statistics

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 0.4em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fdecea; }
tr.incomplete td { background: #fff4e5; }
.error { color: #b71c1c; }
img.timeline { width: 300px; border: 1px solid #ddd; }
td:first-child { word-break: break-all; }
dl.stats { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.5em; }
dl.stats dt { color: #555; }
"""


def _link(href: str, text: str) -> str:
    return f'<a href="{escape(quote(href))}">{escape(text)}</a>'


def _seconds(value) -> str:
    return "" if value is None else f"{value:.1f} s"


def file_row(output: Path, report: dict) -> str:
    key = report["output"]
    status = report["status"]
    duration = report.get("duration") or 0.0
    speech = report.get("speech_duration")
    ratio = f"{speech / duration:.0%}" if speech is not None and duration else ""
    speakers = "" if report.get("speakers") is None else str(report["speakers"])
    links = [_link(f"{key}/{name}", name) for name in (REPORT_TXT, REPORT_JSON)
             if (output / key / name).exists()]
    if (output / key).is_dir():
        links.append(_link(f"{key}/", "outputs"))
    picture = ""
    if (output / key / TIMELINE).exists():
        picture = (f'<a href="{escape(quote(f"{key}/{TIMELINE}"))}"><img class="timeline" alt="timeline of '
                   f'{escape(key)}" src="{escape(quote(f"{key}/{TIMELINE}"))}"></a>')
    error = f'<div class="error">{escape(report["error"])}</div>' if report.get("error") else ""
    notes = "".join(f"<div>{escape(note)}</div>" for note in report.get("notes") or [])
    return (f'<tr class="{escape(status)}" data-status="{escape(status)}">'
            f"<td>{escape(report['source'])}{error}{notes}</td>"
            f'<td class="number">{_seconds(duration)}</td><td class="number">{report.get("parts", 0)}</td>'
            f'<td class="number">{ratio}</td><td class="number">{speakers}</td>'
            f'<td class="number">{_seconds(report.get("processing_seconds"))}</td>'
            f"<td>{escape(status)}</td><td>{' · '.join(links)}</td><td>{picture}</td></tr>")


def quality_histogram(output: Path) -> str:
    """The DNSMOS OVRL scores of the run's utterances as an inline SVG histogram (bins of 0.25 from 1 to 5)."""
    scores = [record["dnsmos_ovrl"] for record in read_jsonl(output / UTTERANCE_MANIFEST)
              if isinstance(record, dict) and isinstance(record.get("dnsmos_ovrl"), (int, float))]
    if not scores:
        return ""
    counts = [0] * 16
    for score in scores:
        counts[min(15, max(0, int((score - 1.0) / 0.25)))] += 1
    width, height, top = 24, 120, max(counts)
    bars = "".join(
        f'<rect x="{30 + i * width}" y="{10 + height - round(height * n / top)}" width="{width - 2}" '
        f'height="{round(height * n / top)}" fill="#4a78b5"><title>{1 + i * 0.25:.2f}-{1.25 + i * 0.25:.2f}: {n}'
        f'</title></rect>' for i, n in enumerate(counts))
    ticks = "".join(f'<text x="{30 + (value - 1) * 4 * width}" y="{height + 26}" font-size="11" '
                    f'text-anchor="middle">{value}</text>' for value in range(1, 6))
    median = sorted(scores)[len(scores) // 2]
    return (f'<h2>Utterance quality</h2>\n<p>DNSMOS OVRL of {len(scores)} utterances in '
            f'{_link(UTTERANCE_MANIFEST, UTTERANCE_MANIFEST)} (median {median:.2f}; Emilia-Pipe keeps 3.0 and above, '
            f'--min_dnsmos)</p>\n<svg id="dnsmos" width="{60 + 16 * width}" height="{height + 40}" role="img" '
            f'aria-label="histogram of DNSMOS OVRL">{bars}<line x1="30" y1="{height + 10}" x2="{30 + 16 * width}" '
            f'y2="{height + 10}" stroke="#555"/>{ticks}</svg>\n')


def write_html_report(output: Path, summary: dict, reports: list[dict]) -> Path:
    stats = {"Files": summary.get("files_total", len(reports)), **dict(statistics(summary)),
             "Wall time": f"{summary['wall_seconds']:.1f} s"}
    rows = "\n".join(file_row(output, report) for report in sorted(reports, key=lambda r: r["source"]))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>audio_processing: {escape(str(output))}</title>
<style>{STYLE}</style></head>
<body>
<h1>audio_processing results</h1>
<p>{escape(str(output))}{' (interrupted: a rerun resumes)' if summary.get('interrupted') else ''}</p>
<dl class="stats" id="statistics">
{''.join(f'<dt>{escape(name)}</dt><dd>{escape(str(value))}</dd>' for name, value in stats.items())}
</dl>
<h2>Files</h2>
<table id="files">
<thead><tr><th>file</th><th>duration</th><th>parts</th><th>speech</th><th>speakers</th><th>time</th>
<th>status</th><th>outputs</th><th>timeline</th></tr></thead>
<tbody>
{rows}
</tbody></table>
{quality_histogram(output)}<p>Run files: {' · '.join(_link(name, name) for name in (SUMMARY, MANIFEST, CONFIG, LOG))}</p>
</body></html>
"""
    path = output / HTML_REPORT
    write_text(path, page)
    return path
