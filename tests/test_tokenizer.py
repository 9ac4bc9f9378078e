"""Tokenizer: lossless round trips, historical terms as single tokens, Hugging Face format."""

from __future__ import annotations

import json
import os
import shutil
from itertools import islice

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hellolondon.cli import main
from hellolondon.corpus.documents import Document, write_documents
from hellolondon.corpus.sample import sample_documents
from hellolondon.errors import UserError
from hellolondon.tokenizer import (
    EOT,
    historical_terms,
    load_tokenizer,
    read_token_file,
    term_counts,
    text_pieces,
    train_tokenizer,
)

VOCAB = 2000


def small_texts() -> list[str]:
    # The start of every play and book: varied enough for merges, small enough to train in ~1 s.
    return [doc.text[:4000] for doc in sample_documents()]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(small_texts(), out, vocab_size=VOCAB, historical=True)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


TRICKY = [
    "",
    "Enter Barnardo and Francisco two Centinels.\n\n  Barnardo. Who's there?",
    "    indented\n\ttabbed\r\nwindows\rold mac",
    "the long s: ſhall, ſo; æ œ ꝑ é ü ñ",
    "emoji 🎉👑🏰 and CJK 倫敦 and Arabic لندن",
    "\x00\x01\x07 control \x1b[0m \u200b zero width \ufeff bom",
    "literal <|endoftext|> and <|pad|> in the text",
    "  leading and trailing spaces  ",
    "Hello  world ,  don't .  ' s",
]


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_tricky(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=200))
def test_round_trip_any_text(tok, text):
    # Cs (lone surrogates) are not Unicode scalar values and cannot be written as UTF-8 at all.
    assert tok.decode(tok.encode(text)) == text


def test_control_tokens_never_come_from_text(tok):
    assert tok.eot_id == 0
    assert tok.eot_id not in tok.encode(f"a {EOT} b")
    assert tok.decode([tok.eot_id]) == EOT


def test_historical_terms_are_single_reachable_tokens(tok):
    terms = historical_terms()
    assert len(terms) >= 150
    for term in terms:
        assert len(tok.encode(" " + term)) == 1, term
    ids = tok.encode("He walked from Cheapside to Billingsgate with a costermonger.")
    assert tok.encode(" Cheapside")[0] in ids
    assert tok.encode(" costermonger")[0] in ids


def test_vocab_size_is_at_most_requested(tok):
    assert tok.vocab_size <= VOCAB
    assert tok.vocab_size > 1000  # the small corpus has enough pairs to fill most of it


def test_token_file_parses_control_first():
    control, terms = read_token_file()
    assert control[0] == EOT
    assert {"people", "places", "trades", "period"} <= set(terms)
    with pytest.raises(ValueError):
        read_token_file("<|endoftext|>\nLombard Street\n")
    with pytest.raises(ValueError):
        read_token_file("Cheapside\n")


def test_training_is_deterministic(tmp_path, tok):
    again = train_tokenizer(small_texts(), tmp_path / "again", vocab_size=VOCAB, historical=True)
    assert again.fingerprint == tok.fingerprint
    other = train_tokenizer(
        small_texts(), tmp_path / "other", vocab_size=VOCAB - 100, historical=True
    )
    assert other.fingerprint != tok.fingerprint


@pytest.mark.parametrize("size", [1, 7, 40])
def test_text_cut_in_pieces_keeps_its_tokens(tok, size):
    # A book-sized document is encoded (and counted for training) in pieces; the pieces must
    # give exactly the tokens of the whole text, whitespace runs and all.
    assert tok.splits_safely
    texts = [*TRICKY, "x\x1cy \u3000z a\u2028b", small_texts()[3]]
    for text in texts:
        pieces = list(text_pieces(text, size))
        assert "".join(pieces) == text
        assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text)
    long = small_texts()[0]
    assert max(len(p) for p in text_pieces(long, 40)) < 80 and len(long) > 1000


def test_training_in_pieces_gives_the_same_tokenizer(tmp_path, tok, monkeypatch):
    import hellolondon.tokenizer as tokenizer_module

    monkeypatch.setattr(tokenizer_module, "PIECE_CHARS", 50)
    cut = train_tokenizer(small_texts(), tmp_path / "cut", vocab_size=VOCAB, historical=True)
    assert cut.fingerprint == tok.fingerprint


def test_runs_without_a_space_are_cut_into_words_for_training_only(tmp_path, tok):
    from hellolondon.tokenizer import MAX_WORD, bounded_words

    text = "It was " + "x" * (2 * MAX_WORD + 5) + " in London,\n" + "-" * MAX_WORD
    parts = list(bounded_words(text))
    assert "".join(parts) == text and max(map(len, parts)) == MAX_WORD
    assert parts[:4] == ["It was ", "x" * MAX_WORD, "x" * MAX_WORD, "x" * 5]
    assert parts[-1] == "-" * MAX_WORD
    assert list(bounded_words("a b")) == ["a b"] and list(bounded_words("")) == [""]
    # ordinary text is not cut, so the tokenizer is the one it always was
    assert all(list(bounded_words(t)) == [t] for t in small_texts())
    # 300,000 characters without a space: BPE's time grows with a word's length squared
    # (minutes uncut); cut, it trains like any text, and prepare encodes it whole
    long = train_tokenizer(["x" * 300_000, *small_texts()], tmp_path / "x", vocab_size=600)
    assert long.decode(long.encode("x" * 1000)) == "x" * 1000


def test_fingerprint_ignores_json_layout(tmp_path, tok_dir, tok):
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    (tmp_path / "tokenizer.json").write_text(
        json.dumps(data, indent=4, sort_keys=True), encoding="utf-8"
    )
    assert load_tokenizer(tmp_path).fingerprint == tok.fingerprint


def test_without_historical_terms(tmp_path):
    plain = train_tokenizer(small_texts(), tmp_path / "a", vocab_size=600, historical=False)
    assert plain.vocab_size <= 600
    assert len(plain.encode(" Houndsditch")) > 1
    small = train_tokenizer(small_texts(), tmp_path / "b", vocab_size=600)  # too small: left out
    assert small.fingerprint == plain.fingerprint


def test_bad_vocab_sizes(tmp_path):
    with pytest.raises(UserError, match="65536"):
        train_tokenizer(["text"], tmp_path / "a", vocab_size=70000)
    with pytest.raises(UserError, match="too small"):
        train_tokenizer(small_texts(), tmp_path / "b", vocab_size=400, historical=True)


@pytest.mark.parametrize("size", ["0", "258", "65537"])
def test_a_vocab_size_out_of_range_says_which_sizes_can_be(tmp_path, capsys, size):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": "a", "text": "The watermen of Southwark"}\n')
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--out", str(tmp_path / "tok")]
    assert main([*argv, "--vocab-size", size]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: vocab size {size} cannot be") and err.count("\n") == 1
    assert err.rstrip().endswith("give a size from 259 to 65536")
    assert not (tmp_path / "tok").exists()


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="no tokenizer"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="not a valid"):
        load_tokenizer(tmp_path)


def test_transformers_loads_it_unchanged(tok_dir, tok):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    assert hf.eos_token_id == tok.eot_id
    for text in TRICKY[1:] + ["The Mercers of Cheapside"]:
        ids = tok.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf(text)["input_ids"] == ids
        assert hf.decode(ids) == tok.decode(ids) == text


def test_literal_control_token_in_text_is_text_for_transformers_too(tok_dir, tok):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    text = f"the players said {EOT} aloud"
    ids = tok.encode(text)
    assert tok.eot_id not in ids and hf.encode(text, add_special_tokens=False) == ids
    # The real token still works both ways: as the end of a document and in decoding.
    assert hf.convert_tokens_to_ids(EOT) == hf.eos_token_id == tok.eot_id
    assert hf.decode(ids + [tok.eot_id]) == tok.decode(ids + [tok.eot_id]) == text + EOT
    assert hf.decode(ids + [tok.eot_id], skip_special_tokens=True) == text


def test_the_transformers_floor_reads_split_special_tokens():
    # transformers 4.42.0 is the first release whose PreTrainedTokenizerFast takes
    # split_special_tokens from tokenizer_config.json (4.40.0 and 4.41.0 do not).
    import re
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    (spec,) = [d for d in extras["hf"] if d.startswith("transformers")]
    floor = tuple(int(p) for p in re.findall(r"\d+", spec.split(">=")[1]))
    assert floor >= (4, 42)


def test_term_counts(tok):
    counts = term_counts(tok, ["and thou art in Cheapside; thou art", "Cheapside!"])
    assert counts["thou"] == 2
    assert counts["Cheapside"] == 1  # "Cheapside" at the start of a text has no leading space
    assert counts["Pepys"] == 0
    # a term's token at the start of a longer word is not the term
    assert tok.encode(" ruffian")[0] == tok.encode(" ruff")[0]
    counts = term_counts(tok, ["a ruffian, a ruff. The ruffle and the ruff", "so thou thousand"])
    assert counts["ruff"] == 2 and counts["thou"] == 1


def test_cli_train_encode_terms(tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    write_documents(corpus, islice(sample_documents(), 0, 101, 10))
    out = tmp_path / "tok"
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--corpus",
                str(corpus),
                "--out",
                str(out),
                "--vocab-size",
                "1500",
            ]
        )
        == 0
    )
    assert load_tokenizer(out).vocab_size <= 1500
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "and the King"]) == 0
    assert "' the'" in capsys.readouterr().out
    # a character split over two tokens is shown as its bytes, not as byte-level symbols
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "ſ café"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("'<0xC5>' | '<0xBF>' | ' ca'")
    terms = ["tokenizer", "terms", "--tokenizer", str(out), "--corpus"]
    assert main([*terms, str(corpus)]) == 0
    printed = capsys.readouterr().out
    assert "historical terms are single tokens" in printed
    groups = [line.split(":")[0].strip() for line in printed.splitlines() if ":" in line]
    assert groups == ["people", "places", "trades", "period"]  # each category's count
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "nope"), "x"]) == 2
    assert "no tokenizer" in capsys.readouterr().err
    assert main([*terms, str(corpus), "--top", "-1"]) == 2
    assert capsys.readouterr().err == "error: --top must be 0 or more, not -1\n"
    (tmp_path / "empty.jsonl").write_text("")  # all zeros would read as "no term occurs"
    assert main([*terms, str(tmp_path / "empty.jsonl")]) == 2
    printed, err = capsys.readouterr()
    assert err.startswith("error: corpus file ") and "has no documents" in err and printed == ""


def test_a_vocabulary_the_corpus_cannot_fill_is_a_warning(tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    write_documents(corpus, [Document(id="a", text="the cat sat on the mat, the end")])
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--out", str(tmp_path / "tok")]
    assert main([*argv, "--vocab-size", "1000"]) == 0
    out, err = capsys.readouterr()
    got = load_tokenizer(tmp_path / "tok").vocab_size
    assert got < 1000 and out.startswith(f"tokenizer: {got} tokens")
    assert err == (
        f"warning: {got:,} tokens, not the 1,000 asked for: no pair of symbols left occurs "
        "twice in this corpus; a larger corpus fills the vocabulary\n"
    )


def test_every_byte_level_symbol_reads_back_as_its_byte():
    from tokenizers import pre_tokenizers

    from hellolondon.tokenizer import _BYTE_OF

    assert set(_BYTE_OF) == set(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(_BYTE_OF.values()) == list(range(256))
    assert _BYTE_OF["Ġ"] == ord(" ") and _BYTE_OF["Ċ"] == ord("\n") and _BYTE_OF["a"] == ord("a")


def test_cli_train_does_not_replace_a_tokenizer_without_force(tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    write_documents(corpus, islice(sample_documents(), 0, 101, 20))
    out = tmp_path / "tok"
    train = ["tokenizer", "train", "--corpus", str(corpus), "--out", str(out)]
    assert main([*train, "--vocab-size", "600"]) == 0
    first = load_tokenizer(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main([*train, "--vocab-size", "700"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"already holds a tokenizer (fingerprint {first.fingerprint[:12]})" in err
    assert "token files prepared with it" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten
    assert main([*train, "--vocab-size", "700", "--force"]) == 0
    assert load_tokenizer(out).fingerprint != first.fingerprint
    (tmp_path / "file").write_text("x")
    assert main([*train[:-1], str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    data = tmp_path / "data"  # a folder of other files (token files): never written into
    data.mkdir()
    (data / "train.bin").write_bytes(b"\0\0")
    (data / ".hidden").write_text("")
    for force in ([], ["--force"]):
        assert main([*train[:-1], str(data), *force]) == 2
        err = capsys.readouterr().err
        assert (
            err
            == f"error: {data} holds other files (train.bin); a tokenizer gets a folder of its own: choose another --out\n"
        )
    assert sorted(p.name for p in data.iterdir()) == [".hidden", "train.bin"]


def test_cli_train_refuses_a_folder_holding_what_a_killed_prepare_left(tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    write_documents(corpus, islice(sample_documents(), 0, 101, 20))
    data = tmp_path / "data"  # as a prepare killed by SIGKILL leaves it
    data.mkdir()
    for name in (".train.bin.tmp", ".val.bin.tmp", ".hidden"):
        (data / name).write_bytes(b"\0\0")
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--out", str(data)]) == 2
    assert capsys.readouterr().err == (
        f"error: {data} holds other files (.train.bin.tmp, .val.bin.tmp); a tokenizer gets a "
        "folder of its own: choose another --out\n"
    )
    assert sorted(p.name for p in data.iterdir()) == [".hidden", ".train.bin.tmp", ".val.bin.tmp"]


def test_prepare_refuses_a_folder_holding_what_a_killed_tokenizer_save_left(tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    write_documents(corpus, islice(sample_documents(), 0, 101, 20))
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--out", str(tmp_path / "tok"),
                 "--vocab-size", "300"]) == 0  # fmt: skip
    data = tmp_path / "data"  # as a tokenizer save killed by SIGKILL leaves it
    data.mkdir()
    (data / ".tokenizer.json.tmp-999999").write_bytes(b"{")
    argv = ["prepare", "--corpus", str(corpus), "--tokenizer", str(tmp_path / "tok")]
    capsys.readouterr()
    assert main([*argv, "--out", str(data)]) == 2
    assert capsys.readouterr().err == (
        f"error: {data} holds other files (.tokenizer.json.tmp-999999); token files get a folder "
        "of their own: choose another --out\n"
    )
    assert sorted(p.name for p in data.iterdir()) == [".tokenizer.json.tmp-999999"]


def test_a_save_stopped_between_its_files_leaves_no_tokenizer_and_blocks_no_rerun(
    tmp_path, monkeypatch, capsys
):
    import hellolondon.tokenizer as tokenizer

    corpus = tmp_path / "docs.jsonl"
    write_documents(corpus, islice(sample_documents(), 0, 101, 20))
    out = tmp_path / "tok"
    written = []
    real_write = tokenizer.atomic_write

    def stopped_at_the_last_file(path, text):
        if len(written) == 2:
            raise KeyboardInterrupt  # Ctrl-C after two of the three files
        written.append(path.name)
        real_write(path, text)

    monkeypatch.setattr(tokenizer, "atomic_write", stopped_at_the_last_file)
    train = [
        "tokenizer",
        "train",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--vocab-size",
        "600",
    ]
    assert main(train) == 130
    assert "tokenizer.json" not in written and not (out / "tokenizer.json").exists()
    monkeypatch.setattr(tokenizer, "atomic_write", real_write)
    capsys.readouterr()
    assert main(train) == 0  # the configs left behind are the tokenizer's own, not other files
    assert sorted(p.name for p in out.iterdir() if p.name[0] != ".") == sorted(tokenizer.FILES)
    load_tokenizer(out)


def test_cli_train_writes_only_its_result_lines_into_a_pipe(tmp_path, capfd):
    # the tokenizers library's progress bars write to the file descriptor itself
    corpus = tmp_path / "docs.jsonl"
    write_documents(corpus, islice(sample_documents(), 0, 101, 20))
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--out", str(tmp_path / "tok")]
    assert main([*argv, "--vocab-size", "1500"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["tokenizer", "fingerprint"]


def test_text_with_bytes_that_are_not_utf8_is_one_line(tok_dir, capsys):
    # a Latin-1 terminal's "café" reaches Python as "caf\udce9" (surrogateescape)
    assert main(["tokenizer", "encode", "--tokenizer", str(tok_dir), "caf\udce9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the text holds bytes that are not UTF-8") and err.count("\n") == 1


@pytest.mark.parametrize(
    "edit",
    [
        {
            "pre_tokenizer": {
                "type": "ByteLevel",
                "add_prefix_space": True,
                "trim_offsets": True,
                "use_regex": True,
            }
        },
        {
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [],
                "pair": [],
                "special_tokens": {},
            }
        },
        {"normalizer": {"type": "Lowercase"}},
    ],
)
def test_a_tokenizer_that_changes_each_piece_is_not_cut(tmp_path, tok_dir, edit):
    # a space put before each piece, or tokens added after each, would change the tokens
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    for name in os.listdir(tok_dir):
        shutil.copy(tok_dir / name, tmp_path / name)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data | edit), encoding="utf-8")
    assert load_tokenizer(tok_dir).splits_safely
    assert not load_tokenizer(tmp_path).splits_safely


def test_two_tokenizer_trainings_into_one_folder_are_not_run_at_once(tmp_path, capsys):
    from hellolondon.cli import main
    from hellolondon.corpus.documents import Document, write_documents
    from hellolondon.files import writing

    corpus = tmp_path / "docs.jsonl"
    write_documents(
        corpus, [Document(id=f"d{i}", text="the king and the queen " * 50) for i in range(3)]
    )
    out = tmp_path / "tok"
    out.mkdir()
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--out", str(out), "--vocab-size", "300"]
    with writing(out):  # another tokenizer train, or a prepare into the same folder
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is being written by another hellolondon command (process" in err
    assert err.count("\n") == 1
    assert [p.name for p in out.iterdir()] == []


def _held_for(seconds: float) -> int:
    """pbkdf2 iterations that hold a thread about `seconds` in one C call that never looks at
    signals, as the tokenizers library's Rust trainer does."""
    import hashlib
    import time

    t0 = time.perf_counter()
    hashlib.pbkdf2_hmac("sha256", b"x", b"salt", 20_000)
    return int(20_000 * seconds / max(time.perf_counter() - t0, 1e-6))


# `tokenizer train` whose trainer first holds its thread (as Rust does on a large corpus): it
# says "training" on stderr, then holds, then trains for real.
HELD_TRAINING = """
import hashlib, sys
import hellolondon.tokenizer as t
from hellolondon.cli import main

made, iterations = t._new_tokenizer, int(sys.argv[1])

class Held:
    def __init__(self):
        self.tok = made()
    def train_from_iterator(self, texts, trainer):
        print("training", file=sys.stderr, flush=True)
        hashlib.pbkdf2_hmac("sha256", b"x", b"salt", iterations)
        self.tok.train_from_iterator(texts, trainer=trainer)
    def __getattr__(self, name):
        return getattr(self.tok, name)

t._new_tokenizer = Held
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.skipif(os.name != "posix", reason="sends SIGTERM and SIGINT")
@pytest.mark.parametrize(("sig", "code", "said"), [("SIGTERM", 143, "terminated"),
                                                   ("SIGINT", 130, "interrupted")])  # fmt: skip
def test_a_signal_stops_training_at_once_and_leaves_no_tokenizer(tmp_path, sig, code, said):
    import signal
    import subprocess
    import sys
    import time

    corpus = tmp_path / "docs.jsonl"
    write_documents(corpus, islice(sample_documents(), 0, 101, 20))
    script = tmp_path / "held.py"
    script.write_text(HELD_TRAINING)
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--out", str(out), "--vocab-size", "600"]
    proc = subprocess.Popen(
        [sys.executable, str(script), str(_held_for(20)), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )
    try:
        assert proc.stderr.readline() == "training\n"
        time.sleep(0.5)  # well inside the held call
        t0 = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == code
        took = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    assert took < 2.0  # not the trainer's 20 s
    assert rest == f"{said}\n"
    assert not out.exists()  # no tokenizer, not even the folder the command made


def test_an_abandoned_training_reads_no_more_texts():
    import hashlib
    import signal
    import threading
    import time

    from hellolondon.tokenizer import train_abandonably

    read, held = [], _held_for(3)

    class Trainer:
        def train_from_iterator(self, texts, trainer):
            read.append(next(texts))
            hashlib.pbkdf2_hmac("sha256", b"x", b"salt", held)  # holds its thread, as Rust does
            read.extend(texts)

    timer = threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,))  # a Ctrl-C
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        train_abandonably(Trainer(), iter(["one", "two", "three"]), None)
    assert time.monotonic() - t0 < 2.0  # not the trainer's 3 s
    for worker in threading.enumerate():
        if worker.name == "tokenizer-training":
            worker.join(timeout=60)
    assert read == ["one"]
