# Two commands do all the set-up on a fresh machine:
#   make reproduce   regenerate every run, figure, table and notebook (PROFILE=cpu|paper|smoke)
#   make test        the test suite, nbval over the committed notebooks included
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
SEEDS ?= 0
WORKERS ?= 2
export HTNET_DATA ?= $(if $(wildcard ../shared/htnet-data),$(abspath ../shared/htnet-data),data)

.PHONY: venv test reproduce train lab book clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[notebooks,cluster,test,book]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(VENV)/.installed

NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

test: venv
	$(BIN)/python -m pytest tests notebooks $(NBVAL)

train: venv
	for s in $(SEEDS); do $(BIN)/htnet train --profile $(PROFILE) --seed $$s --workers $(WORKERS) || exit 1; done

# ARGS pass to htnetlib.reproduce: --plan, --stored-only, --allow-slow, --budget-hours H, --only 04 05
# LAUNCHER=slurm|local first makes the profile's missing runs as jobs (htnet grid), then renders
reproduce: venv
	$(if $(LAUNCHER),$(BIN)/htnet grid --profile $(PROFILE) --launcher $(LAUNCHER) &&) \
	$(BIN)/python -m htnetlib.reproduce --profile $(PROFILE) $(ARGS)

lab: venv
	$(BIN)/jupyter lab notebooks/

# the README, docs/ and the committed notebooks as executed, as a Jupyter Book (nothing is run;
# seconds): open _build/book/index.html. Installs the book extra first where it is missing.
book: venv
	@$(BIN)/python -c "import jupyter_book, latex2mathml" 2>/dev/null || $(BIN)/pip install -q -e '.[book]'
	$(BIN)/python -m htnetlib.cli.book --out _build/book

clean-venv:
	rm -rf $(VENV)
