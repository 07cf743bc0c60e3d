# HishamOS: the one entry point. Every target bootstraps what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_STAMP := protos/python/.generated
PROTO_SOURCES := $(shell find protos/hishamos -name '*.proto')
PACKAGES := libs/kit libs/devstack protos/python services/identity services/agents services/projects services/knowledge

.PHONY: up test proto lint fmt migrate bench lock clean

$(STAMP): requirements.lock $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@echo "==> preparing virtualenv $(VENV) (pinned dependencies from requirements.lock)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		--config-settings editable_mode=compat $(foreach p,$(PACKAGES),-e $(p))
	@touch $@

$(PROTO_STAMP): $(STAMP) $(PROTO_SOURCES) tools/protogen.py
	@$(BIN)/python tools/protogen.py
	@touch $@

## proto: lint the API with buf and generate Python stubs and Envoy's descriptor set
proto: $(STAMP)
	@$(BIN)/python tools/protogen.py
	@touch $(PROTO_STAMP)

## up: run the whole platform (embedded PostgreSQL, four services, Envoy) until Ctrl-C
up: $(PROTO_STAMP)
	@$(BIN)/python -m hishamos_devstack up $(UP_ARGS)

## test: lint, then the whole test suite against real PostgreSQL, real servers and real Envoy
test: lint
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint: ruff (lint + format check), mypy, buf lint
lint: $(PROTO_STAMP)
	@echo "==> ruff, mypy"
	@$(BIN)/ruff check --quiet .
	@$(BIN)/ruff format --check --quiet .
	@$(BIN)/mypy --no-error-summary

fmt: $(STAMP)
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

## migrate: apply every service's migrations on the embedded (or configured) databases
migrate: $(PROTO_STAMP)
	@$(BIN)/python -m hishamos_devstack migrate

## bench: measured figures side by side with their ceilings; writes bench/results/latest.json
##        (RATIOS="login_vs_argon2_rate …" measures only those)
bench: $(PROTO_STAMP)
	@$(BIN)/python -m bench $(RATIOS)

## lock: re-resolve requirements.in into requirements.lock
lock:
	@rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	@.lock-venv/bin/pip install --quiet -r requirements.in
	@.lock-venv/bin/pip freeze --all | grep -v '^pip==' > requirements.lock
	@rm -rf .lock-venv

clean:
	rm -rf $(VENV) build protos/python/hishamos $(PROTO_STAMP)
