# CRM suite — every developer and CI entry point. `make help` lists targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# uv comes from PATH, or is installed once into its own tools venv (never into .venv,
# which `uv sync` keeps exactly equal to uv.lock).
TOOLS := $(CURDIR)/.tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
PACKAGES := crm_platform crm_directory crm_leads crm_customers crm_sales crm_service_desk crm_marketing crm_analytics
SVC ?= leads

.PHONY: help bootstrap up down status protos proto-check proto-breaking fmt lint typecheck check test test-fast migrate migration run bench clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}'

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install -q uv

$(VENV)/.synced: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) | $(UV)
	$(UV) sync --all-packages --frozen -p $(PYTHON) -q
	@touch $@

bootstrap: $(VENV)/.synced ## create .venv with every package (editable) and dev tools from uv.lock
	@$(BIN)/pre-commit install >/dev/null 2>&1 || true

up: bootstrap ## start NATS, PostgreSQL, all seven services and demo data on loopback
	$(BIN)/python scripts/devstack.py up

down: ## stop what `make up` started
	$(BIN)/python scripts/devstack.py down

status: ## show what `make up` runs
	$(BIN)/python scripts/devstack.py status

protos: bootstrap ## buf format + lint, regenerate libs/crm-protos (pb2, pyi, grpc)
	PATH=$(CURDIR)/$(BIN):$$PATH ./scripts/gen_protos.sh

proto-check: protos ## fail if the committed stubs differ from what `make protos` generates
	@git diff --exit-code --stat -- libs/crm-protos protos || { echo "generated code is stale: run make protos and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- libs/crm-protos)" || { echo "untracked generated files: run make protos and commit"; exit 1; }

proto-breaking: bootstrap ## buf breaking against main
	cd protos && ../$(BIN)/buf breaking --against '../.git#branch=main,subdir=protos'

fmt: bootstrap ## ruff format + fix
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

lint: bootstrap ## ruff check, ruff format --check, buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd protos && ../$(BIN)/buf lint

typecheck: bootstrap ## mypy --strict on the platform and every service
	$(BIN)/mypy $(addprefix -p ,$(PACKAGES))
	$(BIN)/mypy scripts/devstack.py scripts/demo_seed.py

check: lint typecheck proto-check ## everything static

test: bootstrap check ## what CI runs: static checks, then unit, component and integration tests on real servers
	-./scripts/ensure_promtool.sh  # best effort: without root/apt the promtool checks skip, saying so
	$(BIN)/python -m pytest

test-fast: bootstrap ## tests only (set CRM_TEST_PG_URL / CRM_TEST_NATS_URL to reuse running servers)
	$(BIN)/python -m pytest -x

migrate: bootstrap ## alembic upgrade head for SVC (DB_URL from the environment)
	$(BIN)/python -m crm_$(subst -,_,$(SVC)) migrate

migration: bootstrap ## autogenerate a revision: make migration SVC=leads MSG="add x"
	$(BIN)/python scripts/new_migration.py $(SVC) "$(MSG)"

run: bootstrap ## run one service in the foreground: make run SVC=leads
	$(BIN)/python -m crm_$(subst -,_,$(SVC))

bench: bootstrap ## benchmarks under bench/ (numbers next to limits measured in the same run)
	$(BIN)/python bench/run.py

clean: ## remove caches and local state (not the venv)
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

# --- container images and the Helm chart (README "Operations → Kubernetes") ---------------
.PHONY: images chart-check
IMAGE_REGISTRY ?= crm
IMAGE_TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
IMAGE_SERVICES ?= directory leads customers sales service-desk marketing analytics

images: ## docker build one image per service: $(IMAGE_REGISTRY)/crm-<service>:$(IMAGE_TAG)
	@if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then \
	  echo "make images: no Docker engine reachable (docker info failed); nothing built."; \
	  echo "The Dockerfiles are still linted and their install steps run by tests/deploy/test_images.py."; \
	  exit 1; \
	fi
	@for s in $(IMAGE_SERVICES); do \
	  echo "building $(IMAGE_REGISTRY)/crm-$$s:$(IMAGE_TAG)"; \
	  docker build -f services/$$s/Dockerfile -t $(IMAGE_REGISTRY)/crm-$$s:$(IMAGE_TAG) . || exit 1; \
	done

chart-check: bootstrap ## Dockerfiles + Helm chart: hadolint, helm lint/render (helm-python-sdk), k8s schemas
	$(BIN)/python -m pytest tests/deploy/test_images.py tests/deploy/test_chart.py -q
