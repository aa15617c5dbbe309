"""The product's pure core: no Kafka, no DuckDB, no clock, no environment.

Inputs in, values out. `tests/unit/test_layering.py` keeps I/O libraries out.
"""
