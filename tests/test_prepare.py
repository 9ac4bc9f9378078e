"""prepare: documents.jsonl -> train.bin / val.bin / meta.json, losslessly and atomically."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import torch

from hellolondon import prepare as prep
from hellolondon.cli import main
from hellolondon.corpus.documents import Document, read_documents, write_documents
from hellolondon.errors import UserError
from hellolondon.prepare import check_tokenizer_matches, choose_validation, load_meta, prepare
from hellolondon.tokenizer import Tokenizer, load_tokenizer, train_tokenizer

WORDS = [
    "the",
    "watermen",
    "of",
    "Southwark",
    "rowed",
    "to",
    "Whitehall",
    "while",
    "apprentices",
    "cried",
    "their",
    "wares",
]


def make_docs(n: int = 40) -> list[Document]:
    rng = np.random.default_rng(0)
    docs = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(20, 200)))
        text = f"Document {i}.\n" + " ".join(words) + ("\n  ſo ends it ✠" if i % 3 == 0 else "")
        source = "ballads" if i % 2 else "sermons"
        docs.append(
            Document(id=f"{source}/{i}", text=text, title=f"T{i}", year=1600 + 5 * i, source=source)
        )
    return docs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    docs = make_docs()
    write_documents(root / "docs.jsonl", docs)
    train_tokenizer((d.text for d in docs), root / "tok", vocab_size=400, historical=False)
    return root, docs


def read_bin(path) -> np.ndarray:
    return np.fromfile(path, dtype=np.uint16)


def split_docs(tokens: np.ndarray, eot: int) -> list[np.ndarray]:
    cuts = np.flatnonzero(tokens == eot)
    assert cuts.size and cuts[0] == 0  # every document starts with <|endoftext|>
    return [tokens[a + 1 : b] for a, b in zip(cuts, list(cuts[1:]) + [len(tokens)], strict=True)]


def test_prepare_is_lossless_and_described(setup, tmp_path):
    root, docs = setup
    meta = prepare(root / "docs.jsonl", root / "tok", tmp_path)
    tok = load_tokenizer(root / "tok")
    train, val = read_bin(tmp_path / "train.bin"), read_bin(tmp_path / "val.bin")
    assert (len(train), len(val)) == (meta["train_tokens"], meta["val_tokens"])
    val_ids = {s["id"] for s in meta["val_spans"]}
    expected_train = [d.text for d in docs if d.id not in val_ids]
    assert [tok.decode(t) for t in split_docs(train, tok.eot_id)] == expected_train
    by_id = {d.id: d for d in docs}
    for span in meta["val_spans"]:
        doc = by_id[span["id"]]
        assert val[span["start"]] == tok.eot_id
        assert tok.decode(val[span["start"] + 1 : span["end"]]) == doc.text
        assert (span["period"], span["source"], span["title"]) == (
            doc.period,
            doc.source,
            doc.title,
        )
    assert meta["val_documents"] == len(val_ids) >= 2
    assert meta["train_documents"] + meta["val_documents"] == len(docs)
    assert meta["vocab_size"] == tok.vocab_size and meta["tokenizer_fingerprint"] == tok.fingerprint
    assert meta["dtype"] == "uint16" and len(meta["corpus_sha256"]) == 64
    assert json.loads((tmp_path / "meta.json").read_text()) == {
        k: meta[k] for k in load_meta(tmp_path)
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "train.bin", "val.bin"]


def test_worker_pool_gives_the_same_bytes(setup, tmp_path, monkeypatch):
    root, _ = setup
    monkeypatch.setattr(prep, "CHUNK_CHARS", 2000)  # many chunks, so ordering is exercised
    prepare(root / "docs.jsonl", root / "tok", tmp_path / "one", workers=1)
    prepare(root / "docs.jsonl", root / "tok", tmp_path / "two", workers=2)
    for name in ("train.bin", "val.bin", "meta.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_long_documents_are_encoded_in_pieces_with_the_same_bytes(setup, tmp_path, monkeypatch):
    # A book-sized document must not be encoded in one go, nor a chunk (the tokenizer's records
    # of its tokens take ~50 times the text); cut into pieces, it gives the very same files.
    root, _ = setup
    prepare(root / "docs.jsonl", root / "tok", tmp_path / "whole", workers=1)
    seen: list[list[int]] = []
    real = Tokenizer.encode_batch

    def spy(self, texts):
        seen.append([len(t) for t in texts])
        return real(self, texts)

    monkeypatch.setattr(Tokenizer, "encode_batch", spy)
    monkeypatch.setattr(prep, "PIECE_CHARS", 40)
    monkeypatch.setattr(prep, "BATCH_CHARS", 200)
    monkeypatch.setattr(prep, "CHUNK_CHARS", 1000)  # pieces of one document span chunks
    prepare(root / "docs.jsonl", root / "tok", tmp_path / "cut", workers=1)
    assert 0 < max(max(call) for call in seen) < 80
    assert max(sum(call) for call in seen) < 200 + 80  # a few pieces at a time, not a chunk
    assert sum(len(call) > 1 for call in seen) > len(seen) / 2  # mostly several at once
    prepare(root / "docs.jsonl", root / "tok", tmp_path / "pool", workers=2)
    for name in ("train.bin", "val.bin", "meta.json"):
        whole = (tmp_path / "whole" / name).read_bytes()
        assert (tmp_path / "cut" / name).read_bytes() == whole
        assert (tmp_path / "pool" / name).read_bytes() == whole


def test_reading_a_long_document_holds_one_copy_of_its_text(tmp_path):
    # While `prepare` works on a book-sized document, the reader keeps only its fields, not the
    # line it came from as bytes and as a string too.
    size = 4_000_000
    write_documents(tmp_path / "big.jsonl", [Document(id="big", text="word " * (size // 5))])
    tracemalloc.start()
    try:
        docs = read_documents(tmp_path / "big.jsonl")  # alive, as in a loop over it
        doc = next(docs)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(doc.text) == size
    assert held < 1.5 * size


ORPHANS = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from hellolondon import prepare as prep

if __name__ == "__main__":
    pool = ProcessPoolExecutor(
        2, mp_context=get_context("spawn"), initializer=prep._init_worker,
        initargs=(sys.argv[1], os.getpid()),
    )
    for task in [pool.submit(time.sleep, 0.5) for _ in range(2)]:  # two tasks: two workers
        task.result()
    print(*pool._processes, flush=True)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_prepare_is_killed(setup, tmp_path):
    # SIGKILL (or SIGTERM) ends `prepare` without shutting its pool down; the workers must not
    # stay behind, each holding a tokenizer, waiting for tasks that never come.
    root, _ = setup
    script = tmp_path / "pool.py"
    script.write_text(ORPHANS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root / "tok")], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
    finally:
        proc.kill()
        proc.wait()
    assert len(workers) == 2
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left


KILLED_MIDWAY = """
import sys, time
from hellolondon import prepare as prep

prep.CHUNK_CHARS = 500
real = prep._Writer.write


def write_then_wait(self, chunk, arrays):
    real(self, chunk, arrays)
    for f in self.files.values():
        f.flush()
    print("writing", flush=True)
    time.sleep(60)


prep._Writer.write = write_then_wait
prep.prepare(sys.argv[1], sys.argv[2], sys.argv[3], workers=1)
"""


def test_temporary_files_of_a_prepare_killed_midway_go_with_the_next_one(setup, tmp_path):
    # SIGKILL cleans nothing up: the next prepare into the folder removes what it left.
    root, _ = setup
    script, out = tmp_path / "killed.py", tmp_path / "d"
    script.write_text(KILLED_MIDWAY)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    argv = [str(root / "docs.jsonl"), str(root / "tok"), str(out)]
    proc = subprocess.Popen(
        [sys.executable, str(script), *argv], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline() == "writing\n"
    finally:
        proc.kill()
        proc.wait()
    left = sorted(p.name for p in out.iterdir())
    assert {".train.bin.tmp", ".val.bin.tmp"} <= set(left) and "meta.json" not in left
    (out / ".notes.tmp").write_text("a user's")  # not a name prepare writes: it stays
    (out / "notes.txt").write_text("a user's")
    with pytest.raises(UserError, match="holds other files"):  # refused, yet it cleans up
        prepare(root / "docs.jsonl", root / "tok", out, workers=1)
    assert sorted(p.name for p in out.iterdir()) == [".notes.tmp", "notes.txt"]
    (out / "notes.txt").unlink()
    prepare(root / "docs.jsonl", root / "tok", out, workers=1)
    prepare(root / "docs.jsonl", root / "tok", tmp_path / "ref", workers=1)
    assert sorted(p.name for p in out.iterdir()) == [
        ".notes.tmp",
        "meta.json",
        "train.bin",
        "val.bin",
    ]
    for name in ("train.bin", "val.bin"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_a_token_file_that_cannot_be_opened_leaves_no_other(setup, tmp_path, monkeypatch):
    root, _ = setup
    real = open

    def no_val(path, *args, **kwargs):
        if str(path).endswith(".val.bin.tmp"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(prep, "open", no_val, raising=False)
    with pytest.raises(PermissionError):
        prepare(root / "docs.jsonl", root / "tok", tmp_path, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_progress_counts_characters(setup, tmp_path, monkeypatch):
    # One book can be most of a corpus: a bar counting documents would race to 99% and sit.
    root, docs = setup
    bars = []

    class Bar:
        def __init__(self, total, **_):
            self.total, self.done = total, []
            bars.append(self)

        def update(self, n):
            self.done.append(n)

        def close(self):
            pass

    monkeypatch.setattr(prep, "progress_bar", Bar)
    monkeypatch.setattr(prep, "CHUNK_CHARS", 3000)
    prepare(root / "docs.jsonl", root / "tok", tmp_path, workers=1, show_progress=True)
    (bar,) = bars
    assert bar.total == sum(bar.done) == sum(len(d.text) for d in docs)
    assert len(bar.done) > 3 and max(bar.done) < 3000 + 1500


def test_choose_validation():
    docs = [(f"d{i}", "a" if i < 50 else "b", 100) for i in range(100)]
    val = choose_validation(docs, 0.05)
    assert val == choose_validation(list(reversed(docs)), 0.05)  # order does not matter
    assert len([v for v in val if int(v[1:]) < 50]) in (2, 3)  # about 5% of each source
    assert len([v for v in val if int(v[1:]) >= 50]) in (2, 3)
    assert len(choose_validation([("x", "s", 10), ("y", "s", 10)], 0.05)) == 1  # never empty
    assert choose_validation([("only", "s", 10)], 0.05) == set()  # never the whole corpus


@pytest.mark.parametrize("sizes", [(40_000_000, 30_000), (30_000, 40_000_000)])
def test_a_validation_set_made_of_one_document_takes_the_shortest(sizes):
    docs = [("a", "s", sizes[0]), ("b", "s", sizes[1])]
    shortest = "a" if sizes[0] < sizes[1] else "b"
    assert choose_validation(docs, 0.05) == {shortest}  # not the book the model should learn


def test_errors_are_one_line_and_leave_old_outputs(setup, tmp_path, monkeypatch):
    root, _ = setup
    out = tmp_path / "out"
    prepare(root / "docs.jsonl", root / "tok", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    write_documents(tmp_path / "one.jsonl", [Document(id="a", text="alone")])
    write_documents(tmp_path / "cleaned" / "documents.jsonl", [Document(id="a", text="in")])
    cases = {
        "missing.jsonl": "not found",
        "cleaned": "cleaned is a folder, not a corpus file; give .*cleaned/documents.jsonl",
        "empty.jsonl": "is empty",
        "blank.jsonl": "no documents",
        "binary.jsonl": "not UTF-8",
        "one.jsonl": "one document",
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as info:
            prepare(tmp_path / name, root / "tok", out)
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="no tokenizer"):
        prepare(root / "docs.jsonl", tmp_path / "no-tok", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_documents_that_share_an_id_are_refused(setup, tmp_path):
    root, docs = setup
    write_documents(tmp_path / "dup.jsonl", [Document(id="same", text=d.text) for d in docs[:3]])
    with pytest.raises(UserError, match="two documents with the id 'same'"):
        prepare(tmp_path / "dup.jsonl", root / "tok", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": 5, "text": "a"}', ": 'id' must be a string, not 5"),
        ('{"id": "a", "text": ["x"]}', ": 'text' must be a string"),
        ('{"id": null, "text": "a"}', ": 'id' must be a string, not null"),
        ('{"id": "a", "text": "x", "year": "1623"}', ": 'year' must be a whole number"),
        # valid JSON, but half a UTF-16 pair is no character: the tokenizer failed on it
        ('{"id": "a", "text": "x \\ud800 y"}', ": 'text' holds an unpaired surrogate escape"),
        ('{"id": "a", "text": "x", "title": "\\uDC80"}', ": 'title' holds an unpaired surrogate"),
        ("[1, 2]", " is an array, not a JSON object"),
        ('"a whole book"', " is a string, not a JSON object"),
        ("null", " is null, not a JSON object"),
        ('{"id": "a"}', " has no 'text'; every document needs the keys 'id' and 'text'"),
        ('{"body": "x"}', " has no 'id' and no 'text'"),
    ],
)
def test_a_line_that_is_not_a_good_document_says_what_is_wrong(
    setup, tmp_path, capsys, line, message
):
    root, _ = setup
    (tmp_path / "docs.jsonl").write_text('{"id": "b", "text": "y"}\n' + line + "\n")
    out = tmp_path / "out"
    argv = ["prepare", "--corpus", str(tmp_path / "docs.jsonl"), "--tokenizer", str(root / "tok")]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "docs.jsonl:2" + message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_corpus_file_that_starts_with_a_byte_order_mark_is_read(setup, tmp_path):
    root, docs = setup
    write_documents(tmp_path / "plain.jsonl", docs[:4])
    marked = tmp_path / "marked.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.jsonl").read_bytes())
    plain = prepare(tmp_path / "plain.jsonl", root / "tok", tmp_path / "a")
    assert (
        prepare(marked, root / "tok", tmp_path / "b")["tokens_fingerprint"]
        == (plain["tokens_fingerprint"])
    )
    assert [d.id for d in read_documents(marked)] == [d.id for d in docs[:4]]


def test_a_null_title_or_year_is_a_missing_one(setup, tmp_path):
    root, docs = setup
    lines = [
        json.dumps({"id": f"d{i}", "text": d.text, "title": None, "year": None})
        for i, d in enumerate(docs[:4])
    ]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    meta = prepare(tmp_path / "docs.jsonl", root / "tok", tmp_path / "out")
    assert meta["val_spans"][0]["title"] == "" and meta["val_spans"][0]["period"] == ""


def test_an_empty_token_file_is_named_when_training_reads_it(setup, tmp_path):
    from hellolondon.train.data import Batches

    root, _ = setup
    prepare(root / "docs.jsonl", root / "tok", tmp_path)
    (tmp_path / "train.bin").write_bytes(b"")
    with pytest.raises(UserError, match="train.bin has 0 tokens, fewer than one context"):
        Batches(tmp_path, 8, 0, torch.device("cpu"))


def test_failure_midway_leaves_no_half_files(setup, tmp_path, monkeypatch):
    root, _ = setup
    monkeypatch.setattr(prep, "CHUNK_CHARS", 500)
    calls = []

    def broken(*args):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("disk full")
        return real(*args)

    real = prep._encode
    monkeypatch.setattr(prep, "_encode", broken)
    with pytest.raises(RuntimeError):
        prepare(root / "docs.jsonl", root / "tok", tmp_path, workers=1)
    assert list(tmp_path.iterdir()) == []


class _FullDisk(io.RawIOBase):
    """A file on a disk with `room` bytes left: writes past it fail as a full disk does."""

    def __init__(self, path, room: int) -> None:
        self.file, self.room = open(path, "wb", buffering=0), room  # noqa: SIM115

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.file.close()
        super().close()


def test_a_full_disk_leaves_no_temporary_files(setup, tmp_path, monkeypatch, capsys):
    # Closing a file whose buffer cannot be written fails too; the files must go all the same,
    # or the space they hold stays taken on the disk that is full.
    root, _ = setup
    monkeypatch.setattr(prep, "CHUNK_CHARS", 500)
    monkeypatch.setattr(
        prep, "open", lambda path, *a, **k: io.BufferedWriter(_FullDisk(path, 600)), raising=False
    )
    out = tmp_path / "data"
    code = main(["prepare", "--corpus", str(root / "docs.jsonl"), "--tokenizer", str(root / "tok"),
                 "--out", str(out)])  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err.startswith("error: the disk is full")
    assert not out.exists()


def test_a_replacement_cut_short_leaves_no_folder_that_looks_complete(setup, tmp_path, monkeypatch):
    """Replacing token files: the old meta.json goes first, so old and new files are never
    taken together for a complete folder."""
    root, _ = setup
    prepare(root / "docs.jsonl", root / "tok", tmp_path, workers=1)
    moved = []
    real_replace = os.replace

    def killed_after_one(src, dst):
        if moved:
            raise KeyboardInterrupt  # the process stops between two renames
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(prep.os, "replace", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        prepare(root / "docs.jsonl", root / "tok", tmp_path, workers=1)
    assert [p.name for p in moved] == ["train.bin"] and not (tmp_path / "meta.json").exists()
    assert not prep.is_prepared(tmp_path)
    with pytest.raises(UserError, match="without their meta.json .* add --force to make them"):
        prep.check_replace(tmp_path)


def test_two_prepares_into_one_folder_are_not_run_at_once(setup, tmp_path):
    from hellolondon.files import writing

    root, _ = setup
    held = writing(tmp_path)  # another prepare, or a tokenizer train or corpus clean, say
    busy = pytest.raises(UserError, match=r"is being written by another hellolondon command")
    with held, busy:
        prepare(root / "docs.jsonl", root / "tok", tmp_path, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_vocab_too_big_for_uint16(setup, tmp_path, monkeypatch):
    root, _ = setup
    tok = load_tokenizer(root / "tok")
    tok.vocab_size = 70000
    monkeypatch.setattr(prep, "load_tokenizer", lambda _path: tok)
    with pytest.raises(UserError, match="uint16"):
        prepare(root / "docs.jsonl", root / "tok", tmp_path)


def test_load_meta_and_tokenizer_check(setup, tmp_path):
    root, docs = setup
    prepare(root / "docs.jsonl", root / "tok", tmp_path)
    meta = load_meta(tmp_path)
    check_tokenizer_matches(meta, load_tokenizer(root / "tok"))
    other = train_tokenizer(
        (d.text for d in docs[:10]), tmp_path / "other", vocab_size=350, historical=False
    )
    with pytest.raises(UserError, match="vocab size"):
        check_tokenizer_matches(meta, other)
    with pytest.raises(UserError, match="another tokenizer"):
        check_tokenizer_matches(dict(meta, vocab_size=other.vocab_size), other)
    (tmp_path / "val.bin").write_bytes(b"\x00\x00")
    with pytest.raises(UserError, match="does not match"):
        load_meta(tmp_path)
    with pytest.raises(UserError, match="nothing does not exist; give the folder"):
        load_meta(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty has no meta.json"):
        load_meta(tmp_path / "empty")


@pytest.mark.parametrize("text", ["[1]\n", '"meta"\n', '{"train_tokens": "12", "val_tokens": 1}\n'])
def test_a_meta_json_of_the_wrong_shape_is_one_line(setup, tmp_path, capsys, text):
    root, _ = setup
    prepare(root / "docs.jsonl", root / "tok", tmp_path)
    (tmp_path / "meta.json").write_text(text, encoding="utf-8")
    assert main(["train", "--preset", "tiny", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "prepare" in err and "Error:" not in err


def test_cli_prepare(setup, tmp_path, capsys):
    root, _ = setup
    args = ["prepare", "--corpus", str(root / "docs.jsonl"), "--tokenizer", str(root / "tok")]
    assert main(args + ["--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "MB/s" in out and err == ""  # no progress bar into a pipe or a log file
    assert main(args + ["--out", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    bad = ["prepare", "--corpus", str(tmp_path / "x.jsonl"), "--tokenizer", str(root / "tok")]
    assert main(bad + ["--out", str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_prepare_lowers_workers_above_the_cpus_with_a_note(
    setup, tmp_path, capsys, monkeypatch
):
    import hellolondon.prepare as prep

    root, _ = setup
    monkeypatch.setattr(prep, "usable_cpus", lambda: 1)
    args = ["prepare", "--corpus", str(root / "docs.jsonl"), "--tokenizer", str(root / "tok")]
    assert main([*args, "--out", str(tmp_path), "--workers", "64"]) == 0
    err = capsys.readouterr().err
    assert err == ("note: --workers 64 is more than the CPUs this process may use (1); using 1\n")
    assert (tmp_path / "train.bin").exists()


def test_cli_prepare_does_not_replace_token_files_without_force(setup, tmp_path, capsys):
    root, docs = setup
    args = ["prepare", "--corpus", str(root / "docs.jsonl"), "--tokenizer", str(root / "tok")]
    out = tmp_path / "data"
    assert main([*args, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fingerprint = load_tokenizer(root / "tok").fingerprint[:12]
    write_documents(tmp_path / "fewer.jsonl", docs[:20])
    other = ["prepare", "--corpus", str(tmp_path / "fewer.jsonl"), "--tokenizer", str(root / "tok")]
    capsys.readouterr()
    assert main([*other, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"already holds token files (from {(root / 'docs.jsonl').resolve()}" in err
    assert f"with tokenizer {fingerprint})" in err and "train.bin, val.bin, meta.json" in err
    assert "resume" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten
    assert main([*other, "--out", str(out), "--force"]) == 0
    assert load_meta(out)["train_documents"] + load_meta(out)["val_documents"] == 20
    # A half-written folder (train.bin only) is protected too.
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.bin").write_bytes(b"\x00\x00")
    assert main([*args, "--out", str(tmp_path / "half")]) == 2
    assert "holds token files without their meta.json" in capsys.readouterr().err


def test_cli_prepare_writes_no_token_files_among_other_files(setup, tmp_path, capsys):
    """A tokenizer's folder, say: --force replaces token files, never other files."""
    root, _ = setup
    args = ["prepare", "--corpus", str(root / "docs.jsonl"), "--tokenizer", str(root / "tok")]
    before = {p.name: p.read_bytes() for p in (root / "tok").iterdir()}
    for force in ([], ["--force"]):
        assert main([*args, "--out", str(root / "tok"), *force]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {root / 'tok'} holds other files (")
        assert err.endswith("token files get a folder of their own: choose another --out\n")
    assert {p.name: p.read_bytes() for p in (root / "tok").iterdir()} == before


def test_meta_records_when_the_documents_were_written(tiny_data):
    from hellolondon.prepare import dates, load_meta

    assert dates([(1611, "stuart"), (None, ""), (1623, "stuart"), (1702, "georgian")]) == {
        "years": [1611, 1702],
        "periods": {"stuart": 2, "unknown": 1, "georgian": 1},
    }
    assert dates([(None, "")]) == {"years": None, "periods": {"unknown": 1}}
    meta = load_meta(tiny_data)  # 12 plays of the First Folio
    assert meta["years"] == [1623, 1623] and meta["periods"] == {"stuart": 12}
    assert meta["sources"] == 1  # all from the Folio


def test_meta_counts_the_distinct_sources(setup, tmp_path):
    root, docs = setup
    meta = prepare(root / "docs.jsonl", root / "tok", tmp_path, workers=1)
    assert meta["sources"] == len({d.source for d in docs}) == 2  # ballads and sermons
    unnamed = [Document(id=f"{d.id}-x", text=d.text) for d in docs[:2]]  # no `source` field
    write_documents(tmp_path / "more.jsonl", [*docs, *unnamed])
    meta = prepare(tmp_path / "more.jsonl", root / "tok", tmp_path / "more", workers=1)
    assert meta["sources"] == 2  # a document that names none is not one more source


def test_token_ids_beyond_the_vocabulary_are_named_before_training(setup, tmp_path, capsys):
    root, _ = setup
    prepare(root / "docs.jsonl", root / "tok", tmp_path / "d", workers=1)
    meta = load_meta(tmp_path / "d")
    ids = np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16)
    ids[5] = meta["vocab_size"] + 7  # a damaged file: same size, one id out of range
    ids.tofile(tmp_path / "d" / "train.bin")
    with pytest.raises(UserError, match=f"holds token id {meta['vocab_size'] + 7:,}, beyond"):
        prep.check_token_ids(tmp_path / "d", meta["vocab_size"])
    argv = ["train", "--data", str(tmp_path / "d"), "--out-dir", str(tmp_path / "runs")]
    assert main([*argv, "--wandb-mode", "disabled", "train.max_iters=1"]) == 2
    assert "beyond the vocabulary" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before the run folder


@pytest.mark.parametrize("vocab", [None, "300", 100_000, 1])
def test_a_meta_json_vocab_size_that_cannot_be_is_one_line(setup, tmp_path, vocab):
    root, _ = setup
    prepare(root / "docs.jsonl", root / "tok", tmp_path, workers=1)
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps(meta | {"vocab_size": vocab}))
    with pytest.raises(UserError, match="vocab_size .* not a whole number from 2 to 65,536"):
        load_meta(tmp_path)


def test_sigterm_during_prepare_leaves_no_half_files(setup, tmp_path, monkeypatch, capsys):
    """A scheduler's `kill` cleans up as Ctrl-C does: the command ends with 143, and neither
    half-written token files nor their temporary names stay behind."""
    root, _ = setup
    monkeypatch.setattr(prep, "CHUNK_CHARS", 500)
    real, calls = prep._encode, []

    def terminated_midway(*args):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(prep, "_encode", terminated_midway)
    argv = ["prepare", "--corpus", str(root / "docs.jsonl"), "--tokenizer", str(root / "tok")]
    assert main([*argv, "--out", str(tmp_path / "d"), "--workers", "1"]) == 143
    assert capsys.readouterr().err == "terminated\n"
    assert not (tmp_path / "d").exists()  # the folder it made, left empty, goes too
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was
