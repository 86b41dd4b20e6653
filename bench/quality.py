"""Quality on the real clips with references: VAD frame F1 and diarization error rate, as the tool runs them.

    .venv/bin/python bench/quality.py [--models_dir .models] [--threads 2]

VAD: 10 ms frames against each clip's .speech.txt. DER: pyannote.metrics, no collar and a 0.25 s collar on each
side of reference boundaries, unsplit and split into parts (the speaker linking across parts at work).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from sample_data import companion, glob as data_glob, resolve as data  # noqa: E402  (recordings by name)

VAD_CLIPS = data_glob("librivox/*.flac") + [data(f"conv3/{name}.flac") for name in
                                                        ("conv3", "conv3_pink5dB", "conv3_music0dB")]
DIAR_CLIPS = [data("pyannote_sample/sample.flac"), data("falcon/test.flac"),
              *(data(f"conv3/{name}.flac") for name in ("conv3", "conv3_pink5dB", "conv3_music0dB"))]


def joined_recording(folder: Path) -> Path:
    """sample + falcon + sample (78.6 s, 5 speakers, the first two coming back at the end), with its RTTM."""
    import numpy as np
    import soundfile as sf

    pieces = [data("pyannote_sample/sample.flac"), data("falcon/test.flac"),
              data("pyannote_sample/sample.flac")]
    audio, lines, offset = [], [], 0.0
    for piece in pieces:
        samples, rate = sf.read(piece, dtype="int16")
        audio.append(samples)
        for line in companion(piece, ".rttm").read_text().splitlines():
            fields = line.split()
            lines.append(f"SPEAKER joined 1 {float(fields[3]) + offset:.3f} {fields[4]} <NA> <NA> "
                         f"{piece.stem}_{fields[7]} <NA> <NA>")
        offset += len(samples) / rate
    path = folder / "joined.wav"
    sf.write(path, np.concatenate(audio), rate, subtype="PCM_16")
    path.with_suffix(".rttm").write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models_dir", type=Path, default=ROOT / ".models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip_diar", action="store_true")
    args = parser.parse_args()

    import json

    import soundfile as sf
    import torch

    from config import RunConfig
    from conftest import der
    from gpu_memory import GPUMemoryManager
    from model_manager import ModelManager
    from loaders.model_store import disable_downloads_when_offline
    from batch.jobs import FileJob
    from conftest import part_collector
    from batch.pipeline import process_file
    from test_vad import frame_f1, frames, reference_regions

    disable_downloads_when_offline()
    torch.set_num_threads(args.threads)
    models = ModelManager(GPUMemoryManager(use_gpu=False), models_dir=args.models_dir, cpu_threads=args.threads)
    work = Path(tempfile.mkdtemp(prefix="quality-"))

    def run(source: Path, name: str, **options):
        config = RunConfig(input=source, output=work / name, models_dir=args.models_dir, **options)
        records = []
        report = process_file(FileJob(0, source, source.stem), config, models, part_collector(records))
        assert report["status"] == "done", report
        return report, records, config.output

    print("VAD frame F1 (10 ms frames)")
    for clip in VAD_CLIPS:
        report, records, output = run(clip, f"vad-{clip.stem}", steps=("vad",))
        segments = json.loads((output / records[0]["outputs"]["speech_segments"]).read_text())["segments"]
        duration = sf.info(clip).duration
        reference = frames(reference_regions(companion(clip, ".speech.txt")), duration)
        f1 = frame_f1(reference, frames([(s["start"], s["end"]) for s in segments], duration))
        print(f"  {clip.stem:45s} F1 {f1:.3f}")
    if args.skip_diar:
        return
    print("DER (%) offline pipeline: collar 0 / collar 0.25 s each side, speakers found/reference, seconds")
    for clip in DIAR_CLIPS + [joined_recording(work)]:
        reference = companion(clip, ".rttm")
        ref_speakers = len({line.split()[7] for line in reference.read_text().splitlines() if line.strip()})
        duration = sf.info(clip).duration
        for label, options in (("unsplit", dict(steps=("diar",))),
                               ("split", dict(steps=("split", "diar"),
                                              chunk_duration=20 if duration > 60 else round(duration / 2 + 1)))):
            started = time.perf_counter()
            report, _, output = run(clip, f"diar-{label}-{clip.stem}", diarization_model="offline", **options)
            seconds = time.perf_counter() - started
            hypothesis = output / clip.stem / f"{clip.stem}.rttm"
            print(f"  {clip.stem:18s} {label:8s} parts {report['parts']}  "
                  f"DER {100 * der(reference, hypothesis):5.2f} / {100 * der(reference, hypothesis, 0.5):5.2f}  "
                  f"speakers {report['speakers']}/{ref_speakers}  {seconds:5.1f} s")


if __name__ == "__main__":
    main()
