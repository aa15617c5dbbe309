"""`provenance prove`, `verify` and `audit`: the proof bundle of one event, its offline check, the full audit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli_support import (
    BadInput, Failed, fail_on, http_json, load_settings, running_store_url, verifier_from,
)
from pipeline.errors import InvalidProof, PipelineError


@click.command()
@click.argument("event_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the bundle here.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Read this DuckDB file directly.")
def prove(event_id: str, output: Path | None, db: Path | None) -> None:
    """Write the proof bundle of one event (through the running store, or from the DuckDB file)."""
    settings = load_settings()
    url = None if db else running_store_url(settings)
    if url:
        import urllib.parse

        status, bundle = http_json("GET", f"{url}/proofs/{urllib.parse.quote(event_id, safe='')}")
        if status != 200:
            raise (Failed if status >= 500 else BadInput)(bundle.get("error", f"HTTP {status}"))
    else:
        from pipeline.store.ledger import Proofs
        from pipeline.store.snapshot import open_for_reading

        try:
            database = open_for_reading(settings, db)
            try:
                bundle = Proofs(database, None).bundle(event_id)
            finally:
                database.close()
        except PipelineError as exc:
            raise fail_on(exc) from None
    text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@click.command()
@click.argument("bundle_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", help="The log's verifier key (name+id+key) or a file holding it.")
@click.option("--witness-key", "witness_keys", multiple=True, help="A witness verifier key that must have cosigned.")
def verify(bundle_file: Path, key: str | None, witness_keys: tuple[str, ...]) -> None:
    """Check a proof bundle offline: leaf, path, block, checkpoint signature (and witnesses)."""
    from pipeline.core.bundle import verify_bundle
    from pipeline.keys import load_verifier

    settings = load_settings()
    verifier = verifier_from(key, settings)
    if verifier is None:
        raise BadInput("no public key: give --key with the log's verifier key (GET /checkpoints/key)")
    try:
        witnesses = [load_verifier(w) for w in witness_keys]
    except PipelineError as exc:
        raise BadInput(str(exc)) from None
    try:
        bundle = json.loads(bundle_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"cannot read {bundle_file}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{bundle_file} is not a JSON proof bundle: {exc}") from None
    try:
        result = verify_bundle(bundle, verifier, witnesses)
    except InvalidProof as exc:
        raise Failed(f"FAILED at {exc}") from None
    except PipelineError as exc:
        raise BadInput(f"malformed bundle: {exc}") from None
    click.echo(result.summary())


@click.command()
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="The DuckDB file (default from settings).")
@click.option("--key", help="The log's verifier key or a file holding it (default: this machine's ledger key).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def audit(db: Path | None, key: str | None, quiet: bool) -> None:
    """Recompute every leaf, root, block hash, chain link and checkpoint signature; exit 1 on any break."""
    from tqdm import tqdm

    from pipeline.audit import audit as run_audit
    from pipeline.store.snapshot import open_for_reading

    settings = load_settings()
    verifier = verifier_from(key, settings)
    try:
        database = open_for_reading(settings, db)
    except PipelineError as exc:
        raise fail_on(exc) from None
    try:
        total = database.fetch("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM duplicate_leaves)")[0][0]
        with tqdm(total=total, unit="leaf", disable=quiet, file=sys.stderr, unit_scale=True) as bar:
            report = run_audit(database, verifier, bar.update)
    finally:
        database.close()
    for b in report.breaks:
        click.echo(f"BREAK {b}")
    click.echo(f"audited {report.logs} logs, {report.leaves:,} leaves, {report.blocks:,} blocks, "
               f"{report.checkpoints:,} checkpoints, {report.tiles:,} tiles: "
               f"{'clean' if report.ok else f'{len(report.breaks)} break(s)'}")
    if not report.ok:
        sys.exit(1)
