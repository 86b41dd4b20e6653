"""Where a run writes inside --output, stated once: the run's own files, the hidden work folder (run lock, scratch
space), each input's reports, and file names that fit the file system. Input folders are named (batch/jobs.py) so
that none can be one of these names."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import time
from pathlib import Path

LOG = "audio_processing.log"
MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
HTML_REPORT = "report.html"
CONFIG = "config.toml"
WORK = ".audio_processing"  # hidden: no input's folder starts with '.'
UTTERANCES = "utterances"  # utterances/<file key>/<speaker>/<stem>_<nnnnn>.wav and the audiofolder metadata
UTTERANCE_MANIFEST = "utterances.jsonl"  # the NeMo manifest of every utterance
AUDIOFOLDER_METADATA = "metadata.jsonl"  # in utterances/: what Hugging Face's audiofolder loader reads
RUN_NAMES = (LOG, MANIFEST, SUMMARY, HTML_REPORT, CONFIG, WORK, UTTERANCES, UTTERANCE_MANIFEST)

REPORT_JSON, REPORT_TXT, TIMELINE = "report.json", "report.txt", "timeline.png"  # in each input's folder
FILE_REPORTS = (REPORT_JSON, REPORT_TXT, TIMELINE)

NAME_MAX = 255  # bytes in one path component on Linux and macOS file systems


def scratch_root(output: Path) -> Path:
    return output / WORK / "scratch"


def remove(output: Path, path: Path) -> None:
    """The one way the tool deletes: a file, or a folder with what it holds, that must resolve inside the output
    folder (whatever names the inputs have); anything else is a bug, refused loudly."""
    if not path.resolve().is_relative_to(output.resolve()) or path.resolve() == output.resolve():
        raise RuntimeError(f"refusing to delete {path}: not inside the output folder {output}")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fitting_name(stem: str, suffix: str) -> str:
    """stem + suffix, with the stem cut (and a short hash added, so cut names stay distinct) where the whole would
    be longer than a file name may be: a legal 250-byte input name must not fail on its `<stem>.exclusive.rttm`."""
    name = stem + suffix
    if len(name.encode()) <= NAME_MAX:
        return name
    tag = "~" + hashlib.sha256(stem.encode()).hexdigest()[:8]
    room = NAME_MAX - len((tag + suffix).encode())
    cut = stem.encode()[:room].decode(errors="ignore")  # never half a UTF-8 character
    return cut + tag + suffix


def whole_file_name(file_id: str, pattern: str) -> str:
    """A stage's whole-file output, declared as "<stem>.rttm", named for one input: "interview.rttm"."""
    return fitting_name(file_id, pattern.removeprefix("<stem>"))


def _holder(descriptor: int) -> str:
    """The pid the lock holder wrote; it writes it just after taking the lock (so wait a moment for it), over
    the pid of a run that has ended (so only a living process counts)."""
    for _ in range(40):
        text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        if text.isdigit() and _alive(int(text)):
            return text
        time.sleep(0.05)
    return "unknown"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputInUse(Exception):
    """Another run holds the output folder."""


def lock_output(output: Path) -> int:
    """Take the output folder for this run: a second run on it is refused at once with the first run's pid. The
    lock is the kernel's (flock), so a run that is killed never leaves it stuck. Returns the descriptor, held
    open (and so locked) until the process ends."""
    (output / WORK).mkdir(parents=True, exist_ok=True)
    descriptor = os.open(output / WORK / "lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        holder = _holder(descriptor)
        os.close(descriptor)
        raise OutputInUse(f"{output} is in use by another run (pid {holder}); wait for it to end or choose "
                          "another --output") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor
