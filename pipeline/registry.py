"""The model registry: numbered, immutable student versions under one prefix, and a production pointer.

Layout under ``<retrain.root>/models/`` (local or s3://)::

    v0001/model/          the exported student, published whole (:mod:`pipeline.model_store`)
    v0001/version.json    written last: what the version is (metrics, config, teacher model and prompt
                          hash, the label data it was trained on); a version exists once this file does
    production.json       the version serving now, the versions it replaced (rollback walks back through
                          them) and a log of every change; one object, replaced whole

A version is never written twice: :meth:`Registry.register` takes the next free number and refuses one
whose ``version.json`` exists. ``production.json`` is replaced in one write (a rename locally, one PUT
on S3), so a reader sees the old pointer or the new one, never a mix. The retraining job holds the
root's lease while it registers; ``promote`` and ``rollback`` write the pointer alone.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any, Optional

import pyarrow.fs as pafs

from pipeline import model_store, storage
from pipeline.config import ConfigError, StorageConfig

VERSION = re.compile(r"^v(\d{4,})$")
PRODUCTION = "production"
INFO = "version.json"


class RegistryError(ConfigError):
    """A version or pointer that does not exist, or a change the registry refuses."""


def version_name(number: int) -> str:
    return f"v{number:04d}"


def iso_time(seconds: Optional[float] = None) -> str:
    """UTC ISO-8601 time of ``seconds`` since the epoch (default: now), as the registry and runs record it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclasses.dataclass(frozen=True)
class Registry:
    fs: Any
    path: str  # <root>/models on fs
    uri: str  # the same as the user wrote it (local path or s3://), for the paths the registry hands out

    @classmethod
    def open(cls, root_uri: str, storage_config: StorageConfig) -> "Registry":
        fs, root = storage.resolve(root_uri, storage_config)
        return cls(fs, storage.join(root, "models"), root_uri.rstrip("/") + "/models")

    def versions(self) -> list[str]:
        """The versions that exist (their ``version.json`` written), oldest first."""
        info = storage.retried(self.fs, lambda: self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True)),
                               f"listing {self.path}")
        names = [entry.base_name for entry in info if entry.type == pafs.FileType.Directory
                 and VERSION.match(entry.base_name)]
        names = [name for name in names if storage.exists(self.fs, storage.join(self.path, name, INFO))]
        return sorted(names, key=lambda name: int(VERSION.match(name).group(1)))

    def version_of_run(self, run: str) -> Optional[str]:
        """The version a retraining run registered, if it did (the newest versions are looked at first)."""
        return next((name for name in reversed(self.versions()) if self.info(name).get("run") == run), None)

    def model_uri(self, version: str) -> str:
        return f"{self.uri}/{version}/model"

    def info(self, version: str) -> dict[str, Any]:
        if not VERSION.match(version) or not storage.exists(self.fs, storage.join(self.path, version, INFO)):
            known = self.versions()
            raise RegistryError(f"model version {version!r}: not in the registry {self.uri} (versions: "
                                f"{', '.join(known) if known else 'none yet'})")
        return storage.read_json(self.fs, storage.join(self.path, version, INFO))

    def register(self, model_dir: Path, info: dict[str, Any]) -> str:
        """Publish the local exported model ``model_dir`` as the next version, with ``info``; its name."""
        existing = self.versions()
        name = version_name(int(VERSION.match(existing[-1]).group(1)) + 1 if existing else 1)
        info_path = storage.join(self.path, name, INFO)
        if storage.exists(self.fs, info_path):  # listed a moment ago as absent: another writer
            raise RegistryError(f"model version {name} appeared in {self.uri} while registering; versions are "
                                "immutable (is another retraining job writing to this root?)")
        # A folder without version.json is a registration that crashed before its end: published again.
        model_store.publish(pafs.LocalFileSystem(), str(model_dir), self.fs, storage.join(self.path, name, "model"))
        storage.write_json(self.fs, info_path, {"version": name, "created_at": iso_time(), "model": self.model_uri(name),
                                                **info})
        return name

    def pointer(self) -> Optional[dict[str, Any]]:
        """``production.json``, or None before the first promotion."""
        path = storage.join(self.path, f"{PRODUCTION}.json")
        return storage.read_json(self.fs, path) if storage.exists(self.fs, path) else None

    def production(self) -> Optional[str]:
        pointer = self.pointer()
        return pointer["version"] if pointer else None

    def resolve(self, ref: str) -> tuple[str, str]:
        """``(version, model uri)`` of ``production`` or a version name."""
        if ref == PRODUCTION:
            version = self.production()
            if version is None:
                raise RegistryError(f"{self.uri}: no production model yet (nothing promoted); name a version "
                                    f"({', '.join(self.versions()) or 'none registered'})")
        else:
            version = ref
        self.info(version)  # it exists
        return version, self.model_uri(version)

    def promote(self, version: str, reason: str) -> dict[str, Any]:
        """Point production at ``version``; the version it replaces can be rolled back to."""
        self.info(version)
        pointer = self.pointer() or {"version": None, "previous": [], "log": []}
        if pointer["version"] == version:
            raise RegistryError(f"{version} is production already")
        previous = pointer["previous"] + ([pointer["version"]] if pointer["version"] else [])
        return self._write(version, previous, pointer["log"], "promote", reason)

    def rollback(self, to: Optional[str] = None, reason: str = "rollback") -> dict[str, Any]:
        """Point production back at the version it replaced (or at ``to``, one of those it replaced)."""
        pointer = self.pointer()
        if pointer is None or not pointer["previous"]:
            raise RegistryError(f"{self.uri}: nothing to roll back to (production "
                                f"{pointer['version'] if pointer else 'was never set'} replaced no version)")
        previous = list(pointer["previous"])
        target = to or previous[-1]
        if target not in previous:
            raise RegistryError(f"rollback --to {target}: production never held it before {pointer['version']} "
                                f"(it replaced {', '.join(previous)}); use `models promote {target}`")
        self.info(target)
        return self._write(target, previous[:previous.index(target)], pointer["log"], "rollback", reason)

    def _write(self, version: str, previous: list[str], log: list[dict[str, Any]], action: str,
               reason: str) -> dict[str, Any]:
        pointer = {"version": version, "model": self.model_uri(version), "since": iso_time(), "reason": reason,
                   "previous": previous,
                   "log": log + [{"at": iso_time(), "action": action, "version": version, "reason": reason}]}
        storage.write_json(self.fs, storage.join(self.path, f"{PRODUCTION}.json"), pointer)
        return pointer


def resolve_model(model: str, registry: Optional[str], storage_config: StorageConfig) -> tuple[str, Optional[str]]:
    """``raydistill predict``'s model argument: a model folder, or with ``--registry`` a version or
    ``production``. Returns the model folder and the version (None for a plain folder)."""
    if registry is None:
        return model, None
    version, uri = Registry.open(registry, storage_config).resolve(model)
    return uri, version


def format_versions(registry: Registry, metric: Optional[str] = None) -> str:
    """``models list``: one line per version, production marked."""
    production = registry.production()
    lines = [f"registry {registry.uri}: production {production or '(none)'}"]
    for name in registry.versions():
        info = registry.info(name)
        scores = info.get("metrics", {}).get(info.get("gate", {}).get("set", ""), {})
        shown = ", ".join(f"{key} {value:.4f}" for key, value in scores.items()
                          if isinstance(value, float) and (metric is None or key == metric))
        gate = info.get("gate", {})
        lines.append(f"{'*' if name == production else ' '} {name}  {info.get('created_at', '')}  "
                     f"trained on {info.get('train_rows', '?')} rows of {len(info.get('label_data', []))} partition(s)"
                     f"  {gate.get('set', '')}: {shown or '-'}  run {info.get('run', '-')}")
    return "\n".join(lines)
