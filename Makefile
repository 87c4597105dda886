# Two commands matter: `make demo` and `make test`. Both create or reuse .venv and
# install the pinned dependencies from constraints.txt, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= .demo
PEOPLE ?= 20000

.PHONY: install browser demo test bench clean

install: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/zerocert demo --out $(DEMO) --people $(PEOPLE)

browser:  # headless Chromium and a CJK font for the report test (Debian packages, as root)
	.ci/browser

test: install browser
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/zerocert bench --people $(or $(BENCH_PEOPLE),3000000)

clean:
	rm -rf $(VENV) $(DEMO) *.egg-info
