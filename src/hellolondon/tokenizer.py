"""Byte-level BPE tokenizer: train, save in Hugging Face format, load, fingerprint.

Byte-level BPE (GPT-2's scheme) is lossless: every string maps to bytes and back, so
`decode(encode(s)) == s` for any text, with no unknown token and no normalizer.
Historical terms from `data/historical_tokens.txt` are forced into the vocabulary as ordinary
merges (" Cheapside" -> one token), so they are reachable from running text and trained like any
other token. Control tokens (`<|endoftext|>` = id 0, ...) are special and never come from text:
a literal "<|endoftext|>" in a document is encoded as ordinary text, here and (through
`split_special_tokens` in tokenizer_config.json) by `transformers.AutoTokenizer` on the same folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from hellolondon.errors import UserError
from hellolondon.files import atomic_write, other_files, others_temporary_files, some_of

EOT = "<|endoftext|>"
MAX_VOCAB = 65536  # token files store uint16 ids
TOKENS_FILE = "historical_tokens.txt"
HISTORICAL_MIN_VOCAB = 4096  # below this (tiny test tokenizers) the terms would crowd out BPE
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")  # a saved one's


# Long texts are encoded (and counted for training) in pieces of about this many characters, so
# no step holds the tokens, or the tokenizer's per-token records, of a whole book at once.
PIECE_CHARS = 250_000
# Where a text may be cut without changing its tokens: at one space or newline between two
# characters that are not whitespace. GPT-2's pre-tokenizer never joins text across such a point
# (the space or newline begins the next pre-token) and BPE never merges across pre-tokens.
_CUT = re.compile(r"(?<=\S)[ \n](?=\S)")


def text_pieces(text: str, size: int | None = None) -> Iterator[str]:
    """`text` cut at safe points into pieces of at least `size` characters (default
    `PIECE_CHARS`; the last may be shorter, a text with no safe point stays whole). Encoding the
    pieces one after another gives the tokens of the whole text, with a tokenizer for which
    `splits_safely` is true."""
    size = size or PIECE_CHARS
    start = 0
    while len(text) - start > size:
        cut = _CUT.search(text, start + size)
        if cut is None:
            break
        yield text[start : cut.start()]
        start = cut.start()
    yield text[start:] if start else text


# BPE training time grows with the square of a word's length: a run of 300,000 characters
# without a space took minutes. Training sees such runs cut into words of this length.
MAX_WORD = 100
_LONG_RUN = re.compile(rf"\S{{{MAX_WORD},}}")


def bounded_words(text: str) -> Iterator[str]:
    """`text` in parts where no run of non-space characters is longer than `MAX_WORD`: the runs
    that are, cut into words of that length. For training, which never joins two parts."""
    start = 0
    for run in _LONG_RUN.finditer(text):
        if run.start() > start:
            yield text[start : run.start()]
        yield from (run[0][i : i + MAX_WORD] for i in range(0, len(run[0]), MAX_WORD))
        start = run.end()
    if start < len(text) or not text:
        yield text[start:]


def read_token_file(text: str | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """Parse the token file: (control tokens, {category: terms}). Defaults to the packaged file."""
    if text is None:
        text = resources.files("hellolondon").joinpath("data", TOKENS_FILE).read_text("utf-8")
    control: list[str] = []
    terms: dict[str, list[str]] = {}
    category = "other"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("<|"):
            control.append(line)
        elif line.startswith("[") and line.endswith("]"):
            category = line[1:-1]
        elif line.isalpha():
            terms.setdefault(category, []).append(line)
        else:
            raise ValueError(f"historical term {line!r} must be one word of letters")
    if not control or control[0] != EOT:
        raise ValueError(f"the first control token must be {EOT}")
    return control, terms


def historical_terms() -> list[str]:
    """All packaged historical terms, in file order."""
    return [t for group in historical_groups().values() for t in group]


def historical_groups() -> dict[str, list[str]]:
    """The packaged historical terms by category (people, places, trades, period words)."""
    return read_token_file()[1]


def canonical_json(data: dict) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint_of(data: dict) -> str:
    """sha256 of the canonical tokenizer.json: equal fingerprints mean identical tokenizers."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


class Tokenizer:
    """A trained tokenizer loaded from a folder (tokenizer.json + Hugging Face configs)."""

    def __init__(self, hf: HFTokenizer, path: Path | None = None) -> None:
        self.hf = hf
        # Text that happens to contain "<|endoftext|>" stays text: only we insert control tokens.
        self.hf.encode_special_tokens = True
        self.path = path
        data = json.loads(hf.to_str())
        self.fingerprint = fingerprint_of(data)
        self.eot_id = hf.token_to_id(EOT)
        if self.eot_id is None:
            raise UserError(
                f"tokenizer {path} has no {EOT} token; train one with `hellolondon tokenizer train`"
            )
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        # `text_pieces` keeps the tokens of the whole text: no normalizer, GPT-2's regex, no
        # space put before each piece, nothing added to each piece afterwards.
        pre = data.get("pre_tokenizer") or {}
        self.splits_safely = (
            data.get("normalizer") is None
            and pre.get("type") == "ByteLevel"
            and pre.get("use_regex", True) is True
            and pre.get("add_prefix_space") is False
            and data.get("post_processor") is None
            and (data.get("model") or {}).get("type") == "BPE"
        )

    def encode(self, text: str) -> list[int]:
        try:
            return self.hf.encode(text, add_special_tokens=False).ids
        except TypeError:
            from hellolondon.corpus.documents import is_text

            if is_text(text):
                raise
            raise UserError(  # bytes that were not UTF-8, from a terminal in another encoding
                "the text holds bytes that are not UTF-8; give it as UTF-8 (or set the "
                "terminal's encoding to UTF-8)"
            ) from None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts in parallel (the tokenizer's own threads); no offsets are computed."""
        fast = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)  # tokenizers >= 0.20
        return [e.ids for e in fast(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self.hf.id_to_token(idx)

    def piece(self, idx: int) -> str:
        """A token as a reader can see it: its text, with each byte that is only part of a
        character shown as <0xNN> (byte-level BPE often splits "é" or "ſ" in two). Control
        tokens are written in printable characters, which stand for themselves."""
        token = self.id_to_token(idx) or ""
        if not all(c in _BYTE_OF for c in token):  # an added token in other characters
            return token
        raw = bytes(_BYTE_OF[c] for c in token)
        text = raw.decode("utf-8", errors="surrogateescape")  # a lone byte b -> U+DC00 + b
        return "".join(
            f"<0x{ord(c) - 0xDC00:02X}>" if "\udc80" <= c <= "\udcff" else c for c in text
        )


def _byte_of() -> dict[str, int]:
    """GPT-2's byte-level alphabet, read back: the character that stands for each byte (bytes
    that print stand for themselves, the others for 256, 257, ... in order) -> the byte."""
    shown = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    chars = {b: b for b in shown}
    for n, b in enumerate(b for b in range(256) if b not in chars):
        chars[b] = 256 + n
    return {chr(c): b for b, c in chars.items()}


_BYTE_OF = _byte_of()


def _new_tokenizer() -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    # No normalizer and no prefix space: the text is kept exactly as written.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _merges(model: dict) -> list[tuple[str, str]]:
    # tokenizers >= 0.20 stores merges as pairs, older versions as "a b" strings.
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]


def _with_merges(data: dict, vocab: dict[str, int], merges: list[tuple[str, str]]) -> HFTokenizer:
    data = dict(data, model=dict(data["model"], vocab=vocab, merges=[list(m) for m in merges]))
    return HFTokenizer.from_str(json.dumps(data))


def _chain(tok: HFTokenizer, word: str) -> list[tuple[str, str]]:
    """Merges that join the current pieces of `word` left to right into one token."""
    pieces = [tok.id_to_token(i) for i in tok.encode(word).ids]
    chain, acc = [], pieces[0]
    for piece in pieces[1:]:
        chain.append((acc, piece))
        acc += piece
    return chain


def _force_words(data: dict, words: list[str], vocab_size: int) -> dict:
    """Append merges so each word is one token, dropping the last learned merges to stay within
    `vocab_size`. Appended merges have the lowest rank, so they only join what BPE left split."""
    model = data["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = _merges(model)
    n_base = len(vocab) - len(merges)  # control tokens + the 256 byte symbols
    for _ in range(50):
        tok = _with_merges(data, vocab, merges)
        extra: list[tuple[str, str]] = []
        for _round in range(5):
            missing = [w for w in words if len(tok.encode(w).ids) != 1]
            if not missing:
                break
            for word in missing:
                extra += [m for m in _chain(tok, word) if m not in extra]
            tok = _with_merges(data, _extend(vocab, extra), merges + extra)
        new_vocab = _extend(vocab, extra)
        excess = len(new_vocab) - vocab_size
        if excess <= 0:
            return dict(
                data, model=dict(model, vocab=new_vocab, merges=[list(m) for m in merges + extra])
            )
        if len(merges) == 0:
            break
        drop = min(excess, len(merges))
        merges = merges[:-drop]
        vocab = dict(list(vocab.items())[: n_base + len(merges)])
    raise UserError(
        f"vocab size {vocab_size} is too small for the {len(words)} historical terms; "
        "use a larger --vocab-size or --no-historical"
    )


def _extend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict[str, int]:
    out = dict(vocab)
    for a, b in merges:
        out.setdefault(a + b, len(out))
    return out


def check_vocab_size(vocab_size: int) -> None:
    """A vocabulary holds the control tokens and the 256 bytes, and fits uint16 token files."""
    floor = len(read_token_file()[0]) + 256
    if not floor < vocab_size <= MAX_VOCAB:
        raise UserError(
            f"vocab size {vocab_size} cannot be: a vocabulary holds the {floor - 256} control "
            f"tokens and the 256 bytes, and token files store ids as uint16; give a size from "
            f"{floor + 1} to {MAX_VOCAB}"
        )


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 30000,
    historical: bool | None = None,
    show_progress: bool = False,
) -> Tokenizer:
    """Train byte-level BPE on `texts` (one document each) and save it to `out_dir`.
    `historical`: force the historical terms in as single tokens; None means yes when
    `vocab_size` >= 4096 (True with a smaller vocabulary may not fit and is then an error)."""
    control, terms = read_token_file()
    if historical is None:
        historical = vocab_size >= HISTORICAL_MIN_VOCAB
    words = [" " + t for group in terms.values() for t in group] if historical else []
    check_vocab_size(vocab_size)
    tok = _new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=control,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    seen = [0]

    def counted() -> Iterable[str]:
        for text in texts:
            seen[0] += 1
            for piece in text_pieces(text):  # the same word counts, not a whole book at once
                yield from bounded_words(piece)

    train_abandonably(tok, counted(), trainer)
    if not seen[0]:
        raise UserError("no text to train the tokenizer on; the corpus has no documents")
    data = json.loads(tok.to_str())
    if words:
        data = _force_words(data, words, vocab_size)
    save_tokenizer(data, out_dir)
    return load_tokenizer(out_dir)


# How often the command's thread looks up from waiting for the trainer: a signal is acted on
# within this time (the training itself never looks up: Rust holds its thread for minutes).
WAIT_SLICE_S = 0.2


class _Abandoned(Exception):
    """Raised into the trainer's reading of the texts to end it after a signal."""


def train_abandonably(tok: HFTokenizer, texts: Iterator[str], trainer) -> None:
    """`tok.train_from_iterator` in a thread of its own, which this one waits for in short
    slices: SIGTERM or Ctrl-C then stops the command within a slice, not after the training
    (minutes on a large corpus). A stopped training is abandoned: it stops reading at once, and
    its merges, computed where no signal reaches them, end with the process, unused."""
    abandoned = threading.Event()
    failed: list[BaseException] = []

    def fed() -> Iterator[str]:
        for text in texts:
            if abandoned.is_set():
                raise _Abandoned
            yield text

    def train() -> None:
        try:
            tok.train_from_iterator(fed(), trainer=trainer)
        except BaseException as exc:  # given to the waiting thread, which raises it
            failed.append(exc)

    worker = threading.Thread(target=train, name="tokenizer-training", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(WAIT_SLICE_S)
    except BaseException:
        abandoned.set()
        raise
    if failed:
        raise failed[0]


def check_replace(out_dir: str | Path, force: bool = False) -> None:
    """Refuse to replace a tokenizer in `out_dir` unless `force`: token files and runs depend on it
    (they record its fingerprint); and refuse a folder that holds anything else (token files, a
    corpus), which --force does not replace. The command line calls this before training; library
    callers that own their folder (the demo, the launcher's sample) replace their own freely."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    if not (out / "tokenizer.json").exists():
        # the configs a stopped save left are its own; what a stopped prepare left is not
        if other := other_files(out, FILES) + others_temporary_files(out, FILES):
            raise UserError(
                f"{out} holds other files ({some_of(other)}); a tokenizer gets a folder of its own: "
                "choose another --out"
            )
        return
    if force:
        return
    try:
        held = f"a tokenizer (fingerprint {load_tokenizer(out).fingerprint[:12]})"
    except UserError:
        held = "a tokenizer.json"
    raise UserError(
        f"{out} already holds {held}; token files prepared with it and runs trained on them "
        "would no longer match it; choose another --out or add --force to replace it"
    )


def save_tokenizer(data: dict, out_dir: str | Path) -> None:
    """Write tokenizer.json plus the two small configs `transformers.AutoTokenizer` reads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = [t["content"] for t in data.get("added_tokens", []) if t.get("special")]
    pad = "<|pad|>" if "<|pad|>" in specials else EOT
    special_map = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": pad}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,  # it would change text on decode
        # A literal "<|endoftext|>" in text stays text, as in `Tokenizer` (encode_special_tokens).
        "split_special_tokens": True,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    texts = (
        json.dumps(data, ensure_ascii=False, indent=1),
        json.dumps(config, indent=2),
        json.dumps(special_map, indent=2),
    )
    # tokenizer.json last: a folder holds it only once the configs beside it are in place too
    for name, text in reversed(list(zip(FILES, texts, strict=True))):
        atomic_write(out / name, text + "\n")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer folder (or its tokenizer.json); a missing or broken one is a UserError."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"no tokenizer at {path}; train one with `hellolondon tokenizer train`")
    try:
        hf = HFTokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        if file.name != "tokenizer.json":  # a corpus file or some other file given
            raise UserError(
                f"{file} is not a tokenizer; give the folder `hellolondon tokenizer train` wrote"
            ) from None
        raise UserError(
            f"{file} is not a valid tokenizer.json ({str(exc)[:80]}); train it again"
        ) from None
    return Tokenizer(hf, path=file.parent)


def term_counts(tokenizer: Tokenizer, texts: Iterable[str]) -> dict[str, int]:
    """How often each historical term occurs as a word when `texts` are encoded: its token not
    followed by one that goes on with letters (" ruff" + "ian" is "ruffian", not "ruff")."""
    ids = {}
    for term in historical_terms():
        enc = tokenizer.encode(" " + term)
        if len(enc) == 1:
            ids[enc[0]] = term
    goes_on = {i for i in range(tokenizer.vocab_size) if tokenizer.decode([i])[:1].isalpha()}
    counts = dict.fromkeys(ids.values(), 0)
    for text in texts:
        encoded = tokenizer.encode(text)
        for i, nxt in zip(encoded, [*encoded[1:], None], strict=True):
            if i in ids and nxt not in goes_on:
                counts[ids[i]] += 1
    return counts
