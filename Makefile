# Two entry points (README Quick start): `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-slurm bench-pulsar system-deps pulsar-venv diracx-venv psik-venv clean

$(STAMP): pyproject.toml
	@# Debian/Ubuntu ship venv separately; install it when we can (root), else say so.
	$(PYTHON) -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); } || \
		{ echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/jobgate serve

# System packages the tests use; installed only when running as root (CI), else those
# tests skip with a reason.
# podman, runc and a static busybox run the container tests (a local image, no registry).
# slurm-wlm and munge: a single-node Slurm cluster for tests/slurm (the tests start and
# stop its daemons).
# rsync: Snakemake's fs storage plugin copies with it (tests/engines).
# gridengine-*: a single-node Grid Engine cluster for tests/gridengine. Their install asks
# for the master host and cell (debconf), so those answers are given first; without them
# the packages install no cell.
# rc: the shell psik scripts without #! run under (tests/psik, and real psik_api's jobs).
# chromium: the dashboard's page tests (tests/dashboard, driven by Playwright's Python package).
# debootstrap and podman-compose: tests/image builds the container image from a Debian root
# made offline and runs compose.yaml with it.
IMAGE_PKGS := debootstrap:debootstrap podman-compose:podman-compose
SYSTEM_PKGS := bwrap:bubblewrap podman:podman runc:runc busybox:busybox-static \
	slurmctld:slurm-wlm slurmd:slurm-wlm munged:munge \
	sge_qmaster:gridengine-master sge_execd:gridengine-exec qconf:gridengine-client \
	chromium:chromium rsync:rsync rabbitmq-server:rabbitmq-server rc:rc wrk:wrk $(IMAGE_PKGS)
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
		missing=""; \
		for pair in $(SYSTEM_PKGS); do \
			command -v $${pair%%:*} >/dev/null || [ -x /usr/sbin/$${pair%%:*} ] || \
				missing="$$missing $${pair#*:}"; \
		done; \
		if [ -n "$$missing" ]; then \
			case "$$missing" in *gridengine*) \
				host=$$(hostname); \
				printf '%s\n' \
					"gridengine-common shared/gridenginemaster string $$host" \
					"gridengine-common shared/gridenginecell string default" \
					"gridengine-common shared/gridengineconfig boolean true" \
					"gridengine-client shared/gridenginemaster string $$host" \
					"gridengine-master shared/gridenginemaster string $$host" \
					| debconf-set-selections;; \
			esac; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
	fi

# Galaxy Pulsar for tests/pulsar and the pulsar contract sites: its own venv (its galaxy-*
# dependencies stay out of jobgate's); kombu for its message-queue path. rabbitmq-server
# (SYSTEM_PKGS) is the broker; the tests start it when it is not running.
PULSAR_VENV := .venv-pulsar
$(PULSAR_VENV)/.installed:
	$(PYTHON) -m venv $(PULSAR_VENV)
	$(PULSAR_VENV)/bin/pip install --quiet 'pulsar-app[web]==0.16.0' 'kombu==5.7.0'
	touch $@
pulsar-venv: $(PULSAR_VENV)/.installed

# DiracX's own client (diracx-client, diracx-api, the `dirac` CLI) for tests/diracx: its
# own venv, as its users have it; the tests run it against a live jobgate.
DIRACX_VENV := .venv-diracx
$(DIRACX_VENV)/.installed:
	$(PYTHON) -m venv $(DIRACX_VENV)
	$(DIRACX_VENV)/bin/pip install --quiet 'diracx-client==0.7.0' 'diracx-api==0.7.0' \
		'diracx-cli==0.7.0'
	touch $@
diracx-venv: $(DIRACX_VENV)/.installed

# A real psik_api 1.0.0 server for tests/psik to compare answers with: its own venv (its
# psik and certified dependencies stay out of jobgate's); it needs pydantic below 2.12.
PSIK_VENV := .venv-psik
$(PSIK_VENV)/.installed:
	$(PYTHON) -m venv $(PSIK_VENV)
	$(PSIK_VENV)/bin/pip install --quiet 'psik_api==1.0.0' 'pydantic<2.12'
	touch $@
psik-venv: $(PSIK_VENV)/.installed

# The suite runs in parallel (pytest-xdist): most tests wait on servers and subprocesses,
# so more workers than cores pay off; each scheduler's tests stay on one worker.
TEST_WORKERS ?= 3
test: $(STAMP) system-deps pulsar-venv diracx-venv psik-venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --quiet .
	$(BIN)/mypy
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25

bench: $(STAMP)
	$(BIN)/python bench/tes_bench.py

bench-slurm: $(STAMP) system-deps
	$(BIN)/python bench/slurm_bench.py

bench-pulsar: $(STAMP) pulsar-venv
	$(BIN)/python bench/pulsar_bench.py

clean:
	rm -rf $(VENV) $(PULSAR_VENV) $(DIRACX_VENV) $(PSIK_VENV) .pytest_cache .mypy_cache .ruff_cache
