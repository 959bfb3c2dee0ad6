"""Pure logic of ingest-api: no I/O, no clock reads except where a time is passed in."""
