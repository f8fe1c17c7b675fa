# dao: two commands do all set-up on a fresh Debian/Ubuntu machine with Python 3.11+.
#   make demo   create .venv, install dao, run the main job and print what it achieved
#   make test   install what the tests need (system packages too) and run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SRC    := pyproject.toml $(wildcard kernels_ext/*.c kernels_ext/*.h)

.PHONY: demo test lint bench sysdeps clean

$(BIN)/python:
	scripts/system-deps.sh build
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python $(SRC)
	$(BIN)/python -m pip install -q -e '.[test,notebook]'
	# an editable install skips data files: enable the Jupyter server extension by hand
	install -D -m 644 dao/widgets/dao.json $(VENV)/etc/jupyter/jupyter_server_config.d/dao.json
	touch $@

sysdeps:
	scripts/system-deps.sh test

demo: $(VENV)/.installed
	$(BIN)/dao demo

test: sysdeps $(VENV)/.installed
	$(BIN)/ruff check dao hw tests benchmarks
	# screenshots of the browser tests (the dashboard, the live view) are kept in test-artifacts/
	DAO_TEST_ARTIFACTS=$(CURDIR)/test-artifacts $(BIN)/python -m pytest --durations=30

lint: $(VENV)/.installed
	$(BIN)/ruff check dao hw tests benchmarks
	$(BIN)/ruff format --check dao hw tests benchmarks

bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'  # daolite, for benchmarks/latency_daolite.py
	for b in benchmarks/*.py; do $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info dao/*.so
