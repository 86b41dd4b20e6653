"""What a run tells its user: manifest lines, per-file reports, the statistics, report.html, timeline.png and
the log."""
