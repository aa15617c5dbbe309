"""The analytics process: models on the sealed stream (`ledger.entries`), rows out to `analytics.*` topics."""
