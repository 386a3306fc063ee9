# Two commands matter: `make demo` and `make test`. Both set up what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup browser demo test check lint types imports locks-check lock unit integration e2e bench clean image image-test

# Locks (with hashes) are generated from pyproject.toml by `make lock`: requirements/runtime.txt
# for deployments, requirements/dev.txt (runtime + the dependency group `dev`) for this tree,
# requirements/bench.txt (dev + the extra `bench`: reference queues) for `make bench`.
LOCK = $(BIN)/uv pip compile pyproject.toml --universal --generate-hashes --quiet \
	--custom-compile-command "make lock"

$(STAMP): requirements/dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/mailbox-worker demo

# The end-to-end tests run beside the others, in a second pytest process (scripts/run-tests).
test: check browser
	@scripts/run-tests $(BIN)/pytest

# Debian's chromium + chromedriver for the admin-page tests (installed when absent and
# possible; the test says so visibly when they cannot be had).
browser:
	@bash scripts/ensure-chromium

check: lint types imports

# Fails when a lock no longer matches pyproject.toml (compiling again would change it).
locks-check: setup
	@scripts/check-locks "$(BIN)/uv"

lock: setup
	$(LOCK) -o requirements/runtime.txt
	$(LOCK) --group dev -o requirements/dev.txt
	$(LOCK) --group dev --extra bench -o requirements/bench.txt

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: setup
	$(BIN)/mypy

imports: setup
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

e2e: setup
	$(BIN)/pytest tests/e2e

# Benchmarks (docs/performance.md): each prints its figures and ratios and never passes or fails
# on time. Every script of BENCHES that exists runs in turn (a missing one is named and skipped);
# their PostgreSQL parts run when MAILBOX_WORKER_TEST_POSTGRES_URL is set. The bench-only
# dependencies come from requirements/bench.txt when it exists.
BENCHES = queue_throughput queue_layouts claim_scaling enqueue_http end_to_end idle_latency slow_provider \
	memory sandbox_cost gmail_transport mime_build loop_hold

bench: setup
	@if [ -f requirements/bench.txt ]; then \
		$(BIN)/python -m pip install --quiet --require-hashes -r requirements/bench.txt; fi
	@failed=""; for name in $(BENCHES); do \
		if [ -f bench/$$name.py ]; then \
			echo "== bench/$$name.py"; $(BIN)/python bench/$$name.py || failed="$$failed $$name"; \
		else echo "== bench/$$name.py: not present, skipped"; fi; \
	done; if [ -n "$$failed" ]; then echo "benchmarks that stopped with an error:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache var

# The container (docs/deploy.md): `docker build .` anywhere; here podman builds it from
# Debian's packages (scripts/image), and image-test runs the demo and `serve` inside it.
image:
	@bash scripts/image

image-test: image
	@bash scripts/image-test
