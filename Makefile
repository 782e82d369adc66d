# Thin targets: each one calls mlcloud or a script. `make run` and `make test` do all set-up.
VENV    ?= .venv
PY      := $(VENV)/bin/python
MLCLOUD := $(VENV)/bin/mlcloud
PYTEST_ARGS ?=
export MLCLOUD_STATE_DIR ?= $(CURDIR)/.state

.PHONY: run check test test-aarch64 bench soak models images system-deps venv clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	bash deploy/system-deps.sh

# Builds the bundles; pushes them when a Bindle server answers (`mlcloud up` pushes them otherwise).
models: venv
	$(MLCLOUD) models build
	@$(MLCLOUD) bindle search >/dev/null 2>&1 && $(MLCLOUD) models push || echo "models: no Bindle server answers yet; \`mlcloud up\` pushes the bundles when it starts"

images: venv
	$(PY) -m pip install -q -e '.[images]'
	$(MLCLOUD) models images

run: venv system-deps models
	$(MLCLOUD) up --app deploy/app.yaml

# Lint and type-check (settings in pyproject.toml); `test` runs it first, so CI fails on either.
check: venv
	$(PY) -m ruff check .
	$(PY) -m mypy

test: check system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Issue 18: an emulated arm64 Debian 12 board (tests/aarch64: debootstrap and qemu-user-static,
# the root cached in $(MLCLOUD_STATE_DIR)/aarch64) runs install.sh and serves through this lattice.
# Needs root; opt-in, not part of `test` (docs/deploy.md has its time).
test-aarch64: venv models
	MLCLOUD_AARCH64_ROOT="$$(bash tests/aarch64/emulated-root.sh)" \
		$(PY) -m pytest -p no:cacheprovider -s --durations=0 $(PYTEST_ARGS) tests/aarch64

# Issue 19's targets table comes last. The framework peers are off by default; they need the package
# index once (installed into .state/bench-peers): `make bench BENCH_ARGS="--peers mlserver,bentoml"`.
BENCH_ARGS ?=
bench: venv system-deps models
	$(MLCLOUD) bench $(BENCH_ARGS)

# Issue 15's 10-minute soak: kills and model swaps under load (docs/reliability.md); `make test`
# runs a 40 s form (tests/chaos/test_soak.py).
soak: venv system-deps models
	$(MLCLOUD) chaos

clean:
	rm -rf .state models/build
