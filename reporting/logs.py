"""The run's log: everything in <output>/audio_processing.log, warnings on the console without tearing the
progress bars."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

from layout import LOG

LOG_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(message)s"


def setup_logging(output: Path, verbose: bool = False, quiet: bool = False) -> None:
    """The detailed log goes to <output>/audio_processing.log; the console gets warnings (all with -v)."""
    logging.raiseExceptions = False  # a log line that cannot be written (a full disk) must not print a traceback
    logger = logging.getLogger("audio_processing")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(output / LOG, encoding="utf-8")
    file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(file_handler)
    console = TqdmHandler()
    console.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(console)


class TqdmHandler(logging.Handler):
    """Console lines written through tqdm, so they do not tear the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)
