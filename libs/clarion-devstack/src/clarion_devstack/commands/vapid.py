"""``clarion vapid``: Web Push application server keys (VAPID, RFC 8292).

push-worker signs every push request with a P-256 (ECDSA) private key; browsers
subscribe with the matching public key as ``applicationServerKey`` (the
uncompressed point, base64url without padding) and push services reject
messages signed with any other key.
"""

from __future__ import annotations

import base64
import json
from typing import Literal

import typer
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02

app = typer.Typer(help="Web Push (VAPID) application server keys.", no_args_is_help=True)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def new_key_pair() -> dict[str, str]:
    """Generate a VAPID key pair with py-vapid.

    Returns:
        ``private_key_pem`` (PKCS#8 PEM), ``private_key`` (the raw 32-byte scalar,
        base64url) and ``application_server_key`` (the public uncompressed point,
        65 bytes, base64url): the value browsers pass to ``pushManager.subscribe``.
    """
    vapid = Vapid02()
    vapid.generate_keys()
    scalar = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    public = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {
        "private_key_pem": vapid.private_pem().decode(),
        "private_key": _b64url(scalar),
        "application_server_key": _b64url(public),
    }


@app.command("generate")
def generate(
    output: Literal["text", "env", "json"] = typer.Option(
        "text", "--format", "-f", help="text (readable), env (environment variable lines) or json"
    ),
) -> None:
    """Print a new VAPID key pair: the private key (PEM and base64url raw) and the public key."""
    keys = new_key_pair()
    if output == "json":
        typer.echo(json.dumps(keys, indent=2))
    elif output == "env":
        typer.echo(f"CLARION_PUSH_VAPID_PRIVATE_KEY={keys['private_key']}")
        typer.echo(f"CLARION_INGEST_VAPID_PUBLIC_KEY={keys['application_server_key']}")
    else:
        typer.echo(keys["private_key_pem"].rstrip())
        typer.echo(f"private key (base64url raw):      {keys['private_key']}")
        typer.echo(f"applicationServerKey (public key): {keys['application_server_key']}")
        typer.echo(
            "Set CLARION_PUSH_VAPID_PRIVATE_KEY (push-worker) to either private form and "
            "CLARION_INGEST_VAPID_PUBLIC_KEY (ingest-api, served to browsers) to the "
            "applicationServerKey."
        )
