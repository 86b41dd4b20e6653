"""GPUMemoryManager against a fake CUDA layer: the limit, the checks, cleanup and the CPU fallback."""

from __future__ import annotations

import pytest

from fake_cuda import GB, FakeCuda, out_of_memory
from gpu_memory import Card, GPUMemoryManager, usable_cores


def test_limit_is_applied_and_shared_by_the_workers_on_a_card():
    cuda = FakeCuda(total_gb=8)
    GPUMemoryManager(memory_limit=0.75, use_gpu=True, cuda=cuda, processes_per_device=3)
    assert cuda.fractions == {0: pytest.approx(0.25)}


def test_memory_line_and_checks():
    cuda = FakeCuda(total_gb=8, used_gb=2.45)
    gpu = GPUMemoryManager(memory_limit=0.75, use_gpu=True, cuda=cuda)
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
    gpu = GPUMemoryManager(use_gpu=True, cuda=cuda)
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
    gpu = GPUMemoryManager(use_gpu=True, cuda=FakeCuda())
    calls = []

    def work(device, reduced):
        calls.append((device, reduced))
        if not reduced:
            raise out_of_memory()
        return device

    assert gpu.run_with_fallback(work, "denoise") == "cuda:0"
    assert calls == [("cuda:0", False), ("cuda:0", True)]


def test_other_errors_are_not_swallowed():
    gpu = GPUMemoryManager(use_gpu=True, cuda=FakeCuda())

    def work(device, reduced):
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        gpu.run_with_fallback(work, "vad")


@pytest.mark.parametrize("cards, memory_gb, expected", [
    ([Card("A", 16)], 32, "high"), ([Card("A", 12)], 16, "mid"), ([Card("A", 8)], 64, "mid"),
    ([], 8, "low"), ([], 24, "cpu")])
def test_auto_profile_follows_the_hardware(cards, memory_gb, expected):
    from frontends.profiles import detect_profile

    assert detect_profile(cards, memory_gb) == expected


def test_a_profile_fills_only_what_was_not_given():
    from config import make_config

    from frontends.profiles import profile_settings

    config, notes = make_config({"profile": "high", "batch_size": 1}, profile_settings("high"))
    assert (config.use_gpu, config.gpu_memory_limit, config.batch_size, config.workers) == (
        True, 0.8, 1, min(8, usable_cores()))
    assert "--batch_size 1 given: kept over profile high's 4" in notes
    plain, notes = make_config({})
    assert (plain.use_gpu, plain.gpu_memory_limit, plain.batch_size, plain.workers, notes) == (
        False, 0.75, None, None, [])
    # the profile never cancels a given flag
    low, notes = make_config({"profile": "low", "use_gpu": True}, profile_settings("low"))
    assert low.use_gpu and "--use_gpu True given: kept over profile low's False" in notes


def test_one_device_plan_from_the_flag_the_limit_and_the_cards():
    from gpu_memory import plan_devices

    cards = [Card("Fake A", 24), Card("Fake B", 24)]
    plan = plan_devices(True, 0.6, cards=cards)
    assert plan.use_gpu and plan.cards == 2 and plan.memory_limit == 0.6
    assert plan.description == "devices: 2 GPU(s): Fake A (24 GB), Fake B (24 GB); memory limit 60% of each card"
    assert [plan.worker_device(worker, 4) for worker in range(4)] == [(0, 2), (1, 2), (0, 2), (1, 2)]
    alone = plan_devices(True, 0.75, cards=[Card("Fake", 8)])
    assert alone.worker_device(2, 3) == (0, 3)  # three workers share the one card's limit
    none_found = plan_devices(True, 0.75, cards=[])
    assert not none_found.use_gpu and "no CUDA device was found" in none_found.description
    assert plan_devices(False, 0.75, cards=cards).worker_device(1, 2) == (0, 1)
    assert plan_devices(True, 0.75, backend="ray").use_gpu  # the cluster places the GPUs
