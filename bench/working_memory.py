"""Each stage's working memory: the peak resident memory a model's call adds on top of the loaded model, for
inputs of several lengths, as the tool makes the call (same arguments, one thread).

    .venv/bin/python bench/working_memory.py [--seconds 15 60 120] [--models_dir .models]

Every measurement runs in a fresh process: load the model, reset the kernel's peak-RSS mark
(/proc/self/clear_refs), make the call, read the peak (VmHWM). Demucs has htdemucs' architecture with
untrained weights (same compute and memory as the real model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, bench_parser, speech_16k

sys.path.insert(0, str(ROOT))

# each measured at every length; the number is the batch (Demucs: one-minute blocks, Whisper: clips)
CALLS = ("demucs, batch 1", "demucs, batch 2", "deepfilternet", "vad", "diarization", "whisper, batch 8",
         "whisper, batch 1")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _audio(seconds: float):
    import numpy as np

    speech = speech_16k().astype(np.float32) / 32768
    return np.resize(speech, int(seconds * 16000))


def one(call: str, seconds: float, models_dir: Path, demucs_repo: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    from model_manager import OFFLINE_DIARIZATION, ModelManager
    from stages.base import resample

    models = ModelManager(models_dir=models_dir, cpu_threads=1)
    audio = torch.from_numpy(_audio(seconds))
    if call.startswith("demucs"):
        from demucs.apply import apply_model

        model = models.get_demucs_model(str(demucs_repo))
        batch = int(call.split()[-1])
        stereo = resample(audio, 16000, model.samplerate)[None].expand(2, -1)
        mix = stereo[None].expand(batch, -1, -1).contiguous()
        run = lambda: apply_model(model, mix, shifts=0, split=True, overlap=0.25, progress=False)  # noqa: E731
    elif call == "deepfilternet":
        model = models.get_deepfilternet()
        mono48 = resample(audio, 16000, model.sample_rate)[None].numpy()
        run = lambda: model.process(mono48)  # noqa: E731
    elif call == "vad":
        from silero_vad import get_speech_timestamps

        model = models.get_vad_model()
        run = lambda: get_speech_timestamps(audio, model)  # noqa: E731
    elif call == "diarization":
        from stages.diarize import analyse_window

        pipeline = models.get_diarization_pipeline(OFFLINE_DIARIZATION)
        run = lambda: analyse_window(pipeline, audio[None], 0.0, 0.0, seconds)  # noqa: E731
    else:
        transcriber = models.get_whisper_model("base")
        clips = [(start, min(start + 22.0, seconds)) for start in range(0, int(seconds), 22)]
        batch = int(call.split()[-1])
        run = lambda: transcriber.transcribe_clips(audio.numpy(), clips, batch)  # noqa: E731
    import gc

    gc.collect()
    loaded = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak mark starts again from here
    begun = time.perf_counter()
    run()
    return {"loaded_mb": loaded, "working_mb": _status_mb("VmHWM") - loaded, "seconds": time.perf_counter() - begun}


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        call, seconds, models_dir, demucs_repo = sys.argv[2], float(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
        print(json.dumps(one(call, seconds, models_dir, demucs_repo)))
        return
    parser = bench_parser(__doc__, Path("/tmp/working_memory"))
    parser.add_argument("--seconds", type=float, nargs="+", default=[15.0, 60.0, 120.0])
    options = parser.parse_args()
    from stage_rtf import make_demucs_repo

    options.work.mkdir(parents=True, exist_ok=True)
    demucs_repo = make_demucs_repo(options.work)
    print("| call | model loaded, MB | " + " | ".join(f"working MB, {s:g} s" for s in options.seconds)
          + " | MB per second of audio (longest) | seconds (longest) |")
    print("|---|---|" + "---|" * len(options.seconds) + "---|---|")
    for call in CALLS:
        results = []
        for seconds in options.seconds:
            out = subprocess.run([sys.executable, __file__, "--one", call, str(seconds),
                                  str(options.models_dir.resolve()), str(demucs_repo)], capture_output=True,
                                 text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if out.returncode != 0:
                raise RuntimeError(f"{call}, {seconds} s: {out.stderr[-1500:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"| {call} | {results[-1]['loaded_mb']:.0f} | "
              + " | ".join(f"{r['working_mb']:.0f}" for r in results)
              + f" | {results[-1]['working_mb'] / options.seconds[-1]:.1f} | {results[-1]['seconds']:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
