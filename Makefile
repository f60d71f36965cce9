# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv on first use and install the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit bench docs clean redis-server

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cli,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bitrix-results demo

lint: $(STAMP)
	$(VENV)/bin/ruff format --check bitrix_results tests benchmarks tools
	$(VENV)/bin/ruff check bitrix_results tests benchmarks tools

types: $(STAMP)
	$(VENV)/bin/mypy --strict bitrix_results

# The Redis backend is tested on a real redis-server (tests/redis_servers.py
# starts it); install the Debian package when it is missing. CI runs as root.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
	  else sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; fi; }

unit: $(STAMP) redis-server
	$(VENV)/bin/pytest -q

test: lint types unit docs

bench: $(STAMP) redis-server
	$(PY) benchmarks/bench_throughput.py
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/bench_bulk.py
	$(PY) benchmarks/bench_scaleout.py

# The site, into site/. --strict: a broken link or a stale reference fails the build.
docs: $(STAMP)
	$(VENV)/bin/ruff format --check docs/scripts
	$(VENV)/bin/ruff check docs/scripts
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
