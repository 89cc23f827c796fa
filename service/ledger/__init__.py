"""The prediction ledger: its SQL schema, the background writer, label joins and incremental reads."""
