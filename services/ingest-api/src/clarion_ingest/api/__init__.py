"""HTTP routers of ingest-api."""
