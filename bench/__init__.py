"""citelink benchmarks: `python -m bench --help`."""
