#!/usr/bin/env bash
# Run the whole test suite (CPU, offline). Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
source "$(dirname "$0")/_env.sh" dev
ruff check src tests benchmarks
# NO_MKDOCS_2_WARNING=1 silences the theme's end-of-life notice (why: mkdocs.yml)
site="$(mktemp -d)"; NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$site"; rm -rf "$site"
python -m pytest -q "$@"
