"""`hellolondon corpus ...` commands: help, the happy path, and one-line errors."""

from __future__ import annotations

import json
import os

import pytest
from corpus_server import FIXTURES, gutenberg_book

from hellolondon.cli import main
from hellolondon.corpus.documents import Document, read_documents, write_documents

USER_CATALOG = """
[[source]]
gutenberg = 376
title = "A Journal of the Plague Year"
author = "Daniel Defoe"
year = 1722
category = "history"
status = "believed"

[[source]]
gutenberg = 370
title = "Moll Flanders"
author = "Daniel Defoe"
year = 1722
category = "fiction"
"""


@pytest.mark.parametrize("step", ["catalog", "collect", "clean", "report", "sample"])
def test_every_step_has_help_with_an_example(step, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["corpus", step, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"hellolondon corpus {step}" in out


def test_collect_clean_report_from_the_command_line(server, tmp_path, capsys):
    server.routes["/pg/376.txt"] = [
        ("status", 503, {"Retry-After": "0"}),
        ("ok", gutenberg_book("A Journal of the Plague Year", "Daniel Defoe")),
    ]
    server.routes["/pg/370.txt"] = [("ok", gutenberg_book("Roderick Random", "Tobias Smollett"))]
    catalog = tmp_path / "mine.toml"
    catalog.write_text(USER_CATALOG)
    folder = tmp_path / "corpus"
    common = ["--no-builtin", "--catalog", str(catalog), "--out", str(folder), "--quiet"]
    net = ["--gutenberg-mirror", f"{server.base}/pg/{{id}}.txt", "--backoff", "0", "--delay", "0"]
    assert main(["corpus", "collect", *common, *net]) == 0
    out = capsys.readouterr().out
    assert "ok 1" in out and "rejected 1" in out
    assert any(ln.startswith("rejected pg-370: title mismatch") for ln in out.splitlines())
    records = json.loads((folder / "manifest.json").read_text())["sources"]
    assert records["pg-376"]["attempts"] == 2 and "Roderick Random" in records["pg-370"]["error"]

    n = len(server.requests)
    assert main(["corpus", "collect", *common, "--offline"]) == 0
    assert len(server.requests) == n and "cached 1" in capsys.readouterr().out

    assert (
        main(
            [
                "corpus",
                "clean",
                "--in",
                str(folder),
                "--set",
                "min_chars=300",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert "kept 1 document (" in capsys.readouterr().out
    assert [d.id for d in read_documents(folder / "documents.jsonl")] == ["pg-376"]

    assert main(["corpus", "report", "--in", str(folder)]) == 0
    report = capsys.readouterr().out
    assert "| georgian | 1 |" in report and "pg-370 (rejected): title mismatch" in report
    assert main(["corpus", "report", "--in", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["documents"] == 1


def test_failed_downloads_exit_1_and_say_how_to_retry(server, tmp_path, capsys):
    catalog = tmp_path / "mine.toml"
    catalog.write_text(USER_CATALOG)
    args = ["corpus", "collect", "--no-builtin", "--catalog", str(catalog), "--out", str(tmp_path / "c"), "--quiet",
            "--gutenberg-mirror", f"{server.base}/none/{{id}}.txt", "--delay", "0", "--id", "pg-376"]  # fmt: skip
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "--retry-failed" in out
    assert "failed pg-376: HTTP 404 Not Found; the file is not at this URL: check the catalog " \
           f"entry (its id or url) ({server.base}/none/376.txt)" in out.splitlines()  # fmt: skip


def test_a_url_source_cut_short_is_one_failed_line_and_nothing_is_kept(server, tmp_path, capsys):
    body = b"A true relation of the great fire in London. " * 100
    server.routes["/fire.txt"] = [("short", body, 200, "")]  # no ETag: nothing to resume by
    catalog = tmp_path / "mine.toml"
    catalog.write_text(f"""
[[source]]
url = "{server.base}/fire.txt"
id = "fire"
title = "A True Relation of the Fire"
author = "Anon"
year = 1666
category = "news"
""")
    folder = tmp_path / "c"
    args = ["corpus", "collect", "--no-builtin", "--catalog", str(catalog), "--out", str(folder),
            "--quiet", "--retries", "1", "--backoff", "0", "--delay", "0"]  # fmt: skip
    assert main(args) == 1
    said = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("failed fire:")]
    assert said == [
        f"failed fire: cut short: the connection closed after 200 of the {len(body)} bytes its "
        f"Content-Length gave [2 attempts] ({server.base}/fire.txt)"
    ]
    assert [p for p in folder.rglob("*") if p.is_file()] == [folder / "manifest.json"]


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--gutenberg-mirror", "ftp://mirror.example/pg"], "not an http:// or https:// address"),
        (["--gutenberg-mirror", "mirror.example/pg"], "not an http:// or https:// address"),
        (["--gutenberg-mirror", "https://m.example/{id}/{name}.txt"], "only {id} and {path}"),
        (["--archive-base", "archive.org"], "--archive-base archive.org: not an http://"),
        (["--gutenberg-mirror", "http://x/{foo}"], "only {id} and {path}"),  # no {id}: a base URL
    ],
)
def test_a_mirror_no_download_could_use_is_refused_once_up_front(flags, said, tmp_path, capsys):
    """Such a mirror used to fail each source in turn, each with its own error line."""
    out = tmp_path / "c"
    argv = ["corpus", "collect", "--out", str(out), "--quiet", "--limit", "1", "--retries", "0"]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err
    assert not out.exists()


def test_deadline_flag_reaches_the_downloader(server, tmp_path, capsys):
    server.routes["/pg/376.txt"] = [("drip", b"x" * 100_000, 100, 0.05)]
    catalog = tmp_path / "mine.toml"
    catalog.write_text(USER_CATALOG)
    args = ["corpus", "collect", "--no-builtin", "--catalog", str(catalog), "--out", str(tmp_path / "c"), "--quiet",
            "--gutenberg-mirror", f"{server.base}/pg/{{id}}.txt", "--delay", "0", "--id", "pg-376",
            "--deadline", "0.5", "--read-timeout", "5"]  # fmt: skip
    assert main(args) == 1
    record = json.loads((tmp_path / "c" / "manifest.json").read_text())
    record = record["sources"]["pg-376"]
    assert record["status"] == "failed" and "deadline of 0.5s" in record["error"]


def test_clean_local_files_only(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["corpus", "clean", "--in", str(tmp_path / "nothing"), "--extra", str(FIXTURES),
                 "--out", str(out), "--set", "min_chars=300", "--workers", "2", "--quiet"])  # fmt: skip
    assert code == 0
    ids = {d.id for d in read_documents(out / "documents.jsonl")}
    assert {"file-pg376", "oldbailey-17800112"} <= ids


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_link_that_loops_or_a_pipe_in_a_folder_is_rejected_as_unreadable(tmp_path, capsys):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "book.txt").write_bytes((FIXTURES / "pg376.txt").read_bytes())
    (texts / "loop.txt").symlink_to("loop.txt")
    os.mkfifo(texts / "pipe.txt")  # reading it would wait for a writer for ever
    out = tmp_path / "out"
    argv = ["corpus", "clean", "--in", str(tmp_path / "nothing"), "--extra", str(texts)]
    assert main([*argv, "--out", str(out), "--set", "min_chars=300", "--quiet"]) == 0
    log = [json.loads(line) for line in (out / "clean_log.jsonl").read_text().splitlines()]
    rules = {entry["id"]: entry.get("rule", entry["status"]) for entry in log}
    assert rules == {"file-book": "kept", "file-loop": "unreadable", "file-pipe": "unreadable"}


def test_clean_that_keeps_nothing_fails_and_leaves_the_last_corpus(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["corpus", "clean", "--in", str(tmp_path / "nothing"), "--extra", str(FIXTURES),
            "--out", str(out), "--set", "min_chars=300", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*argv, "--set", "min_chars=100000000"]) == 2
    err = capsys.readouterr().err
    assert "no document kept of" in err and "min_chars" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten


def test_clean_that_keeps_nothing_leaves_no_folder_it_made(tmp_path, capsys):
    out = tmp_path / "new" / "corpus"
    argv = ["corpus", "clean", "--in", str(tmp_path / "nothing"), "--extra", str(FIXTURES),
            "--out", str(out), "--set", "min_chars=100000000", "--quiet"]  # fmt: skip
    assert main(argv) == 2
    assert "nothing written" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["corpus", "clean", "--in", "/nonexistent/corpus"], "no collected sources"),
        (["corpus", "clean", "--extra", "/nonexistent/file.txt"], "not found"),
        (
            ["corpus", "clean", "--extra", str(FIXTURES), "--set", "min_qualty=1"],
            "expected key=value",
        ),
        (["corpus", "collect", "--status", "sure"], "--status 'sure'"),
        (["corpus", "collect", "--id", "pg-0"], "no source with id 'pg-0'"),
        (["corpus", "collect", "--deadline", "-1"], "--deadline must be >= 0"),
        (
            ["corpus", "collect", "--read-timeout", "0"],
            "--read-timeout must be a number of seconds above 0",
        ),
        (["corpus", "collect", "--connect-timeout", "nan"], "--connect-timeout must be a number"),
        (
            ["corpus", "collect", "--delay", "-1"],
            "--delay must be a finite number of seconds, 0 or",
        ),
        (
            ["corpus", "collect", "--delay", "inf"],
            "--delay must be a finite number of seconds, 0 or more, not inf",
        ),
        (
            ["corpus", "collect", "--backoff", "inf"],
            "--backoff must be a finite number of seconds, 0 or more, not inf",
        ),
        (["corpus", "collect", "--backoff", "nan"], "--backoff must be a finite number of seconds"),
        (["corpus", "collect", "--max-mb", "nan"], "--max-mb must be a number of megabytes"),
        (["corpus", "collect", "--max-mb", "inf"], "--max-mb must be a number of megabytes"),
        (["corpus", "collect", "--user-agent", "Mozilla ☃"], "printable ASCII only"),
        (["corpus", "collect", "--user-agent", "a\nb"], "printable ASCII only"),
        (
            ["corpus", "catalog", "--no-builtin", "--catalog", "LIST"],
            'an object with a "source" list',
        ),
        (
            ["corpus", "catalog", "--no-builtin", "--catalog", "LICENCES"],
            "licences must be a table",
        ),
        (["corpus", "catalog", "--no-builtin", "--catalog", "UTF16"], "is not UTF-8 text"),
        (["corpus", "catalog", "--catalog", "/nonexistent.toml"], "not found"),
        (["corpus", "collect", "--limit", "0", "--offline"], "--limit must be 1 or more"),
        (["corpus", "collect", "--limit", "-1", "--offline"], "--limit must be 1 or more"),
        (["corpus", "catalog", "--period", "bogus"], "--period 'bogus' is not one of"),
        (["corpus", "catalog", "--category", "novels"], "--category 'novels' is not one of"),
        (["corpus", "catalog", "--period", ","], "--period ',' names nothing"),  # not: all
        (["corpus", "collect", "--offline", "--status", " , "], "--status ' , ' names nothing"),
        (["corpus", "clean", "--extra", str(FIXTURES), "--workers", "0"], "--workers must be 1"),
        (
            ["corpus", "report", "--in", "/nonexistent/corpus"],
            "or give a corpus file with --documents (`hellolondon corpus sample` writes",
        ),
        (["corpus", "clean", "--extra", str(FIXTURES), "--out", "FILE"], "is not a folder"),
        (["corpus", "clean", "--extra", str(FIXTURES), "--config", "FILE"], "not UTF-8 text"),
        (["corpus", "clean", "--extra", "EMPTY"], "holds no .txt or .xml files"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(argv, message, capsys, tmp_path):
    (tmp_path / "FILE").write_bytes(b"\xff\xfe\x00binary")
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "LIST.json").write_text("[]")
    (tmp_path / "LICENCES.toml").write_text('licences = "x"\n' + USER_CATALOG)
    (tmp_path / "UTF16.toml").write_bytes(USER_CATALOG.encode("utf-16"))
    files = {"FILE": "FILE", "EMPTY": "EMPTY", "LIST": "LIST.json", "LICENCES": "LICENCES.toml",
             "UTF16": "UTF16.toml"}  # fmt: skip
    argv = [str(tmp_path / files[a]) if a in files else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert (tmp_path / "FILE").read_bytes() == b"\xff\xfe\x00binary"  # nothing overwritten


def test_catalog_lists_sources(capsys):
    assert main(["corpus", "catalog", "--status", "wrong"]) == 0
    out = capsys.readouterr().out
    assert "pg-203" in out and "3 sources" in out
    assert out.splitlines()[0].split() == ["ID", "STATUS", "YEAR", "PERIOD", "CATEGORY", "TITLE",
                                           "-", "AUTHOR"]  # fmt: skip
    assert main(["corpus", "catalog", "--id", "pg-376", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["title"] == "A Journal of the Plague Year"


def test_sample_writes_documents(tmp_path, capsys):
    path = tmp_path / "documents.jsonl"
    assert main(["corpus", "sample", "--out", str(path)]) == 0
    n = sum(1 for _ in read_documents(path))
    assert n > 0 and f"wrote {n} documents" in capsys.readouterr().out


def test_report_save_without_its_folder_is_refused_before_the_report(tmp_path, capsys):
    docs = tmp_path / "documents.jsonl"
    write_documents(docs, [Document(id="a", text="In the year of our Lord")])
    argv = ["corpus", "report", "--documents", str(docs), "--save"]
    assert main([*argv, "--in", str(tmp_path / "missing")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "is not a folder; give the corpus folder as --in" in err
    assert err.count("\n") == 1 and not (tmp_path / "missing").exists()


def test_sample_fills_an_empty_file(tmp_path, capsys):
    path = tmp_path / "documents.jsonl"
    path.write_bytes(b"")  # holds no documents: nothing to lose
    assert main(["corpus", "sample", "--out", str(path)]) == 0
    assert sum(1 for _ in read_documents(path)) > 0


def test_clean_does_not_replace_a_corpus_file_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "documents.jsonl").write_text("the bundled sample, say\n")
    argv = ["corpus", "clean", "--extra", str(FIXTURES), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "`corpus clean` did not write it" in err and "--force" in err
    assert (out / "documents.jsonl").read_text() == "the bundled sample, say\n"
    assert main([*argv, "--force"]) == 0
    assert main(argv) == 0  # its own output, written with its clean_log: a rerun replaces it
    assert sorted(p.name for p in out.iterdir()) == [
        "clean_log.jsonl", "documents.jsonl", "report.json", "report.md"
    ]  # fmt: skip
    import os
    import time

    later = time.time() + 5  # a corpus file put there after the clean (a stale log beside it)
    (out / "documents.jsonl").write_text("copied in later\n")
    os.utime(out / "documents.jsonl", (later, later))
    assert main(argv) == 2
    assert (out / "documents.jsonl").read_text() == "copied in later\n"


@pytest.mark.parametrize(
    "record, problem",
    [
        (5, "is not a JSON object"),
        ({"id": "a"}, "has no status"),
        ({"status": "ok", "source": {}}, "is ok but names no file (path)"),
        ({"status": "ok", "path": "raw/a.txt", "source": None}, "is ok but holds no catalog"),
    ],
)
@pytest.mark.parametrize("step", ["collect", "clean", "report"])
def test_a_manifest_record_of_another_shape_is_named_in_one_line(
    record, problem, step, tmp_path, capsys
):
    folder = tmp_path / "corpus"
    folder.mkdir()
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "sources": {"pg-376": record}}))
    write_documents(folder / "documents.jsonl", [Document(id="pg-376", text="The plague.")])
    before = manifest.read_text()
    argv = {
        "collect": ["collect", "--offline", "--id", "pg-376", "--out", str(folder), "--quiet"],
        "clean": ["clean", "--in", str(folder), "--out", str(tmp_path / "out"), "--quiet"],
        "report": ["report", "--in", str(folder)],
    }[step]
    assert main(["corpus", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {manifest}: the record of 'pg-376' {problem}")
    assert err.count("\n") == 1 and manifest.read_text() == before
