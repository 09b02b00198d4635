"""Whose data each registry version trained on, and which versions an erasure marks.

Every version carries a sidecar, lineage.json, listed (so hashed) in its manifest like its weights: per owner
pseudonym (a keyed HMAC, never a raw id) the earliest instant of that owner's samples the run read (their raw
records' append time on the broker; the app's `ts` only for records without one). Sample ids are not used: replay
renumbers the store, owners and instants stay. An erasure deletes the owner's samples dated at or before it
(learnstream/store.py), and a person may come back and be erased again, so a version holds erased data when an
erased owner's earliest sample in it is at or before their latest erasure; later samples are new data under new
consent. A version also holds erased data
when its parent does and it was not trained from scratch (its weights started from the parent's).

Marks are derived, not stored: from the sidecars and the store's erasure ledger, so they need no writer, follow
every erasure at once and survive a replay. Versions made before sidecars existed fall back to the old rule (an
erased sample id within the version's watermark, the version made before the erasure).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterable

from learnstream.pii import TextAnonymizer
from learnstream.registry import Registry, RegistryError, Version
from learnstream.store import Store, erasure_instant
from learnstream.textnorm import fold as fold_text
from schemas import utc_instant

LINEAGE_FILE = "lineage.json"
SCHEMA = "lineage.v1"
OWNER_PREFIX = "u_"  # learnstream.pseudonym: user pseudonyms are "u_" + 24 hex digits
_HEX = frozenset("0123456789abcdef")


class LineageError(ValueError):
    """A lineage sidecar that is missing, altered, or not a lineage.v1 document."""


def owners_of(samples: Iterable[dict[str, Any]]) -> dict[str, datetime]:
    """Per owner pseudonym, the earliest instant among the samples: the one erasure compares (the broker's append
    time, not the app's ts, which may lie either way)."""
    first: dict[str, datetime] = {}
    for sample in samples:
        owner, instant = sample["owner"], utc_instant(erasure_instant(sample))
        if owner not in first or instant < first[owner]:
            first[owner] = instant
    return first


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def write(folder: Path, owners: dict[str, datetime]) -> dict[str, Any]:
    """Write the sidecar into a staged version folder; returns the manifest's "lineage" entry."""
    document = {"schema": SCHEMA, "owners": {o: _iso(t) for o, t in sorted(owners.items())}}
    (folder / LINEAGE_FILE).write_text(json.dumps(document, indent=0, sort_keys=True))
    return {"file": LINEAGE_FILE, "owners": len(owners)}


def _valid_owner(owner: Any) -> bool:
    return (isinstance(owner, str) and len(owner) == len(OWNER_PREFIX) + 24 and owner.startswith(OWNER_PREFIX)
            and set(owner[len(OWNER_PREFIX):]) <= _HEX)


def parse(raw: bytes) -> dict[str, datetime]:
    """A sidecar's bytes -> per owner the earliest instant; LineageError for anything else."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise LineageError("lineage sidecar is not JSON") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA or not isinstance(document.get("owners"), dict):
        raise LineageError(f"lineage sidecar is not a {SCHEMA} document")
    owners: dict[str, datetime] = {}
    for owner, ts in document["owners"].items():
        if not _valid_owner(owner):
            raise LineageError("lineage sidecar names an owner that is not a user pseudonym")
        try:
            if not isinstance(ts, str):
                raise TypeError
            instant = datetime.fromisoformat(ts)
            if instant.tzinfo is None:
                raise ValueError
            owners[owner] = instant.astimezone(UTC)
        except (TypeError, ValueError, OverflowError):
            raise LineageError("lineage sidecar has a time that is not an ISO-8601 instant with an offset") from None
    return owners


def read(path: Path, manifest: dict[str, Any]) -> dict[str, datetime] | None:
    """The version's lineage, checked against the sha256 its manifest lists; None for a version made before
    sidecars existed (no "lineage" entry). LineageError when the sidecar is missing or altered."""
    if "lineage" not in manifest:
        return None
    expected = manifest.get("files", {}).get(LINEAGE_FILE)
    try:
        raw = (path / LINEAGE_FILE).read_bytes()
    except OSError:
        raise LineageError("lineage sidecar is missing") from None
    if expected is None or hashlib.sha256(raw).hexdigest() != expected:
        raise LineageError("lineage sidecar does not match its manifest")
    return parse(raw)


def marks(versions: list[Version], erasures: dict[str, str], erased_samples: list[tuple[int, str]], *,
          unreadable: dict[int, str] | None = None) -> dict[int, str]:
    """Version number -> why it holds erased data, for every marked version. erasures: owner pseudonym -> their
    latest erasure's ts; erased_samples: (sample id, erased_at), for versions made before sidecars.
    unreadable: version number -> why its manifest could not be read (marked, and so are its descendants).
    Reasons name counts and versions, never an owner."""
    erased_at = {owner: utc_instant(ts) for owner, ts in erasures.items()}
    found = {number: f"{why}: treated as holding erased data" for number, why in (unreadable or {}).items()}
    for version in sorted(versions, key=lambda v: v.number):
        manifest = version.manifest
        try:
            owners = read(version.path, manifest)
        except LineageError as exc:
            found[version.number] = f"{exc}: treated as holding erased data"
            continue
        if owners is None:
            reason = _legacy_reason(manifest, erased_samples)
        else:
            hit = sum(1 for owner, first in owners.items() if owner in erased_at and first <= erased_at[owner])
            reason = f"trained on samples of {hit} erased person(s)" if hit else None
        parent = manifest.get("parent_version")
        if reason is None and not manifest.get("from_scratch") and parent in found:
            reason = f"descends from version {parent}, which holds erased data, without a from-scratch retrain"
        if reason is not None:
            found[version.number] = reason
    return found


def _legacy_reason(manifest: dict[str, Any], erased_samples: list[tuple[int, str]]) -> str | None:
    """Versions without a sidecar: an erased sample id within the watermark, the version made before the erasure."""
    watermark, created = manifest.get("watermark", 0), manifest.get("created_at")
    if not watermark or created is None:
        return None
    hit = sum(1 for sample_id, at in erased_samples
              if sample_id <= watermark and utc_instant(created) < utc_instant(at))
    return f"made before lineage sidecars; {hit} erased sample(s) within its watermark" if hit else None


MAX_OVERRIDE_CHARS = 300


def override_reason(text: Any, *, key: bytes) -> str:
    """The operator's reason for serving a version that holds erased data, as the promotion history keeps it:
    invisible characters removed, spaces collapsed, at most MAX_OVERRIDE_CHARS, and names, e-mail addresses,
    phone numbers and other identifiers replaced by placeholders (word lists and rules; no NER model is loaded
    for this). ValueError when nothing is left to keep."""
    if not isinstance(text, str):
        raise ValueError("the --allow-erased reason must be text")
    cleaned = " ".join(fold_text(text).text.split())
    if not cleaned:
        raise ValueError("--allow-erased needs a reason (say why this version may be served again)")
    if len(cleaned) > MAX_OVERRIDE_CHARS:
        raise ValueError(f"the --allow-erased reason is longer than {MAX_OVERRIDE_CHARS} characters")
    return TextAnonymizer(key=key, ner_model=None).anonymize(cleaned, "rollback-override")


def override(history: list[dict[str, Any]], number: int) -> str | None:
    """The operator's reason when the latest change of the served version was a rollback to `number` with
    --allow-erased; None otherwise (an override lasts until another version is served)."""
    for entry in reversed(history):
        if entry.get("decision") in ("promoted", "rollback"):  # the entries that change the served version
            if entry["decision"] == "rollback" and entry.get("version") == number:
                return entry.get("allow_erased")
            return None
    return None


async def family_marks(registry: Registry, store: Store, family: str) -> dict[int, str]:
    """marks() for one family from its registry and the store's erasure ledger."""
    versions, unreadable = [], {}
    for number in registry.numbers(family):
        try:
            versions.append(registry.get(family, number))
        except RegistryError as exc:
            unreadable[number] = str(exc)
    return marks(versions, await store.erasures(), await store.erased_samples(family), unreadable=unreadable)


async def served_refusal(registry: Registry, store: Store, family: str, number: int) -> str | None:
    """Why serving must not load `number` (it holds erased data and no --allow-erased rollback chose it), or None."""
    reason = (await family_marks(registry, store, family)).get(number)
    if reason is not None and override(registry.history(family), number):
        return None
    return reason
