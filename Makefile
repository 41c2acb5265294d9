# The two set-up commands of the README; both work on a fresh Debian 12 machine.
.PHONY: setup demo test bench

setup:
	scripts/setup

demo: setup
	.venv/bin/huxue demo

test:
	scripts/setup --test
	.venv/bin/pytest

bench: setup
	.venv/bin/huxue bench
