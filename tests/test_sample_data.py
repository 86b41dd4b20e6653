"""Test recordings by reference: the registry, the resolver's search order, and the download path against a real
HTTP server on 127.0.0.1 (the upstream hosts are not reachable here, the code that talks to them is the same)."""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path

import pytest
import soundfile as sf

from conftest import ROOT, data
from sample_data import (DATA_ENV, SHARED_DATA, DataError, DataStore, Registry, file_sha256, samples_sha256)


def test_every_registered_recording_is_in_the_shared_data_with_its_checksum():
    """All the tests' recordings resolve from ../shared/data, byte for byte what the registry says. The full
    music track is the one file only fetched: the generator of the conv3 conversations mixes it in."""
    registry = Registry.load()
    store = DataStore(registry, search_paths=[SHARED_DATA], cache=Path("/nonexistent"))
    missing = [name for name in registry.names() if not (SHARED_DATA / name).is_file()]
    assert missing == ["noise/vibe_ace_full.ogg"]
    for name in registry.names():
        if name not in missing:
            assert store.resolve(name) == SHARED_DATA / name
    assert all(entry.source or entry.derive == "conversation" for entry in registry.entries.values())
    assert len(registry.names("librispeech_speakers/*/*.flac")) == 100


def test_git_holds_no_recording_and_no_annotation():
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    suffixes = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", ".rttm", ".stm", ".uem", ".lab"}
    assert [name for name in tracked.splitlines() if Path(name).suffix.lower() in suffixes] == []


@pytest.fixture
def upstream(tmp_path):
    """A folder served over HTTP on 127.0.0.1, and a registry whose one source points at it."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def registry(**fields) -> Registry:
        text = (f'[sources.local]\nrepository = "local/test"\ncommit = "0"\nlicence = "MIT"\nattribution = "test"\n'
                f'base_url = "http://127.0.0.1:{server.server_address[1]}/"\n\n[files]\n"demo/speech.flac" = {{ '
                + ", ".join(f'{key} = "{value}"' for key, value in fields.items()) + " }\n")
        path = tmp_path / "registry.toml"
        path.write_text(text)
        return Registry.load(path)

    yield folder, registry
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_download_is_checked_and_derived_into_the_cache(upstream, tmp_path):
    """The upstream WAV is fetched, checked, turned into FLAC with the same samples; then resolve finds it."""
    folder, make_registry = upstream
    used = data("pyannote_sample/sample.flac")
    samples, rate = sf.read(used, dtype="int16")
    sf.write(folder / "sample.wav", samples, rate, subtype="PCM_16")
    registry = make_registry(source="local", path="sample.wav", derive="flac", sha256="0" * 64,
                             upstream_sha256=file_sha256(folder / "sample.wav"), samples_sha256=samples_sha256(used))
    store = DataStore(registry, search_paths=[], cache=tmp_path / "cache")
    with pytest.raises(DataError):
        store.resolve("demo/speech.flac")  # resolve never downloads
    made = store.fetch("demo/speech.flac")
    assert made == tmp_path / "cache" / "demo" / "speech.flac"
    assert sf.info(made).format == "FLAC" and (sf.read(made, dtype="int16")[0] == samples).all()
    assert DataStore(registry, search_paths=[], cache=tmp_path / "cache").resolve("demo/speech.flac") == made
    assert [p.name for p in made.parent.iterdir()] == ["speech.flac"]  # no temporary file left


def test_a_download_with_a_wrong_checksum_leaves_nothing(upstream, tmp_path):
    folder, make_registry = upstream
    (folder / "sample.wav").write_bytes(b"RIFF not what the registry says")
    registry = make_registry(source="local", path="sample.wav", derive="flac", sha256="0" * 64,
                             upstream_sha256="1" * 64)
    store = DataStore(registry, search_paths=[], cache=tmp_path / "cache")
    with pytest.raises(DataError, match=r"demo/speech.flac: download from http://127.0.0.1:\d+/sample.wav failed "
                                        r"its checksum check"):
        store.fetch("demo/speech.flac")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_a_derived_file_that_does_not_match_is_not_kept(upstream, tmp_path):
    folder, make_registry = upstream
    sf.write(folder / "sample.wav", sf.read(data("falcon/test.flac"), dtype="int16")[0], 16000, subtype="PCM_16")
    registry = make_registry(source="local", path="sample.wav", derive="flac", sha256="0" * 64,
                             upstream_sha256=file_sha256(folder / "sample.wav"), samples_sha256="2" * 64)
    store = DataStore(registry, search_paths=[], cache=tmp_path / "cache")
    with pytest.raises(DataError, match="does not match the registry's checksum"):
        store.fetch("demo/speech.flac")
    assert not (tmp_path / "cache" / "demo" / "speech.flac").exists()
    assert list((tmp_path / "cache" / "demo").iterdir()) == []


def test_search_order_and_the_message_when_a_file_is_nowhere(tmp_path, monkeypatch):
    registry = Registry.load()
    name = "falcon/test.rttm"
    mine = tmp_path / "mine"
    (mine / "falcon").mkdir(parents=True)
    (mine / name).write_bytes((SHARED_DATA / name).read_bytes())
    monkeypatch.setenv(DATA_ENV, str(mine))
    assert DataStore(registry).resolve(name) == mine / name  # the variable comes before ../shared/data
    (mine / name).write_text("SPEAKER edited\n")
    assert DataStore(registry).resolve(name) == SHARED_DATA / name  # a copy that differs is passed over

    store = DataStore(registry, search_paths=[mine], cache=tmp_path / "cache")
    with pytest.raises(DataError) as error:
        store.resolve(name)
    message = str(error.value)
    assert "\n" not in message and message.startswith("falcon/test.rttm: not found in ")
    assert str(mine) in message and str(tmp_path / "cache") in message and "differs from the registry" in message
    assert DATA_ENV in message and "make data" in message


def test_the_command_line_prints_paths_and_fails_in_one_line():
    import subprocess

    found = subprocess.run([sys.executable, "-m", "sample_data", "path", "jfk/jfk.flac"], cwd=ROOT,
                           capture_output=True, text=True)
    assert found.returncode == 0 and Path(found.stdout.strip()) == data("jfk/jfk.flac")
    unknown = subprocess.run([sys.executable, "-m", "sample_data", "path", "jfk/nope.flac"], cwd=ROOT,
                             capture_output=True, text=True)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == ["error: jfk/nope.flac: not a registered recording "
                                                   "(see sample_data/registry.toml)"]
