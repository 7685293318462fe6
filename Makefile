# Volley developer tasks. `make install` sets up .venv; `make test` runs every test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTO_OUT := server/volley/_proto
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install build proto proto-check lint format typecheck test serve bench clean

$(BIN)/volley: pyproject.toml setup.py server/volley/scheduler/_batchcore_c.pyx
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/volley

install: $(BIN)/volley

build: install
	$(BIN)/python setup.py -q build_ext --inplace

proto: install
	$(BIN)/python protos/generate.py $(PROTO_OUT)

proto-check: proto
	git diff --exit-code -- $(PROTO_OUT)
	@test -z "$$(git status --porcelain -- $(PROTO_OUT))" || (echo "generated code is stale: run make proto and commit"; exit 1)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=server $(BIN)/lint-imports --no-cache --no-logo

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

# tests/compat loads tritonclient, whose protobuf package clashes with Volley's: own process.
test: install
	$(BIN)/pytest -q tests --ignore=tests/compat
	$(BIN)/pytest -q tests/compat

serve: install
	$(BIN)/volley serve --model-repository model_repository

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf build $(VENV) server/*.egg-info server/volley/scheduler/*.so server/volley/scheduler/*.c

# Deployment files: render the Helm chart and validate it, the KServe manifests and the
# Dockerfiles offline (tests/unit/deploy); lint the Dockerfiles; helm lint where helm exists.
.PHONY: deploy-check
deploy-check: install
	$(BIN)/pytest -q tests/unit/deploy -p no:cacheprovider
	$(BIN)/hadolint Dockerfile Dockerfile.gpu
	@if command -v helm >/dev/null 2>&1; then helm lint --strict deploy/helm/volley; \
	else echo "helm not installed: the chart was rendered by deploy/helm/render_offline.py"; fi
