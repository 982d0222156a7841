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

.PHONY: venv render plan lint fmt engine double-image test test-unit stack-up stack-down \
        stack-status smoke demo bench-up bench-client clean

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

test-unit: venv
	$(VENV)/bin/pytest -m "not docker"

test: lint engine double-image
	$(VENV)/bin/pytest

stack-up: venv
	$(KIT) up $(STACK)
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

bench-client: venv
	bash bench/setup_evalscope.sh
	$(VENV)/bin/python bench/client_speed.py -n 8000

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
