PYTHON ?= .venv/bin/python

.PHONY: bench
# Rules engine throughput: the full stable Falco ruleset over a mixed stream of events.
bench:
	$(PYTHON) tests/bench/bench_rules.py
