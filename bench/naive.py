"""Against the naive pipeline: the four stages as a first script would write them (one process, files one after
another, every model loaded again for each file, whole files in memory, the libraries' default settings and
threads) against this tool with its defaults, on a folder of short files.

    .venv/bin/python bench/naive.py [--runs 2] [--files 8] [--seconds 15] [--models_dir .models]

Both sides use the same weights: Whisper base (the naive script through openai-whisper, as the seed guide does;
the tool through faster-whisper int8, its default), Demucs with htdemucs' architecture (untrained weights: same
compute), Silero VAD, pyannote segmentation-3.0 + CAM++ (the naive script with pyannote's defaults: step 0.1,
batches of 1, minimum cluster size 12). The tool runs twice: 2 workers of one thread each (`--workers 2`), and
1 worker of two threads (what the seed's worker rule gives on 2 cores). Peak memory is the whole process
tree's (PSS: pages shared by the tool's processes counted once).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from common import ROOT, Row, measured_run, medians, scenario_main, tool_command, write_short_files
from overhead import make_demucs_repo

RATE = 16000


def word_boundary_cuts(words: list[dict], total: float, chunk: float) -> list[tuple[float, float]]:
    """Chunks of about `chunk` seconds, each ending at the end of a word."""
    spans, start = [], 0.0
    for word in words:
        if word["end"] - start >= chunk:
            spans.append((start, word["end"]))
            start = word["end"]
    spans.append((start, total))
    return [span for span in spans if span[1] > span[0]]


def naive_pipeline(folder: Path, output: Path, models_dir: Path, demucs_repo: Path, chunk: float) -> None:
    import soundfile as sf
    import torch
    import torchaudio
    import whisper
    from demucs.apply import apply_model
    from demucs.audio import convert_audio
    from demucs.pretrained import get_model
    from silero_vad import collect_chunks, get_speech_timestamps, load_silero_vad

    sys.path.insert(0, str(ROOT))
    from loaders.speaker_embedding import build_offline_pipeline

    output.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("*.flac")):
        audio, rate = sf.read(path, dtype="float32")  # the whole file
        model = whisper.load_model(str(models_dir / "whisper" / "base.pt"), device="cpu")
        model.set_alignment_heads(whisper._ALIGNMENT_HEADS["base"])
        result = model.transcribe(audio, language="en", word_timestamps=True)
        words = [word for segment in result["segments"] for word in segment["words"]]
        chunks = [audio[int(a * rate):int(b * rate)] for a, b in word_boundary_cuts(words, len(audio) / rate, chunk)]
        for index, piece in enumerate(chunks):
            sf.write(output / f"{path.stem}_{index:03d}.wav", piece, rate)

        separator = get_model(next(demucs_repo.glob("*.th")).stem, repo=demucs_repo)
        cleaned = []
        for index, piece in enumerate(chunks):
            mix = convert_audio(torch.from_numpy(piece)[None], rate, separator.samplerate, separator.audio_channels)
            vocals = apply_model(separator, mix[None], progress=False)[0, separator.sources.index("vocals")]
            sf.write(output / f"{path.stem}_{index:03d}_vocals.wav", vocals.T.numpy(), separator.samplerate)
            cleaned.append(torchaudio.functional.resample(vocals.mean(0), separator.samplerate, rate))

        vad = load_silero_vad()
        speech = []
        for index, piece in enumerate(cleaned):
            stamps = get_speech_timestamps(piece, vad, sampling_rate=rate)
            speech.append(collect_chunks(stamps, piece) if stamps else piece[:0])
            sf.write(output / f"{path.stem}_{index:03d}_speech.wav", speech[-1].numpy(), rate)

        diarization = build_offline_pipeline(
            models_dir / "pyannote" / "segmentation-3.0" / "pytorch_model.bin",
            models_dir / "speaker" / "campplus_cn_en_common.pt", segmentation_step=0.1, min_cluster_size=12,
            embedding_batch_size=1, segmentation_batch_size=1)
        for index, piece in enumerate(speech):
            if len(piece) < rate:
                continue
            turns = diarization({"waveform": piece[None], "sample_rate": rate}).speaker_diarization
            with open(output / f"{path.stem}_{index:03d}.rttm", "w") as rttm:
                turns.write_rttm(rttm)


def measure(work: Path, models_dir: Path, runs: int = 2, files: int = 8, seconds: float = 15.0) -> list[Row]:
    shutil.rmtree(work, ignore_errors=True)
    models_dir = models_dir.resolve()
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir)}
    folder = write_short_files(work / "in", files, seconds)
    demucs_repo = make_demucs_repo(work / "demucs")
    chunk = f"{seconds / 2:g}"
    naive = [sys.executable, __file__, "--naive", str(folder), str(work / "naive"), str(models_dir), str(demucs_repo),
             chunk]
    commands = {"naive": naive}
    for workers in (2, 1):
        commands[f"tool, {workers} worker{'s' if workers > 1 else ''}"] = tool_command(
            folder, work / "tool", "--workers", str(workers), "--split_method", "word_boundary", "--chunk_duration",
            chunk, "--language", "en", "--demucs_model", str(demucs_repo), "--diarization_model", "offline",
            "--models_dir", str(models_dir), "--overwrite")
    results = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            shutil.rmtree(work / "naive", ignore_errors=True)
            results[name].append(measured_run(command, env))
            run = results[name][-1]
            print(f"{name}: {run.seconds:.1f} s, peak PSS {run.peak_pss_mb:.0f} MB, peak RSS {run.peak_rss_mb:.0f} MB",
                  flush=True)
    naive_run, rows = medians(results.pop("naive")), []
    label = f"{files} files of {seconds:g} s, all four stages"
    for name, runs_of_tool in results.items():
        tool = medians(runs_of_tool)
        speedup, saving = naive_run.seconds / tool.seconds, 1 - tool.peak_pss_mb / naive_run.peak_pss_mb
        rows += [Row(f"3. speed against the naive pipeline, {label}, {name}", ">= 2.0x faster",
                     f"naive {naive_run.seconds:.1f} s / tool {tool.seconds:.1f} s", speedup, speedup >= 2.0),
                 Row(f"3. peak memory against the naive pipeline, {label}, {name}", ">= 30% lower",
                     f"tool {tool.peak_pss_mb:.0f} / naive {naive_run.peak_pss_mb:.0f} MB PSS (RSS "
                     f"{tool.peak_rss_mb:.0f} / {naive_run.peak_rss_mb:.0f}): {saving:.0%} lower",
                     tool.peak_pss_mb / naive_run.peak_pss_mb, saving >= 0.30)]
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--naive"]:
        folder, output, models_dir, demucs_repo = map(Path, sys.argv[2:6])
        naive_pipeline(folder, output, models_dir, demucs_repo, float(sys.argv[6]))
        return
    scenario_main(__doc__, Path("/tmp/naive"), measure)


if __name__ == "__main__":
    main()
