"""Installed like any Python tool: `pip install .` gives an `audio-processing` command that runs outside the
checkout. The new environment reuses this one's packages (a .pth file) instead of downloading them again."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig

import pytest

from conftest import ROOT, data

pytestmark = pytest.mark.e2e


def test_pip_install_gives_the_audio_processing_command(tmp_path):
    source = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    with open(f"{purelib}/dependencies.pth", "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")  # this environment's packages, pip included
    install = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index",
                              "--no-build-isolation", "--no-deps", str(source)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    command = venv / "bin" / "audio-processing"

    help_text = subprocess.run([command, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert help_text.returncode == 0 and help_text.stdout.startswith("usage: audio-processing ")

    output = tmp_path / "out"
    run = subprocess.run([command, "--input", data("librivox/sense_and_sensibility_01_austen_64kb-0880.flac"),
                          "--output", output, "--steps", "split", "vad", "--chunk_duration", "1", "--workers", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all("speech" in record["outputs"] for record in records)  # 2.99 s in 1 s parts
    where = subprocess.run([venv / "bin" / "python", "-c", "import audio_processing; print(audio_processing.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(purelib)  # the installed copy ran, not the checkout
