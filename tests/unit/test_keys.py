"""The signing key file: created once with mode 0600, reloaded, refused when exposed."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from pipeline.core.note import Signer, verify_note
from pipeline.errors import ConfigError
from pipeline.keys import load_or_create_signer, load_verifier

NAME = "provenance.test/ledger"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_creates_a_private_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ledger.key"
    signer = load_or_create_signer(path, NAME)
    assert mode(path) == 0o600
    content = path.read_text(encoding="utf-8")
    assert content == signer.skey() + "\n"
    assert content.startswith(f"PRIVATE+KEY+{NAME}+{signer.key_id.hex()}+")
    assert [p.name for p in path.parent.iterdir()] == ["ledger.key"]  # no temporary left behind


def test_second_use_loads_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    first = load_or_create_signer(path, NAME)
    again = load_or_create_signer(path, NAME)
    assert again.public_key == first.public_key
    assert verify_note(first.sign("t\n"), [again.verifier]) == "t\n"


def test_different_files_get_different_keys(tmp_path: Path) -> None:
    a = load_or_create_signer(tmp_path / "a.key", NAME)
    b = load_or_create_signer(tmp_path / "b.key", NAME)
    assert a.public_key != b.public_key


def test_creation_is_private_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_signer(tmp_path / "ledger.key", NAME)
    finally:
        os.umask(old)
    assert mode(tmp_path / "ledger.key") == 0o600


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o660, 0o644, 0o700])
def test_exposed_key_file_is_refused_with_the_fix(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "ledger.key"
    load_or_create_signer(path, NAME)
    path.chmod(bits)
    if bits & 0o077:
        with pytest.raises(ConfigError, match=f"chmod 600 {path}"):
            load_or_create_signer(path, NAME)
    else:
        load_or_create_signer(path, NAME)


def test_a_key_for_another_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    load_or_create_signer(path, "someone.else/ledger")
    with pytest.raises(ConfigError, match="someone.else/ledger"):
        load_or_create_signer(path, NAME)


def test_a_malformed_key_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"PRIVATE+KEY+x+00000000+c2VjcmV0c2VjcmV0\n")
    os.close(fd)
    with pytest.raises(ConfigError, match="malformed") as exc:
        load_or_create_signer(path, "x")
    assert "c2VjcmV0c2VjcmV0" not in str(exc.value)


def test_a_key_file_written_by_go_tools_loads(tmp_path: Path) -> None:
    signer = Signer(bytes(range(32)), NAME)
    path = tmp_path / "ledger.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, signer.skey().encode())  # no trailing newline
    os.close(fd)
    assert load_or_create_signer(path, NAME).public_key == signer.public_key


def test_a_bad_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="space"):
        load_or_create_signer(tmp_path / "ledger.key", "has space")
    assert not (tmp_path / "ledger.key").exists()


def test_the_seed_never_reaches_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    signer = load_or_create_signer(tmp_path / "ledger.key", NAME)
    secret = signer.skey().split("+", 4)[4]  # PRIVATE+KEY+<name>+<id>+<base64>: the base64 may hold a "+" too
    assert signer.verifier_key in caplog.text
    assert secret not in caplog.text and secret not in repr(signer)


def test_load_verifier_from_string_and_file(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path / "ledger.key", NAME)
    vkey_file = tmp_path / "ledger.vkey"
    vkey_file.write_text(signer.verifier_key + "\n", encoding="utf-8")
    for source in (signer.verifier_key, vkey_file, str(vkey_file)):
        v = load_verifier(source)
        assert (v.name, v.key_id, v.public_key) == (NAME, signer.key_id, signer.public_key)


def test_load_verifier_refuses_garbage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="verifier key is malformed"):
        load_verifier("not-a-key")
    with pytest.raises(ConfigError, match="cannot read"):
        load_verifier(tmp_path / "missing.vkey")
    bad = tmp_path / "bad.vkey"
    bad.write_text("x+00000000+AQ==\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=str(bad)):
        load_verifier(bad)
