"""Clarion email-worker: immediate emails and digests over SMTP."""
