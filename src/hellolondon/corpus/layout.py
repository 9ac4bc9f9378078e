"""The corpus folder (`work/corpus` by default): what `corpus collect` downloads into it and
`corpus clean` and `corpus report` write there. This module alone knows its file names.

    raw/<id>.txt              complete, checked downloads: the only files `corpus clean` reads
    partial/<id>.part         interrupted downloads, resumed with Range on the next attempt
    rejected/<id>.txt         complete downloads that failed a check (HTML page, wrong book)
    manifest.json             one record per source: status, bytes, sha256, attempts, error
    documents.jsonl           the cleaned documents, one JSON object a line
    clean_log.jsonl           one line per source: kept, rejected (and why) or a duplicate
    report.json, report.md    sizes by period and category; cleaning and collection outcomes
"""

from __future__ import annotations

from pathlib import Path

DOCUMENTS = "documents.jsonl"
MANIFEST = "manifest.json"


class CorpusFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    # ---- what `corpus collect` writes

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def lock(self) -> Path:
        """Held by the one `corpus collect` writing here."""
        return self.path / ".collect.lock"

    @property
    def rejected_dir(self) -> Path:
        return self.path / "rejected"

    def raw(self, source_id: str) -> Path:
        return self.path / "raw" / f"{source_id}.txt"

    def partial(self, source_id: str) -> Path:
        return self.path / "partial" / f"{source_id}.part"

    def rejected(self, source_id: str) -> Path:
        return self.rejected_dir / f"{source_id}.txt"

    def make(self) -> None:
        for sub in ("raw", "partial", "rejected"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def recorded(self, relative: str) -> Path:
        """A download's file from the path the manifest records for it."""
        return self.path / relative

    def record(self, path: Path) -> str:
        """The path the manifest records for a download's file: relative to the folder."""
        return path.relative_to(self.path).as_posix()

    # ---- what `corpus clean` and `corpus report` write

    @property
    def documents(self) -> Path:
        return self.path / DOCUMENTS

    @property
    def spool(self) -> Path:
        """The kept documents while cleaning, before duplicates are dropped."""
        return self.path / ".documents.spool.jsonl"

    @property
    def clean_log(self) -> Path:
        return self.path / "clean_log.jsonl"

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    def cleaned_names(self) -> tuple[str, ...]:
        """The names of the files `corpus clean` writes (each atomically, then renamed)."""
        return tuple(
            p.name for p in (self.documents, self.clean_log, self.report_json, self.report_md)
        )
