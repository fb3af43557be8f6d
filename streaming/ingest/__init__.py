"""Ingest: Kafka events -> decoded batches -> the feature writer (Redis tiles + Parquet log)."""
