"""Real-time factor of each stage on CPU (stage seconds / audio seconds), medians over repeated runs.

    .venv/bin/python bench/stage_rtf.py [--runs 3] [--threads 2] [--audio PATH (default: conv3/conv3_music0dB.flac)]

Each stage runs alone through the real pipeline code on the same audio, models loaded beforehand (load times are
reported separately). Demucs: no pretrained weights can be had offline, so an untrained HTDemucs with htdemucs'
architecture is timed: same compute, no separation quality.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sample_data import glob as data_glob, resolve as data  # noqa: E402  (recordings by name)


def make_demucs_repo(folder: Path) -> Path:
    import torch
    from demucs.htdemucs import HTDemucs

    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], dconv_mode=3, t_layers=5, segment=7.8)
    args, kwargs = model._init_args_kwargs
    torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": model.state_dict(),
                "training_args": {}}, folder / "htdemucs_arch.th")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models_dir", type=Path, default=ROOT / ".models")
    parser.add_argument("--only", nargs="*", default=[], help="run the scenarios whose name contains one of these")
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from config import RunConfig
    from gpu_memory import GPUMemoryManager
    from model_manager import ModelManager
    from loaders.model_store import disable_downloads_when_offline
    from batch.jobs import FileJob
    from batch.pipeline import process_file

    disable_downloads_when_offline()
    torch.set_num_threads(args.threads)
    args.audio = args.audio or data("conv3/conv3_music0dB.flac")
    duration = sf.info(args.audio).duration
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    demucs_repo = make_demucs_repo(work)
    scenarios = {
        "split time": dict(steps=("split",), chunk_duration=20),
        "split word_boundary faster-whisper int8": dict(steps=("split",), split_method="word_boundary",
                                                        chunk_duration=20, asr_backend="faster-whisper"),
        "split word_boundary faster-whisper fp32": dict(steps=("split",), split_method="word_boundary",
                                                        chunk_duration=20, asr_backend="faster-whisper",
                                                        asr_compute_type="float32"),
        "split word_boundary openai-whisper fp32": dict(steps=("split",), split_method="word_boundary",
                                                        chunk_duration=20, asr_backend="openai-whisper"),
        "denoise demucs (htdemucs architecture)": dict(steps=("denoise",), demucs_model=str(demucs_repo)),
        "denoise deepfilternet": dict(steps=("denoise",), denoiser="deepfilternet"),
        "vad silero": dict(steps=("vad",)),
        "diar offline (seg-3.0 + CAM++)": dict(steps=("diar",), diarization_model="offline"),
    }
    managers = {}  # one per faster-whisper precision

    def manager(compute_type: str) -> ModelManager:
        if compute_type not in managers:
            managers[compute_type] = ModelManager(GPUMemoryManager(use_gpu=False), models_dir=args.models_dir,
                                                  cpu_threads=args.threads, language="en",
                                                  asr_compute_type=compute_type)
        return managers[compute_type]

    print(f"audio: {args.audio.name}, {duration:.1f} s; {args.threads} thread(s); median of {args.runs} runs")
    print(f"{'stage':45s} {'load s':>7s} {'median s':>9s} {'RTF':>7s}")
    for name, options in scenarios.items():
        if args.only and not any(word in name for word in args.only):
            continue
        times, first = [], 0.0
        for run in range(args.runs + 1):
            config = RunConfig(input=args.audio, output=work / f"out{run}", models_dir=args.models_dir, **options)
            models = manager(config.asr_compute_type)
            report = process_file(FileJob(0, args.audio, "x"), config, models, lambda kind, payload: None)
            if report["status"] != "done":
                raise SystemExit(f"{name}: {report['error']}")
            seconds = report["stages"][options["steps"][0]]["seconds"]
            if run == 0:  # the first run also loads the models
                first = seconds
            else:
                times.append(seconds)
        median = statistics.median(times)
        load = max(0.0, first - median)
        print(f"{name:45s} {load:7.2f} {median:9.2f} {median / duration:7.3f}")
    if not args.only or any(word in "precision" for word in args.only):
        compare_precisions(manager)


def compare_precisions(manager) -> None:
    """What int8 costs: faster-whisper's int8 and float32 words against openai-whisper's float32 (the reference
    implementation), on the recordings that have reference transcripts."""
    import difflib

    import numpy as np
    import soundfile as sf

    from stages.split import resample_np

    clips = [data("jfk/jfk.flac"), data("conv3/conv3.flac"), *data_glob("librivox/*.flac")]
    reference = manager("auto").get_whisper_model("base", "openai-whisper")
    candidates = {"faster-whisper int8": manager("int8").get_whisper_model("base", "faster-whisper"),
                  "faster-whisper fp32": manager("float32").get_whisper_model("base", "faster-whisper")}
    counted = {name: [0, 0, []] for name in candidates}  # words, words differing, start differences
    for clip in clips:
        audio, rate = sf.read(clip, dtype="float32", always_2d=True)
        audio = resample_np(audio.mean(axis=1), rate)
        expected, _ = reference.transcribe(audio)
        for name, model in candidates.items():
            words, _ = model.transcribe(audio)
            a, b = [w.word.strip().lower() for w in expected], [w.word.strip().lower() for w in words]
            matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
            same = sum(block.size for block in matcher.get_matching_blocks())
            counted[name][0] += len(a)
            counted[name][1] += max(len(a), len(b)) - same
            counted[name][2] += [abs(expected[block.a + k].start - words[block.b + k].start)
                                 for block in matcher.get_matching_blocks() for k in range(block.size)]
    print(f"\nagainst openai-whisper fp32 on {len(clips)} clips with reference transcripts:")
    for name, (total, differing, shifts) in counted.items():
        print(f"{name}: {differing} of {total} words differ ({differing / total:.1%}); word starts differ by "
              f"{np.mean(shifts):.3f} s on average (median {np.median(shifts):.3f} s)")


if __name__ == "__main__":
    main()
