"""Ingestion: read a day of raw files, conform them to the contract, gate them, publish them."""
