# Two commands matter: `make demo` and `make test`. Both create or reuse .venv and
# install the pinned dependencies from constraints.txt, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= .demo
PEOPLE ?= 20000
DEMO_PORT ?= 8080
DEMO_CELERY ?= $(DEMO)/celery
TEST_WORKERS ?= 2

.PHONY: install browser lint demo demo-ui demo-stop demo-celery test bench clean

install: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: install  # the DAGs on a synthetic city, then the demo's own Airflow UI (stop it with make demo-stop)
	$(BIN)/zerocert demo --out $(DEMO) --people $(PEOPLE)
	$(BIN)/zerocert demo --serve --out $(DEMO) --port $(DEMO_PORT)

demo-ui: install  # the Airflow UI on the demo already run (runs it first if there is none)
	$(BIN)/zerocert demo --serve --out $(DEMO) --people $(PEOPLE) --port $(DEMO_PORT)

demo-stop:  # every process the demo's UI started; checks none is left and prints the peak memory
	$(BIN)/zerocert demo --stop --out $(DEMO)

demo-celery: install  # the DAGs on Airflow's Celery executor (Redis broker, PostgreSQL metadata, two workers); stops all it started
	$(BIN)/python -m pipelines.demo_celery --out $(DEMO_CELERY) --people $(PEOPLE)

browser:  # headless Chromium and a CJK font for the report test (Debian packages, as root)
	.ci/browser

lint: install  # ruff's checks (with Airflow's AIR rules) and its formatter, configured in pyproject.toml
	$(BIN)/ruff check pipelines dags tests
	$(BIN)/ruff format --check pipelines dags tests

test: install browser lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

bench: install
	$(BIN)/zerocert bench --people $(or $(BENCH_PEOPLE),3000000)

clean:
	-test -d $(DEMO) && $(BIN)/zerocert demo --stop --out $(DEMO)
	rm -rf $(VENV) $(DEMO) *.egg-info
