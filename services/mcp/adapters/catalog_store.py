"""User catalogs on disk: STATE_DIR/catalogs/<name>.yaml and <name>.meta.json beside it.

The YAML file is the catalog as `catalog export` writes it, and decides whether the
catalog exists; the metadata file holds where it came from and when it changed. Both are
replaced atomically (a crash leaves the old file or the new one); the metadata is written
first and removed last, so a catalog never lacks it for long and never outlives its YAML.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from berth.common.jsonfile import read_json, write_json, write_text
from berth.mcp.domain.catalogs import Catalog, dump_catalog, parse_catalog

YAML_SUFFIX = ".yaml"
META_SUFFIX = ".meta.json"


class FileCatalogStore:
    """The CatalogStore of berth-mcpd."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load_all(self) -> list[Catalog]:
        if not self.directory.is_dir():
            return []
        names = sorted(p.name.removesuffix(YAML_SUFFIX) for p in self.directory.glob("*.yaml"))
        return [c for c in map(self.load, names) if c is not None]

    def load(self, name: str) -> Catalog | None:
        try:
            text = self._yaml(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        meta = read_json(self._meta(name), {})
        updated = meta.get("update_time") or self._mtime(name)
        catalog = parse_catalog(text, name, meta.get("source", ""))
        return replace(catalog, update_time=datetime.fromisoformat(updated))

    def save(self, catalog: Catalog) -> None:
        updated = catalog.update_time or datetime.now(UTC)
        meta = {"source": catalog.source, "update_time": updated.isoformat()}
        write_json(self._meta(catalog.name), meta)
        write_text(self._yaml(catalog.name), dump_catalog(catalog))

    def remove(self, name: str) -> bool:
        try:
            self._yaml(name).unlink()
        except FileNotFoundError:
            return False
        self._meta(name).unlink(missing_ok=True)
        return True

    def _yaml(self, name: str) -> Path:
        return self.directory / f"{name}{YAML_SUFFIX}"

    def _meta(self, name: str) -> Path:
        return self.directory / f"{name}{META_SUFFIX}"

    def _mtime(self, name: str) -> str:
        try:
            stamp = self._yaml(name).stat().st_mtime
        except FileNotFoundError:
            stamp = 0.0
        return datetime.fromtimestamp(stamp, UTC).isoformat()
