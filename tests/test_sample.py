"""The bundled sample corpus: content, provenance, split share, and the build script's parsing."""

from __future__ import annotations

import hashlib
import importlib.util
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from hellolondon.cli import main
from hellolondon.corpus.documents import read_documents
from hellolondon.corpus.sample import SAMPLE_FILE, sample_documents, sample_provenance, write_sample
from hellolondon.prepare import choose_validation

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_sample_corpus.py"


@pytest.fixture(scope="module")
def docs():
    return list(sample_documents())


def load_script():
    spec = importlib.util.spec_from_file_location("build_sample_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_holds_the_folio_and_the_bible(docs):
    assert Counter(d.category for d in docs) == {"drama": 35, "religious": 66}
    assert len({d.id for d in docs}) == len(docs)
    assert {d.year for d in docs} == {1623, 1611}
    assert all(d.period == "stuart" and d.licence == "public domain" and d.text for d in docs)
    hamlet = next(d for d in docs if d.id == "folio1623/hamlet")
    assert hamlet.text.startswith("The Tragedie of Hamlet") and "vnfold" in hamlet.text
    genesis = next(d for d in docs if d.id == "kjv1611/genesis")
    assert "In the beginning God created the heaven and the earth." in genesis.text
    assert 8_000_000 < sum(len(d.text) for d in docs) < 10_000_000
    assert not any("Project Gutenberg" in d.text or "Ge1:1" in d.text for d in docs)


def test_provenance_matches_the_packaged_texts(docs):
    prov = sample_provenance()
    packed = resources.files("hellolondon").joinpath("data", SAMPLE_FILE).read_bytes()
    assert len(packed) < 4 * 2**20
    assert hashlib.sha256(packed).hexdigest() == prov["xz_sha256"]
    by_id = {d["id"]: d for d in prov["documents"]}
    assert len(by_id) == len(docs) == prov["documents_count"]
    for doc in docs:
        assert by_id[doc.id]["sha256"] == hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
    assert {s["registry"] for s in prov["sources"]} == {"PyPI", "Debian"}


def test_write_sample_round_trips(tmp_path, docs):
    path = tmp_path / "sub" / "documents.jsonl"
    assert write_sample(path) == len(docs)
    assert [d.id for d in read_documents(path)] == [d.id for d in docs]
    assert sorted(p.name for p in path.parent.iterdir()) == ["documents.jsonl"]


def test_sample_command_never_replaces_other_documents_without_force(tmp_path, capsys):
    out = tmp_path / "documents.jsonl"
    out.write_text('{"id": "pg-376", "text": "collected and cleaned"}\n')
    assert main(["corpus", "sample", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds other documents" in err and "--force" in err and "\n" not in err
    assert "collected and cleaned" in out.read_text()
    assert main(["corpus", "sample", "--out", str(out), "--force"]) == 0
    assert main(["corpus", "sample", "--out", str(out)]) == 0  # the sample again: nothing lost
    assert len(list(read_documents(out))) == 101


def test_a_sample_that_fails_to_be_written_leaves_no_folder_it_made(tmp_path, monkeypatch, capsys):
    import errno

    from hellolondon.corpus import sample

    class FullDisk:
        def to_json(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sample, "sample_documents", lambda: [FullDisk()])
    assert main(["corpus", "sample", "--out", str(tmp_path / "new" / "documents.jsonl")]) == 1
    assert capsys.readouterr().err.startswith("error: the disk is full")
    assert not (tmp_path / "new").exists()


def test_validation_share_of_the_sample(docs):
    val = choose_validation([(d.id, d.source, len(d.text)) for d in docs])
    categories = Counter(d.category for d in docs if d.id in val)
    assert categories["drama"] >= 1 and categories["religious"] >= 1
    share = sum(len(d.text) for d in docs if d.id in val) / sum(len(d.text) for d in docs)
    assert 0.03 < share < 0.07


def test_script_strips_gutenberg_boilerplate():
    script = load_script()
    raw = (
        "The Project Gutenberg EBook of Hamlet\r\n*** START OF THIS PROJECT GUTENBERG EBOOK ***\r\n"
        "The Tragedie of Hamlet\r\n<<THIS ELECTRONIC VERSION IS COPYRIGHT\r\nblah>>\r\n"
        "Enter Barnardo\r\n*** END OF THIS PROJECT GUTENBERG EBOOK ***\r\nlicence text"
    )
    assert script.strip_gutenberg(raw) == "The Tragedie of Hamlet\nEnter Barnardo\n"
    assert script.strip_gutenberg("\nNo header here\n\n") == "No header here\n"


def test_script_parses_bible_output():
    script = load_script()
    lines = [f"{abbr}1:1 First verse of {name}." for abbr, name in script.BOOK_NAMES.items()]
    lines.insert(1, "Ge1:2 Second verse.")
    lines.insert(2, "Ge2:1 Next chapter.")
    books = script.kjv_documents("\n".join(lines) + "\n")
    assert len(books) == 66 and books[0].id == "kjv1611/genesis"
    assert books[0].text == (
        "Genesis\n\nCHAPTER 1\n\nFirst verse of Genesis.\nSecond verse.\n\nCHAPTER 2\n\nNext chapter.\n"
    )
    assert books[-1].title == "Revelation" and books[8].id == "kjv1611/1_samuel"
    with pytest.raises(SystemExit):
        script.kjv_documents("not a verse\n")
