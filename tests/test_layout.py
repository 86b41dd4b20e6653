"""The architecture as floors: a module imports only from its own floor or below, never in a cycle, and the main
process (which only coordinates) never imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, data

# Lowest first. Within a floor, imports go one way (no cycles); between floors, only downwards.
FLOORS = [
    ["options", "layout", "audio_io", "gpu_memory", "loaders.asr", "loaders.deepfilternet", "loaders.dnsmos",
     "loaders.speaker_embedding", "loaders.whisper_convert", "reporting.logs"],
    ["loaders.model_store"],
    ["model_manager"],
    ["stages.base", "stages.split", "stages.denoise", "stages.vad", "stages.diarize", "stages.transcribe", "stages.utterances",
     "stages"],
    ["config"],
    ["reporting.reports", "reporting.timeline", "reporting.html_report"],
    ["batch.jobs", "batch.resume", "batch.pipeline", "batch.worker", "batch.shared_models", "batch.local_pool", "batch.ray_pool",
     "batch.run"],
    ["frontends.profiles", "frontends.dry_run", "frontends.interactive"],
    ["audio_processing"],
]
PACKAGES = ("loaders", "stages", "batch", "reporting", "frontends")


def product_modules() -> dict[str, Path]:
    modules = {"stages": ROOT / "stages" / "__init__.py"}
    for path in ROOT.glob("*.py"):
        modules[path.stem] = path
    for package in PACKAGES:
        modules.update({f"{package}.{path.stem}": path for path in (ROOT / package).glob("*.py")
                        if path.stem != "__init__"})
    return modules


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                 else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            if name in known:
                found.add(name)
            elif isinstance(node, ast.ImportFrom):  # from package import module
                found.update(f"{name}.{alias.name}" for alias in node.names if f"{name}.{alias.name}" in known)
    return found


def test_every_module_sits_on_a_floor_and_imports_only_downwards():
    modules = product_modules()
    floor = {name: level for level, names in enumerate(FLOORS) for name in names}
    assert set(modules) == set(floor), "a module not on any floor, or a floor naming a module that is gone"
    upward = [(name, used) for name, path in modules.items() for used in imports(path, modules)
              if floor[used] > floor[name]]
    assert upward == []


def test_no_import_cycles():
    modules = product_modules()
    graph = {name: imports(path, modules) - {name} for name, path in modules.items()}
    visiting, done = set(), set()

    def visit(name: str, trail: list[str]) -> None:
        if name in done:
            return
        assert name not in visiting, " -> ".join(trail + [name])
        visiting.add(name)
        for used in graph[name]:
            visit(used, trail + [name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])


PROBE = """
import io, sys
sys.path.insert(0, sys.argv[1])
import audio_processing
sys.stdin = io.StringIO(sys.argv[3])
code = audio_processing.main(sys.argv[4:])
print("torch imported" if "torch" in sys.modules else "no torch", code)
"""


@pytest.mark.parametrize("arguments, answers, code", [
    (["--dry_run", "--steps", "split", "vad", "diar"], "", 0),
    (["--print_config"], "", 0),
    (["--interactive"], "\n\nsplit vad diar\n\n\n\nn\n1\nn\n", 1),  # every question, then "do not run"
    (["--steps", "split", "vad", "--chunk_duration", "4", "--workers", "1", "--quiet"], "", 0),  # a real run
], ids=["dry_run", "print_config", "interactive", "run"])
@pytest.mark.e2e
def test_the_main_process_never_imports_torch(tmp_path, models_dir, arguments, answers, code):
    """Only workers compute: the coordinator stays small (38 MB instead of 511 MB with torch, OPTIMIZATION.md)."""
    command = [sys.executable, "-c", PROBE, str(ROOT), "", answers, "--input", str(data("jfk/jfk.flac")),
               "--output", str(tmp_path / "out"), "--models_dir", str(models_dir), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.stdout.splitlines()[-1] == f"no torch {code}", result.stdout + result.stderr
