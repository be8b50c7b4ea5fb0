# camwatch: two commands from a fresh clone — `make run` and `make test`.
# System packages come from Debian/Ubuntu apt (installed when root; otherwise listed),
# Python packages go into .venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

# Needed to run camwatch itself: tshark/dumpcap (pyshark oracle and capture helper),
# binwalk (signature carving), tcpdump/libpcap (alternative capture backend), gcc to build the
# compiled pcap record walk (agent/capture/recwalk.c; without it a pure-Python walk is used).
RUN_DEBS  := tshark binwalk libpcap0.8 tcpdump squashfs-tools mtd-utils cpio zstd xz-utils lzop \
             libcap2-bin iproute2 gcc libc6-dev
# Needed by the test-suite: a real Prometheus and promtool, the filesystem and image builders used
# for firmware fixtures, tcpreplay for live-capture tests, Chromium for the HTML report test.
TEST_DEBS := prometheus u-boot-tools genromfs tcpreplay chromium util-linux systemd

.PHONY: run test setup setup-test sysdeps-run sysdeps-test lint typecheck unit bench fuzz clean sample

run: setup
	$(VENV)/bin/camwatch demo

test: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

setup: sysdeps-run $(VENV)/.stamp-run
setup-test: sysdeps-run sysdeps-test $(VENV)/.stamp-test

sysdeps-run:
	@sh deploy/scripts/ensure-debs.sh $(RUN_DEBS)

sysdeps-test:
	@sh deploy/scripts/ensure-debs.sh --required $(TEST_DEBS)

$(VENV)/.stamp-run: pyproject.toml agent/capture/recwalk.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	$(PY) -m agent.capture.native build
	touch $@

$(VENV)/.stamp-test: pyproject.toml $(VENV)/.stamp-run
	$(PIP) install -q -e '.[test]'
	touch $@

lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup-test $(VENV)/.stamp-bench
	$(PY) bench/run.py

$(VENV)/.stamp-bench: pyproject.toml $(VENV)/.stamp-test
	$(PIP) install -q -e '.[test,bench]'
	touch $@

# Coverage-guided fuzzing of every parser for FUZZ_SECONDS each (not part of `make test`).
FUZZ_SECONDS ?= 60
fuzz: setup-test $(VENV)/.stamp-fuzz
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

$(VENV)/.stamp-fuzz: pyproject.toml $(VENV)/.stamp-test
	$(PIP) install -q -e '.[test,fuzz]'
	touch $@

sample: setup
	$(PY) -m agent.samplegen --out agent/sample/camera_vlan.pcap

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
