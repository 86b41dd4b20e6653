"""Out-of-memory in each model stage, on a fake card: cleanup, a retry with smaller batches, then the CPU; the
part succeeds with the same output as a CPU-only run, and the report says what happened."""

from __future__ import annotations


import pytest

from conftest import data, data_glob, part_collector
from fake_cuda import FakeCuda, fail_first
from gpu_memory import usable_cores


@pytest.fixture
def fake_gpu(models_dir):
    from gpu_memory import GPUMemoryManager
    from model_manager import ModelManager

    cuda = FakeCuda(total_gb=16, tensor_device="cpu")
    models = ModelManager(GPUMemoryManager(memory_limit=0.75, use_gpu=True, cuda=cuda), models_dir=models_dir,
                          cpu_threads=usable_cores(), language="en")
    return cuda, models


@pytest.fixture
def process_with(tmp_path):
    from config import RunConfig
    from batch.jobs import FileJob
    from batch.pipeline import process_file

    def run(models, source, name, **options):
        output = tmp_path / name
        config = RunConfig(input=source, output=output, models_dir=models.models_dir, **options)
        records = []
        report = process_file(FileJob(0, source, source.stem), config, models, part_collector(records))
        return report, records, output

    return run


def outputs_equal(first, second, kind):
    (_, records_a, out_a), (_, records_b, out_b) = first, second
    return [(out_a / r["outputs"][kind]).read_bytes() for r in records_a] == \
        [(out_b / r["outputs"][kind]).read_bytes() for r in records_b]


@pytest.mark.parametrize("failures, note", [(1, None), (2, "GPU out of memory (also with smaller batches)")])
def test_out_of_memory_during_denoise(monkeypatch, fake_gpu, model_manager, process_with, demucs_repo, failures,
                                     note):
    import demucs.apply

    repo = demucs_repo
    source = data("librivox/sense_and_sensibility_01_austen_64kb-0880.flac")
    options = dict(steps=("denoise",), demucs_model=str(repo))
    cpu = process_with(model_manager, source, "cpu", **options)
    cuda, models = fake_gpu
    monkeypatch.setattr(demucs.apply, "apply_model", fail_first(failures, demucs.apply.apply_model))
    gpu = process_with(models, source, "gpu", **options)
    report = gpu[0]
    assert report["status"] == "done" and report["device"] == "cuda:0"
    assert outputs_equal(cpu, gpu, "denoise")
    assert (note is None and not report["notes"]) or any(note in n for n in report["notes"])
    assert cuda.calls.count("synchronize") == failures and "ipc_collect" in cuda.calls


def test_out_of_memory_during_diarization(monkeypatch, fake_gpu, model_manager, process_with):
    from loaders import speaker_embedding

    source = data("pyannote_sample/sample.flac")
    options = dict(steps=("diar",), diarization_model="offline")
    cpu = process_with(model_manager, source, "cpu", **options)
    cuda, models = fake_gpu
    monkeypatch.setattr(speaker_embedding.CAMPPlus, "forward", fail_first(2, speaker_embedding.CAMPPlus.forward))
    gpu = process_with(models, source, "gpu", **options)
    assert gpu[0]["status"] == "done"
    assert any("diarization: GPU out of memory" in n for n in gpu[0]["notes"])
    assert (gpu[2] / "sample" / "sample.rttm").read_text() == (cpu[2] / "sample" / "sample.rttm").read_text()


def test_out_of_memory_during_speech_recognition(monkeypatch, fake_gpu, model_manager, process_with):
    from loaders import asr

    source = data("librivox/sense_and_sensibility_01_austen_64kb-0870.flac")
    options = dict(steps=("split",), split_method="word_boundary", chunk_duration=4)
    cpu = process_with(model_manager, source, "cpu", **options)
    cuda, models = fake_gpu
    monkeypatch.setattr(asr.FasterWhisperTranscriber, "transcribe",
                        fail_first(2, asr.FasterWhisperTranscriber.transcribe, kind="ctranslate2"))
    gpu = process_with(models, source, "gpu", **options)
    assert gpu[0]["status"] == "done" and gpu[0]["stages"]["split"]["method"] == "word_boundary"
    assert any("speech recognition: GPU out of memory" in n for n in gpu[0]["notes"])
    assert outputs_equal(cpu, gpu, "transcript") and outputs_equal(cpu, gpu, "split")


def test_out_of_memory_during_transcription(monkeypatch, fake_gpu, model_manager, process_with):
    from loaders import asr

    source = data("jfk/jfk.flac")
    options = dict(steps=("vad", "transcribe"))
    cpu = process_with(model_manager, source, "cpu", **options)
    cuda, models = fake_gpu
    monkeypatch.setattr(asr.FasterWhisperTranscriber, "transcribe_clips",
                        fail_first(2, asr.FasterWhisperTranscriber.transcribe_clips, kind="ctranslate2"))
    gpu = process_with(models, source, "gpu", **options)
    assert gpu[0]["status"] == "done"
    assert any("speech recognition: GPU out of memory" in n for n in gpu[0]["notes"])
    assert outputs_equal(cpu, gpu, "words")
    assert (gpu[2] / "jfk" / "jfk.srt").read_text() == (cpu[2] / "jfk" / "jfk.srt").read_text()


def test_cleanup_after_each_stage_and_models_loaded_once(fake_gpu, process_with):
    cuda, models = fake_gpu
    clips = data_glob("librivox/*.flac")[:3]
    for clip in clips:
        report, records, _ = process_with(models, clip, clip.stem, steps=("split", "vad"), chunk_duration=2)
        assert report["status"] == "done"
    parts = 4 + 2 + 3  # 7.1 s, 2.99 s and 5.3 s in 2 s parts
    assert cuda.calls.count("empty_cache") >= 2 * parts + len(clips)  # after every stage of every part, every file
    assert all(count == 1 for count in models.load_counts.values()) and len(models.load_counts) == 1
