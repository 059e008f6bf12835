"""The pseudonymization keys privgen holds: the current one, retired ones kept until destroyed,
and rotation. Destroying a retired key is crypto-shredding: pseudonyms made with it link to no one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from tasks import tracking
from tasks.anonymize import KEY_ENV, Key, key_id, load_key
from tasks.errors import PrivacyError

EXPERIMENT = "privgen-keys"  # one run per key event, so the record survives this machine


def retired_dir(key_file: Path) -> Path:
    return Path(key_file).parent / "retired"


def held(key_file: Path | None) -> dict[str, Key]:
    """Key id → key, for every key this machine holds: the current one first."""
    current = load_key(key_file)
    keys = {current.key_id: current}
    if key_file is not None and not os.environ.get(KEY_ENV):
        for path in sorted(retired_dir(key_file).glob("*.key")):
            key = _read(path)
            keys.setdefault(key.key_id, key)
    return keys


def _read(path: Path) -> Key:
    secret = path.read_text().strip().encode()
    return Key(secret, key_id(secret))


@dataclass(frozen=True)
class Rotation:
    old: str
    new: str
    retired_file: Path


def rotate(key_file: Path | None) -> Rotation:
    """Retire the local key file's key (kept, mode 0600, until destroyed) and create a new one."""
    if os.environ.get(KEY_ENV) or key_file is None:
        raise PrivacyError(
            f"the key comes from {KEY_ENV} (your secret store), which privgen cannot write: "
            f"create a new secret of 32+ random characters there, point {KEY_ENV} at it for "
            "every run, keep the old secret until you decide to destroy it, then run "
            "`privgen key list` to see which outputs the old key id still links")
    key_file = Path(key_file)
    if not key_file.is_file():
        raise PrivacyError(f"{key_file}: no local key to rotate yet; the first `privgen run` "
                           "creates one")
    old = load_key(key_file)
    target = retired_dir(key_file) / f"{old.key_id}.key"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.parent.chmod(0o700)
    os.replace(key_file, target)  # same folder tree: atomic, keeps mode 0600
    new = load_key(key_file)
    record("rotated", new.key_id, previous=old.key_id)
    return Rotation(old.key_id, new.key_id, target)


def destroy(key_file: Path | None, old: str) -> Path:
    """Overwrite and delete a retired key file; refuses the current key."""
    if key_file is None:
        raise PrivacyError("anonymize.key_file is null: privgen holds no key file to destroy")
    current = load_key(key_file)
    if old == current.key_id:
        raise PrivacyError(f"key {old} is the current key; run `privgen key rotate` first")
    path = retired_dir(key_file) / f"{old}.key"
    if not path.is_file():
        raise PrivacyError(f"{path}: no retired key {old} held here; `privgen key list` "
                           "shows the keys held")
    size = path.stat().st_size
    with path.open("r+b") as f:  # best effort: copy-on-write disks may keep the old blocks
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
    record("destroyed", old)
    return path


def record(event: str, ident: str, previous: str | None = None) -> str:
    """A key event in the MLflow store: ids only (a key id is an HMAC of the key, not the key)."""
    run = tracking.start_run(EXPERIMENT, time.strftime(f"key-{event}-%Y%m%d-%H%M%S"),
                             {"privgen.flow": "key", "key.event": event, "key.id": ident,
                              **({"key.previous": previous} if previous else {})},
                             setting="(the key experiment is fixed)")
    tracking.end_run(run)
    return run


def events() -> list[dict]:
    """Recorded key events, oldest first."""
    client = tracking.client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`privgen.flow` = 'key'",
                              order_by=["attributes.start_time ASC"], max_results=50_000)
    return [{"event": r.data.tags.get("key.event"), "key_id": r.data.tags.get("key.id"),
             "previous": r.data.tags.get("key.previous"),
             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.info.start_time / 1000))}
            for r in runs]
