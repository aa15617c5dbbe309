"""The store: the single DuckDB writer, its Kafka ingest and its HTTP server."""
