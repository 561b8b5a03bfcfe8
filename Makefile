# Two commands set up a fresh machine (each installs what it needs first):
#   make demo   compress a held-out model with the shipped policy (no config, no download)
#   make test   run the test suite
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: install demo test bench

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# the CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/metacompress apply --seed 0 --overwrite
	$(VENV)/bin/metacompress inspect runs/apply-mobilenetv2-w8-d1-digits-s0 --plot runs/apply-mobilenetv2-w8-d1-digits-s0/decisions.png

test: install
	$(VENV)/bin/python -m pytest
