"""GPUMemoryManager against a fake CUDA layer: the limit, the checks, cleanup and the CPU fallback."""

from __future__ import annotations

import pytest

from fake_cuda import GB, FakeCuda, out_of_memory
from gpu_memory import GPUMemoryManager


def test_limit_is_applied_and_shared_by_the_workers_on_a_card():
    cuda = FakeCuda(total_gb=8)
    GPUMemoryManager(memory_limit=0.75, cuda=cuda, processes_per_device=3)
    assert cuda.fractions == {0: pytest.approx(0.25)}


def test_memory_line_and_checks():
    cuda = FakeCuda(total_gb=8, used_gb=2.45)
    gpu = GPUMemoryManager(memory_limit=0.75, cuda=cuda)
    assert gpu.memory_line() == "GPU Memory: 2.45GB / 8.00GB (30.6%)"
    assert gpu.check_memory(required_gb=2.0)
    assert not gpu.check_memory(required_gb=6.0)  # 5.55 GB free on the card, and our slice is 6 GB
    cuda.reserved = int(5 * GB)  # this process already holds 5 of its 6 GB
    assert not gpu.check_memory(required_gb=2.0)
    assert gpu.choose_device(required_gb=2.0) == "cuda:0"  # cleanup released the cache, so it fits again


def test_no_gpu_means_cpu_everywhere():
    gpu = GPUMemoryManager(use_gpu=False, cuda=FakeCuda())
    assert gpu.device == "cpu" and not gpu.check_memory(0.1)
    assert gpu.memory_line() == "GPU Memory: 0.00GB / 0.00GB (0.0%)"


@pytest.mark.parametrize("kind", ["torch", "ctranslate2"])
def test_out_of_memory_cleans_up_and_reruns_on_the_cpu(kind):
    cuda = FakeCuda(total_gb=8)
    gpu = GPUMemoryManager(cuda=cuda)
    devices, notes = [], []

    def work(device, reduced):
        devices.append((device, reduced))
        if device != "cpu":
            raise out_of_memory(kind)
        return "result"

    assert gpu.run_with_fallback(work, "diarization", on_fallback=notes.append) == "result"
    assert devices == [("cuda:0", False), ("cuda:0", True), ("cpu", False)]
    assert cuda.calls.count("synchronize") == 2 and cuda.calls.count("ipc_collect") == 2
    assert notes == ["diarization: GPU out of memory (also with smaller batches), ran on the CPU instead"]


def test_a_smaller_batch_can_save_the_gpu_run():
    gpu = GPUMemoryManager(cuda=FakeCuda())
    calls = []

    def work(device, reduced):
        calls.append((device, reduced))
        if not reduced:
            raise out_of_memory()
        return device

    assert gpu.run_with_fallback(work, "denoise") == "cuda:0"
    assert calls == [("cuda:0", False), ("cuda:0", True)]


def test_other_errors_are_not_swallowed():
    gpu = GPUMemoryManager(cuda=FakeCuda())

    def work(device, reduced):
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        gpu.run_with_fallback(work, "vad")


class NoCuda:
    def is_available(self) -> bool:
        return False


@pytest.mark.parametrize("cuda, memory_gb, expected", [
    (FakeCuda(total_gb=16), 32, "high"), (FakeCuda(total_gb=12), 16, "mid"), (FakeCuda(total_gb=8), 64, "mid"),
    (NoCuda(), 8, "low"), (NoCuda(), 24, "cpu")])
def test_auto_profile_follows_the_hardware(cuda, memory_gb, expected):
    from profiles import detect_profile

    assert detect_profile(cuda, memory_gb) == expected


def test_explicit_flags_override_the_profile(tmp_path):
    import os

    from audio_processing import build_parser, config_from_args

    args = build_parser().parse_args(["--input", str(tmp_path), "--profile", "high", "--batch_size", "1"])
    config = config_from_args(args)
    assert (config.gpu_memory_limit, config.batch_size, config.workers) == (0.8, 1, min(8, os.cpu_count()))
    plain = config_from_args(build_parser().parse_args(["--input", str(tmp_path)]))
    assert (plain.gpu_memory_limit, plain.batch_size, plain.workers) == (0.75, 2, None)
