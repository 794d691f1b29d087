# The two set-up commands of the README. Both install .venv first if needed.
.PHONY: install smoke test

install:
	bash scripts/install.sh

# The main job on the embedded default (a local Ray cluster, local files),
# with a tiny random teacher built on the spot: its labels are noise.
smoke: install
	.venv/bin/raydistill label examples/financial_sentiment.yaml --smoke

test: install
	.venv/bin/python -m pytest tests
