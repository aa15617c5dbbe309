"""The ledger's checkpoint signing key on disk, and verifier keys from files or flags.

The key file holds one line in Go's ``note.GenerateKey`` format,
``PRIVATE+KEY+<name>+<key id, 8 hex>+<base64(0x01 ‖ 32-byte Ed25519 seed)>``,
so Go's ``note.NewSigner`` reads it too. It is created on first use with mode
0600 and never replaced; a file that group or others can read is refused, since
whoever holds the seed can sign checkpoints in the ledger's name. The seed is
never logged; only the public verifier key is.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from pipeline.core.note import Signer, Verifier
from pipeline.errors import ConfigError, InvalidChallenge

log = logging.getLogger(__name__)


def _check_private(path: Path) -> None:
    """Refuse a key file that is not a regular file or that anyone but the owner may access."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"signing key {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"signing key {path} has mode {mode:04o}: group and others must have no access; run: chmod 600 {path}"
        )


def _read_signer(path: Path, name: str) -> Signer:
    try:
        _check_private(path)
        skey = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc}") from None
    try:
        signer = Signer.from_skey(skey)
    except InvalidChallenge as exc:
        raise ConfigError(f"signing key {path} is malformed: {exc}") from None
    if signer.name != name:
        raise ConfigError(
            f"signing key {path} belongs to {signer.name!r}, but the key name is set to {name!r}; "
            "set the name to match or point at another key file"
        )
    return signer


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries, so a file just renamed or linked into it survives a crash."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _create_signer(path: Path, name: str) -> Signer | None:
    """Write a new key next to `path` and link it into place; None if another process won."""
    signer = Signer(os.urandom(32), name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, (signer.skey() + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        # link() fails if the name exists, so a key written concurrently is never overwritten.
        os.link(tmp, path)
    except FileExistsError:
        return None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)
    log.info("created checkpoint signing key %s; verifier key %s", path, signer.verifier_key)
    return signer


def load_or_create_signer(path: Path, name: str) -> Signer:
    """Load the checkpoint signing key at `path`, creating it on first use.

    Creation draws 32 bytes from the OS random source and is atomic: a reader
    sees either no file or the whole key, and two processes starting together
    end up with the same key.
    """
    if not path.exists():
        try:
            created = _create_signer(path, name)
        except InvalidChallenge as exc:
            raise ConfigError(f"cannot create signing key {path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot create signing key {path}: {exc}") from None
        if created is not None:
            return created
    return _read_signer(path, name)


def load_verifier(source: Path | str) -> Verifier:
    """A verifier from a C2SP verifier key string, or from a file holding one.

    A `Path` is always read as a file; a string is read as a file when one of
    that name exists and parsed as a verifier key otherwise.
    """
    if isinstance(source, str) and not Path(source).is_file():
        where = "verifier key"
        vkey = source.strip()
    else:
        where = f"verifier key file {source}"
        try:
            vkey = Path(source).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {where}: {exc}") from None
    try:
        return Verifier.from_vkey(vkey)
    except InvalidChallenge as exc:
        raise ConfigError(f"{where} is malformed: {exc}") from None
