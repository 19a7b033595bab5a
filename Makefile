# The two commands of the README: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs gallery bench reproduce format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job: discover the missing terms of a predator-prey model from noisy data (UDE + SINDy).
demo: $(STAMP)
	$(BIN)/torchnde demo

# One pytest worker per core (pytest-xdist): the suite takes about half the time on CI's two.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs/_ext
	$(BIN)/ruff format --check src tests benchmarks examples docs/_ext
	$(BIN)/python -m pytest -n auto --dist worksteal --durations=20

# The documentation site (mkdocs-material, API pages from the docstrings) into site/;
# `make test` builds it too, with --strict, and runs every example in docs/ (tests/test_docs*.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

# Rerun the quick tiers behind docs/gallery/ and refresh its (downsized) figures.
gallery: $(STAMP)
	$(BIN)/python docs/_ext/gallery.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs/_ext
	$(BIN)/ruff format --check src tests benchmarks examples docs/_ext

# Side-by-side timings against torchdiffeq, torchode, scipy and (when jax installs) diffrax.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[benchmarks]"
	$(BIN)/pip install --quiet jax diffrax || echo "jax/diffrax not installed: their rows are skipped"
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.gradient_tables
	$(BIN)/python -m benchmarks.stiff
	$(BIN)/python -m benchmarks.sde
	$(BIN)/python -m benchmarks.cde
	$(BIN)/python -m benchmarks.ode_demo

# Every experiment's full tier (the papers' claims; reports under runs/), then the benchmarks.
# Exits non-zero if a claim did not reproduce (see runs/*/report.md).
reproduce: $(STAMP)
	status=0; $(BIN)/torchnde run all --out runs --no-progress || status=$$?; \
	$(MAKE) bench; exit $$status

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples docs/_ext
	$(BIN)/ruff check --fix src tests benchmarks examples docs/_ext

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info
