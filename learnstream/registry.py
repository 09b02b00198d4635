"""The model registry: <root>/<family>/<version>/ with a manifest, written whole or not at all.

A version is built in a temporary folder beside its final place and renamed into place only when complete, so a
crash never leaves a partial version visible (the trainer removes such leftovers when it starts). The manifest
lists every file with its sha256; serving loads only versions whose files match and that hold nothing else.
<root>/<family>/served holds the served version number (replaced atomically).
Writes (commit, served pointer, prune) take `writer_lock()`, an OS file lock released if the process dies, so
the trainer, its child process and an operator's rollback never interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from schemas import new_event_id, utc_now

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGING_PREFIX = ".staging-"


class RegistryError(Exception):
    """A version is missing, incomplete, tampered with, or outside the registry."""


class ErasedVersion(Exception):
    """A rollback to a version holding erased data (learnstream/lineage.py) without an operator's override."""


class RegistryBusy(Exception):
    """Another process holds the writer lock (a running trainer)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Version:
    family: str
    number: int
    path: Path
    manifest: dict[str, Any]

    @property
    def manifest_sha256(self) -> str:
        return sha256_file(self.path / MANIFEST)


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def family_dir(self, family: str) -> Path:
        path = self.root / family
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def writer_lock(self, *, wait: bool = True) -> Iterator[None]:
        """Held around each registry write; short, so a rollback never waits on a training run."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".writer.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise RegistryBusy(f"the registry {self.root} is being written by another process") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ---- reading -------------------------------------------------------------------------------------------

    def numbers(self, family: str) -> list[int]:
        return sorted(int(p.name) for p in self.family_dir(family).iterdir() if p.name.isdigit())

    def get(self, family: str, number: int) -> Version:
        path = self.family_dir(family) / str(number)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{family} version {number}: no readable manifest ({type(exc).__name__})") from None
        return Version(family, number, path, manifest)

    def versions(self, family: str) -> list[Version]:
        return [self.get(family, n) for n in self.numbers(family)]

    def served(self, family: str) -> int | None:
        try:
            return int((self.family_dir(family) / "served").read_text())
        except (OSError, ValueError):
            return None

    def resolve(self, family: str, relative: str) -> Path:
        """A path from a model.updated event, refused unless it names a version folder inside this registry."""
        family_dir = self.family_dir(family).resolve()
        path = (self.root / relative).resolve()
        if path.parent != family_dir or not (path.name.isascii() and path.name.isdigit()):  # not '²'
            raise RegistryError(f"path {relative!r} is not a {family} version of this registry")
        return path

    def verify(self, family: str, number: int, *, manifest_sha256: str | None = None) -> Version:
        """The version, if its manifest (and the sha256 announced for it) and every listed file match, and the
        folder holds nothing else: a file slipped in beside the weights could be loaded in their place."""
        version = self.get(family, number)
        if manifest_sha256 is not None and version.manifest_sha256 != manifest_sha256:
            raise RegistryError(f"{family} version {number}: manifest sha256 differs from the announced one")
        listed = version.manifest.get("files", {})
        for name, expected in listed.items():
            file = (version.path / name).resolve()
            if version.path.resolve() not in file.parents:
                raise RegistryError(f"{family} version {number}: file {name!r} outside its folder")
            if not file.is_file() or sha256_file(file) != expected:
                raise RegistryError(f"{family} version {number}: {name} is missing or altered")
        present = {str(p.relative_to(version.path)) for p in version.path.rglob("*") if not p.is_dir()}
        unlisted = present - set(listed) - {MANIFEST}
        if unlisted:
            raise RegistryError(f"{family} version {number}: {len(unlisted)} file(s) not in its manifest")
        return version

    # ---- writing (under writer_lock) ------------------------------------------------------------------------

    def next_number(self, family: str) -> int:
        numbers = self.numbers(family)
        return numbers[-1] + 1 if numbers else 0

    @contextmanager
    def staging(self, family: str) -> Iterator[Path]:
        """A temporary folder for a version being built, removed unless committed."""
        path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.family_dir(family)))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def remove_staging(self, family: str) -> int:
        """Remove what killed runs left half-built (never visible as versions). Only when no run is going on."""
        leftovers = [p for p in self.family_dir(family).iterdir() if p.name.startswith(STAGING_PREFIX)]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        return len(leftovers)

    def commit(self, family: str, staged: Path, manifest: dict[str, Any]) -> Version:
        """Hash the staged files, write the manifest, rename into place as the next version."""
        number = self.next_number(family)
        files = {
            str(p.relative_to(staged)): sha256_file(p)
            for p in sorted(staged.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        full = {**manifest, "family": family, "version": number, "files": files}
        (staged / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True))
        for p in staged.rglob("*"):
            if p.is_file():
                with p.open("rb") as handle:
                    os.fsync(handle.fileno())
        staged.chmod(0o755)
        os.rename(staged, self.family_dir(family) / str(number))
        return self.get(family, number)

    def set_served(self, family: str, number: int) -> None:
        self.get(family, number)  # must exist
        _write_atomic(self.family_dir(family) / "served", str(number))

    def record_decision(self, family: str, entry: dict[str, Any]) -> None:
        """Append to the promotion history (when, which version, promoted/rejected/rollback, why)."""
        with (self.family_dir(family) / "history.jsonl").open("a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    def unfinished(self, family: str) -> list[Version]:
        """Versions committed by a run whose trainer died before recording its decision (see trainer.service)."""
        decided = {entry["version"] for entry in self.history(family)}
        return [self.get(family, n) for n in self.numbers(family) if n not in decided]

    def history(self, family: str) -> list[dict[str, Any]]:
        try:
            lines = (self.family_dir(family) / "history.jsonl").read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def prune(self, family: str, *, keep: int) -> list[int]:
        """Keep the newest `keep` versions, version 0 (the base) and the served one; remove the rest."""
        numbers = self.numbers(family)
        protected = set(numbers[-keep:]) | {0, self.served(family)}
        removed = [n for n in numbers if n not in protected]
        for n in removed:
            shutil.rmtree(self.family_dir(family) / str(n), ignore_errors=True)
        return removed


def model_updated_event(version: Version, *, decision: str, reason: str) -> dict[str, Any]:
    """The model.updated.v1 event announcing a version (serving swaps only on "promoted")."""
    return {
        "schema": "model.updated.v1",
        "event_id": new_event_id(),
        "ts": utc_now(),
        "family": version.family,
        "version": version.number,
        "decision": decision,
        "reason": reason,
        "path": f"{version.family}/{version.number}",
        "manifest_sha256": version.manifest_sha256,
        "metrics": version.manifest.get("metrics", {}),
        "parent_version": version.manifest.get("parent_version"),
    }


def rollback(registry: Registry, family: str, number: int, *, erased: str | None = None,
             allow_erased: str | None = None) -> dict[str, Any]:
    """Make an existing, intact version the served one; returns the model.updated event to publish.
    erased: why the version holds erased data (learnstream.lineage.marks), if it does: then the rollback is
    refused unless allow_erased gives the operator's reason, which the promotion history keeps."""
    version = registry.verify(family, number)
    if erased is not None and not allow_erased:
        raise ErasedVersion(f"{family} version {number} holds erased data ({erased}); not rolled back "
                            "(--allow-erased REASON overrides)")
    registry.set_served(family, number)
    reason = f"rollback to version {number} by an operator"
    entry: dict[str, Any] = {"ts": utc_now(), "version": number, "decision": "rollback"}
    if erased is not None:
        entry.update(erased=erased, allow_erased=allow_erased)
        reason += ", allowed although it holds erased data (--allow-erased)"
        # The reason itself stays in the history: it is the operator's text.
        log.warning("%s: rollback to version %d, which holds erased data (%s), allowed by an operator's "
                    "--allow-erased; the reason is in the promotion history", family, number, erased)
    registry.record_decision(family, {**entry, "reason": reason})
    return model_updated_event(version, decision="promoted", reason=reason)
