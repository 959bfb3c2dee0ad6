"""VAPID keys: ``clarion vapid generate`` output works with push-worker's signer."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from clarion_devstack.cli import app as clarion_cli
from clarion_push.adapters.webpush import VapidSigner, application_server_key, load_vapid


def test_generated_keys_load_in_both_forms_and_sign_verifiable_tokens() -> None:
    result = CliRunner().invoke(clarion_cli, ["vapid", "generate", "--format", "json"])
    assert result.exit_code == 0, result.output
    keys = json.loads(result.output)
    from_pem = load_vapid(keys["private_key_pem"])
    from_raw = load_vapid(keys["private_key"])
    assert application_server_key(from_pem) == keys["application_server_key"]
    assert application_server_key(from_raw) == keys["application_server_key"]

    signer = VapidSigner(from_raw, "mailto:ops@example.com", clock=lambda: 1_000_000.0)
    header = signer.headers("https://push.example.net/send/abc")["Authorization"]
    scheme, _, params = header.partition(" ")
    assert scheme == "vapid"
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    assert parts["k"] == keys["application_server_key"]
    raw = base64.urlsafe_b64decode(parts["k"] + "=" * (-len(parts["k"]) % 4))
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    claims = jwt.decode(
        parts["t"],
        public,
        algorithms=["ES256"],
        audience="https://push.example.net",
        options={"verify_exp": False},
    )
    assert claims == {
        "aud": "https://push.example.net",
        "sub": "mailto:ops@example.com",
        "exp": 1_000_000 + 12 * 3600,
    }
    # Same origin: the cached signature is reused; another origin gets its own.
    assert signer.headers("https://push.example.net/send/other")["Authorization"] == header
    assert signer.headers("https://other.example.net/x")["Authorization"] != header


def test_text_format_prints_the_pem_and_public_key() -> None:
    result = CliRunner().invoke(clarion_cli, ["vapid", "generate"])
    assert result.exit_code == 0
    assert "-----BEGIN PRIVATE KEY-----" in result.output
    assert "applicationServerKey (public key): B" in result.output


def test_load_vapid_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="VAPID private key"):
        load_vapid("not a key")
