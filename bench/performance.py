"""All five performance scenarios from one command, ending with the table of targets, medians and ratios.

    .venv/bin/python bench/performance.py [--quick] [--only overhead scaling naive memory rtf] [--models_dir .models]

1. overhead: the pipeline on one file against the bare library calls (bench/overhead.py)
2. scaling: 2 workers against 1, 8 files and one long file (bench/scaling.py)
3. naive: against a naive sequential script, speed and peak memory (bench/naive.py)
4. memory: peak memory for a 3-hour file against a 10-minute one (bench/memory_flat.py)
5. rtf: each stage's real-time factor and model load time, ASR back-ends and precisions (bench/stage_rtf.py)

The full run takes about an hour and a half on 2 cores; --quick uses fewer runs and shorter inputs (about 25
minutes; its ratios are rougher). Let the machine be otherwise idle: the scenarios time whole commands.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, bench_parser

import memory_flat
import naive
import overhead
import scaling

SCENARIOS = ("overhead", "scaling", "naive", "memory", "rtf")


def main() -> None:
    parser = bench_parser(__doc__, Path("/tmp/performance"))
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter inputs")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    options = parser.parse_args()
    quick, work, models = options.quick, options.work, options.models_dir
    measures = {
        "overhead": lambda: overhead.measure(work / "overhead", models, runs=1 if quick else 3,
                                             seconds=60 if quick else 120),
        "scaling": lambda: scaling.measure(work / "scaling", models, runs=1 if quick else 2,
                                           long_minutes=10 if quick else 30),
        "naive": lambda: naive.measure(work / "naive", models, runs=1 if quick else 2),
        "memory": lambda: memory_flat.measure(work / "memory", models, runs=1, long_hours=1 if quick else 3),
    }
    rows, begun = [], time.monotonic()
    for name in options.only:
        print(f"== {name}", flush=True)
        try:
            if name == "rtf":
                subprocess.run([sys.executable, str(ROOT / "bench" / "stage_rtf.py"), "--runs", "1" if quick else "3",
                                "--models_dir", str(models)], check=True)
            else:
                rows += measures[name]()
        except Exception as error:  # noqa: BLE001 - one scenario failing does not lose the others' figures
            print(f"{name} failed: {error}", flush=True)
    print(f"\n{len(rows)} targets, {sum(row.met for row in rows)} met ({(time.monotonic() - begun) / 60:.0f} min)")
    print("| scenario | target | measured (medians) | ratio | met |\n|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
