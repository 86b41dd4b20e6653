"""Models loaded once and shared by every CPU worker.

multiprocessing's fork server imports this module before it forks any worker (batch/local_pool.py). Told the
run's settings through an environment variable, it loads the models of the run's stages there, once (each
stage's `preload`); every worker forked afterwards, and every replacement for one that died, starts with them
in memory. Their weights sit in copy-on-write pages that no process writes, so the workers share one copy, and
a worker's start-up is a fork instead of importing torch and reading weights from disk.

CUDA cannot be forked: on a GPU the workers are spawned and each loads its own models (OPTIMIZATION.md).
"""

from __future__ import annotations

import base64
import gc
import logging
import os
import pickle
import time

VARIABLE = "AUDIO_PROCESSING_SHARED_MODELS"

log = logging.getLogger("audio_processing")


def settings(config, devices, threads: int) -> str:
    """What the fork server must load, as the value of VARIABLE (the main process's id goes with it)."""
    return base64.b64encode(pickle.dumps((config, devices, threads, os.getpid()))).decode()


def _load(value: str):
    import multiprocessing

    from batch.worker import die_with_parent, load_models, setup_process
    from layout import LOG
    from model_manager import ModelUnavailable
    from reporting.logs import LOG_FORMAT
    from stages import build_stages

    config, devices, threads, coordinator = pickle.loads(base64.b64decode(value))
    die_with_parent(coordinator)  # and the workers die with this process
    multiprocessing.current_process().name = "loader"
    started = time.perf_counter()
    log_file = os.open(config.output / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_file, 2)  # what C libraries print goes to the log, as in a worker
    os.close(log_file)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    # One thread while loading: a forked worker cannot use a pool of OpenMP threads made before the fork.
    setup_process(1, handler)
    models = load_models(config, devices, threads, device_index=0, processes_per_device=1)
    for stage in build_stages(config.steps, config, models):
        try:
            stage.preload()
        except ModelUnavailable:
            pass  # cached: each file's report says it, as without sharing
    gc.freeze()  # the collector never writes to the shared objects' pages
    log.info("models shared by the workers loaded in %.1f s", time.perf_counter() - started)
    return models


_loaded = None  # (settings, the shared ModelManager), in the fork server and the workers forked from it
if os.environ.get(VARIABLE):
    try:
        _loaded = (os.environ[VARIABLE], _load(os.environ[VARIABLE]))
    except Exception:  # noqa: BLE001 - each worker then loads its own models
        log.exception("loading the shared models failed")


def shared(value: str):
    """The models loaded for these settings, or None (this process was not forked from a loader that had them)."""
    return _loaded[1] if _loaded is not None and _loaded[0] == value else None
