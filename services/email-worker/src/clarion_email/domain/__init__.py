"""Pure email logic: rendering, headers, rate limits and retry decisions. No I/O here."""
