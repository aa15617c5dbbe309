"""What the command-line modules share: exit-code exceptions, settings loading and the running store."""

from __future__ import annotations

import json
from typing import Any

import click
from pydantic import ValidationError

from pipeline.errors import (
    BrokerError, ConfigError, InvalidChallenge, InvalidEvent, InvalidProof, NotFound, PipelineError, QueryRejected,
)
from pipeline.settings import Settings


class Failed(click.ClickException):
    """A check failed: exit 1."""

    exit_code = 1


class BadInput(click.ClickException):
    """Bad usage or input: exit 2."""

    exit_code = 2


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings().with_overrides(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadInput(f"bad configuration: {problems}") from None


def fail_on(exc: PipelineError) -> click.ClickException:
    if isinstance(exc, InvalidProof):
        return Failed(str(exc))
    if isinstance(exc, (InvalidEvent, InvalidChallenge, QueryRejected, NotFound, ConfigError)):
        return BadInput(str(exc))
    if isinstance(exc, BrokerError):
        return click.ClickException(str(exc))
    return click.ClickException(str(exc))


def running_store_url(settings: Settings) -> str | None:
    """The URL of a running store, from its run file, if it answers."""
    import os

    try:
        info = json.loads(settings.run_file.read_text())
        os.kill(int(info["pid"]), 0)
        return str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def http_json(method: str, url: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": exc.reason}


def verifier_from(key: str | None, settings: Settings) -> Any:
    """The checkpoint verifier: --key (a verifier key string or file), else this machine's ledger key."""
    from pipeline.keys import load_or_create_signer, load_verifier

    try:
        if key:
            return load_verifier(key)
        if settings.key_path.exists():
            return load_or_create_signer(settings.key_path, settings.ledger.key_name).verifier
    except PipelineError as exc:
        raise BadInput(str(exc)) from None
    return None
