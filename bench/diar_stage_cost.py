"""Where the diarization stage's CPU time goes: the whole stage (reading, the pipeline, saving, provisional
labels, the whole-file clustering) against the pipeline call alone, and user against system time.

    .venv/bin/python bench/diar_stage_cost.py [--work /tmp/diar_stage_cost]

conv3 three times over (189 s, 3 speakers), offline pipeline, one thread, in one process; then the stage's
costliest calls (cProfile).
"""

from __future__ import annotations

import cProfile
import pstats
import resource
import shutil
import sys
import time
from pathlib import Path

from common import ROOT, bench_parser

sys.path.insert(0, str(ROOT))
from sample_data import resolve as data  # noqa: E402


def main() -> None:
    options = bench_parser(__doc__, Path("/tmp/diar_stage_cost")).parse_args()
    import numpy as np
    import soundfile as sf
    import torch

    torch.set_num_threads(1)
    import stages.diarize
    from batch.jobs import plan_jobs
    from batch.pipeline import process_file
    from config import RunConfig
    from model_manager import ModelManager

    shutil.rmtree(options.work, ignore_errors=True)
    (options.work / "out").mkdir(parents=True)
    audio, rate = sf.read(data("conv3/conv3.flac"), dtype="float32")
    source = options.work / "conv3x3.wav"
    sf.write(source, np.concatenate([audio] * 3), rate)
    config = RunConfig(input=source, output=options.work / "out", steps=("diar",), diarization_model="offline",
                       models_dir=options.models_dir)
    models = ModelManager(models_dir=options.models_dir, cpu_threads=1)
    stage = stages.diarize.Diarize(config, models)
    stage.preload()  # loading is not the stage's cost
    analyse, spent = stages.diarize.analyse_window, []

    def timed(*args, **kwargs):
        begun = time.process_time()
        try:
            return analyse(*args, **kwargs)
        finally:
            spent.append(time.process_time() - begun)

    stages.diarize.analyse_window = timed
    before, begun = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    profile = cProfile.Profile()
    profile.enable()
    report = process_file(plan_jobs([source], source)[0], config, models, lambda *_: None)
    profile.disable()
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(f"stage {report['stages']['diar']['seconds']:.1f} s wall, {time.process_time() - begun:.1f} s CPU, of "
          f"which the pipeline call {sum(spent):.1f} s; user {after.ru_utime - before.ru_utime:.1f} s, system "
          f"{after.ru_stime - before.ru_stime:.1f} s")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main()
