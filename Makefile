# buildkite-fanout — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FUNCTIONS := $(notdir $(patsubst %/function.yaml,%,$(wildcard functions/*/function.yaml)))
PYTEST_ARGS ?=

.PHONY: help venv lint test demo run-local package bench clean $(addprefix deploy-,$(FUNCTIONS))

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z%_-]+:.*## / {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  deploy-<name>    Deploy one function's code with gcloud (DRY_RUN=1 prints the commands; PUBLIC_INGRESS, TRACE_EXPORTER as Terraform's public_ingress, trace_exporter); names: $(FUNCTIONS)"

$(VENV)/.installed: requirements-dev.txt shared/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed ## Create .venv and install everything the project needs

lint: venv ## ruff check, ruff format --check and mypy strict (each function folder on its own: they all have a main.py)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@for fn in $(FUNCTIONS); do echo "mypy functions/$$fn"; $(VENV)/bin/mypy functions/$$fn || exit 1; done

test: venv lint chromium ## Install from scratch if needed, lint, then run every test (starts and stops the emulators; installs chromium if missing)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Debian's headless Chromium renders the report page in its test; installed once, when missing.
CHROMIUM_PACKAGES := chromium fonts-dejavu-core
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: chromium
chromium: ## Install Debian's chromium (for the report page's rendering test) if it is missing
	@command -v chromium >/dev/null || { echo "installing $(CHROMIUM_PACKAGES) with apt-get"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CHROMIUM_PACKAGES); }

demo: venv ## The main job: the whole fan-out on local emulators, sample webhooks in, a report and a timeline per webhook out
	$(PY) -m tools.local.stack demo

run-local: venv ## Keep the local stack up and print how to send it a webhook
	$(PY) -m tools.local.stack run

package: venv ## Build build/<name>/ and build/<name>.zip for every function (main.py, function.json, requirements.txt, vendored buildkite_events; TRACE_EXPORTER adds its exporter), build/manifests.json and build/first/<name>.zip (once) for Terraform
	$(PY) -m tools.ops.deploy package $(FUNCTIONS)

deploy-%: venv ## Deploy one function's code (gen2) with its manifest's settings, as the build account; never rewrites build/first/
	$(PY) -m tools.ops.deploy deploy $*

bench: venv ## Cold start, per-event overhead, Firestore state, throughput and end-to-end latency, each against a bare baseline
	$(PY) -m tools.perf.bench

clean: ## Remove build output and caches (keeps .venv)
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .stack

.PHONY: report backfill
report: venv ## Pipeline analytics (queries/*.sql) of BIGQUERY_PROJECT's dataset, else a seeded local bqemulator: text, build/report/index.html, PNGs
	$(PY) -m tools.ops.report $(REPORT_ARGS)

backfill: venv ## Replay the archive (ARCHIVE_BUCKET, ARCHIVE_PREFIX) into BIGQUERY_PROJECT's dataset; BACKFILL_ARGS='--since 2025-06-01 --until ...'
	$(PY) -m tools.ops.backfill $(BACKFILL_ARGS)

# --- Terraform: offline checks of terraform/ (tools/terraform; see terraform/README.md) ----
.PHONY: terraform-check terraform-schema

terraform-check: venv ## terraform fmt, validate, test (mocked google and time providers), checkov and the stand-in schema's coverage, offline
	$(PY) -m tools.terraform.check $(TERRAFORM_CHECKS)

terraform-schema: venv ## Regenerate the stand-in google provider's schema from npm @cdktf/provider-google
	$(PY) -m tools.terraform.schema

.PHONY: verify-deploy
verify-deploy: venv ## After terraform apply: check PROJECT=<id> read-only with gcloud (functions, filters, DLQ grants, ingress, webhook 401)
	@test -n "$(PROJECT)" || { echo "usage: make verify-deploy PROJECT=<project id> [REGION=...] [TOPIC=...]"; exit 2; }
	$(PY) -m tools.ops.verify --project $(PROJECT)

# --- Operations and load (tools/ops/dlq/, tools/perf/load.py) -------------------------
.PHONY: dlq replay load

dlq: venv ## List dead-lettered events per function, with the reason (PROJECT=..., or PUBSUB_EMULATOR_HOST=... for the local stack)
	$(PY) -m tools.ops.dlq list $(DLQ_ARGS)

replay: venv ## Replay FUNCTION=<name>'s dead-lettered events to that function only, through its replay topic (created if missing)
	@test -n "$(FUNCTION)" || { echo "usage: make replay FUNCTION=<name> [DLQ_ARGS='--dry-run|--limit N']"; exit 2; }
	$(PY) -m tools.ops.dlq replay $(FUNCTION) $(DLQ_ARGS)

load: venv ## Drive the ingress on loopback at rising rates vs a bare functions-framework echo (LOAD_ARGS='--help')
	$(PY) -m tools.perf.load $(LOAD_ARGS)
