"""Pure Web Push delivery logic: payloads, headers, retry decisions. No I/O here."""
