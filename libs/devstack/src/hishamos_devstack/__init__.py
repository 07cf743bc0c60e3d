"""The local stack: what `make up`, the tests and the benchmarks start."""
