"""The corpus report: documents, characters and tokens in all, per period and per category,
and everything that was rejected (by collection or by cleaning) with its reason.

Tokens are whitespace-separated words unless a tokenizer folder is given, in which case they
are that tokenizer's tokens (what `prepare` will produce, without end-of-text markers).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from hellolondon.corpus.documents import read_documents
from hellolondon.corpus.layout import CorpusFolder
from hellolondon.files import atomic_write

_BATCH = 64  # documents per tokenizer call


def build_report(
    folder: str | Path, documents: str | Path | None = None, tokenizer: str | None = None
) -> dict[str, Any]:
    """Read documents.jsonl (and clean_log.jsonl, manifest.json when present) from `folder`."""
    folder = CorpusFolder(folder)
    docs_path = Path(documents) if documents else folder.documents
    count = _token_counter(tokenizer)
    totals = {"documents": 0, "characters": 0, "tokens": 0}
    groups: dict[str, dict[str, dict[str, int]]] = {
        "period": defaultdict(Counter),
        "category": defaultdict(Counter),
    }
    batch: list[Any] = []

    def flush() -> None:
        for doc, n in zip(batch, count([d.text for d in batch]), strict=True):
            row = {"documents": 1, "characters": len(doc.text), "tokens": n}
            for k, v in row.items():
                totals[k] += v
                groups["period"][doc.period or "unknown"][k] += v
                groups["category"][doc.category or "unknown"][k] += v
        batch.clear()

    for doc in read_documents(docs_path):
        batch.append(doc)
        if len(batch) >= _BATCH:
            flush()
    flush()
    report: dict[str, Any] = {
        "documents_file": str(docs_path),
        "token_unit": f"tokens of {tokenizer}" if tokenizer else "whitespace words",
        "totals": totals,
        "by_period": {k: dict(v) for k, v in sorted(groups["period"].items())},
        "by_category": {k: dict(v) for k, v in sorted(groups["category"].items())},
    }
    report.update(_cleaning(folder.clean_log))
    report.update(_collection(folder.manifest))
    return report


def _token_counter(tokenizer: str | None) -> Any:
    if not tokenizer:
        return lambda texts: [len(t.split()) for t in texts]
    from hellolondon.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    return lambda texts: [len(ids) for ids in tok.encode_batch(texts)]


def _cleaning(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    status: Counter = Counter()
    rules: Counter = Counter()
    rejected = []
    removed: Counter = Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            status[entry["status"]] += 1
            for r in entry.get("removed", []):
                if r.get("chars"):  # steps that change text without removing any are not listed
                    removed[r["step"]] += r["chars"]
            if entry["status"] != "kept":
                rules[entry.get("rule", "other")] += 1
                rejected.append(
                    {"id": entry["id"], "status": entry["status"], "reason": entry["reason"]}
                )
    return {
        "cleaning": {"status": dict(status), "rejected_by_rule": dict(rules.most_common()),
                     "removed_chars_by_step": dict(removed.most_common())},
        "rejected": rejected,
    }  # fmt: skip


def _collection(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    from hellolondon.corpus.collect import read_manifest

    records = read_manifest(path)
    status = Counter(r.get("status", "?") for r in records.values())
    failed = [
        {"id": sid, "status": r["status"], "reason": r.get("error") or ""}
        for sid, r in records.items()
        if r.get("status") != "ok"
    ]
    return {"collection": {"status": dict(status)}, "not_collected": failed}


def format_report(report: dict[str, Any]) -> str:
    """The report as Markdown: tables for the totals and groups, then lists of rejections."""
    unit = report["token_unit"]
    t = report["totals"]
    lines = [
        "# Corpus report",
        "",
        f"Source: `{report['documents_file']}`; sizes are in {unit}.",
        "",
    ]
    lines += _table("", {"all": t})
    for name in ("by_period", "by_category"):
        lines += ["", f"## {name.replace('_', ' ').capitalize()}", ""] + _table(
            name[3:], report[name]
        )
    if "collection" in report:
        lines += ["", "## Collection", "", _counts(report["collection"]["status"]), ""]
        lines += [f"- {r['id']} ({r['status']}): {r['reason']}" for r in report["not_collected"]]
    if "cleaning" in report:
        c = report["cleaning"]
        lines += ["", "## Cleaning", "", _counts(c["status"]), ""]
        if c["rejected_by_rule"]:
            lines += ["Rejected by rule: " + _counts(c["rejected_by_rule"]), ""]
        if c["removed_chars_by_step"]:
            lines += ["Characters removed by step: " + _counts(c["removed_chars_by_step"]), ""]
        lines += [f"- {r['id']} ({r['status']}): {r['reason']}" for r in report["rejected"]]
    return "\n".join(lines).rstrip() + "\n"


def _table(label: str, rows: dict[str, dict[str, int]]) -> list[str]:
    out = [f"| {label or ' '} | documents | characters | tokens |", "|---|---:|---:|---:|"]
    for key, row in rows.items():
        out.append(f"| {key} | {row['documents']:,} | {row['characters']:,} | {row['tokens']:,} |")
    return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"


def write_report(report: dict[str, Any], folder: str | Path) -> None:
    """report.json and report.md in `folder`, each written atomically."""
    folder = CorpusFolder(folder)
    for path, text in (
        (folder.report_json, json.dumps(report, indent=2, ensure_ascii=False)),
        (folder.report_md, format_report(report)),
    ):
        atomic_write(path, text + ("\n" if not text.endswith("\n") else ""))
