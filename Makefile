# Two entry points (README Quick start): `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-slurm system-deps clean

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
# slurmctld/munged: a single-node Slurm cluster for tests/slurm (the tests run its daemons).
SYSTEM_PKGS := bwrap:bubblewrap podman:podman runc:runc busybox:busybox-static \
	slurmctld:slurm-wlm munged:munge
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
		missing=""; \
		for pair in $(SYSTEM_PKGS); do \
			command -v $${pair%%:*} >/dev/null || [ -x /usr/sbin/$${pair%%:*} ] || \
				missing="$$missing $${pair#*:}"; \
		done; \
		if [ -n "$$missing" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
	fi

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --quiet .
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/tes_bench.py

bench-slurm: $(STAMP) system-deps
	$(BIN)/python bench/slurm_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
