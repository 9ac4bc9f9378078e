"""The catalog: the built-in data, user files, selection, and the header check."""

from __future__ import annotations

import pytest

from hellolondon.corpus.catalog import (
    author_matches,
    check_header,
    load_catalog,
    select,
    title_matches,
)
from hellolondon.corpus.documents import period_of
from hellolondon.errors import UserError


def test_builtin_catalog_is_consistent():
    sources = load_catalog()
    by_id = {s.id: s for s in sources}
    assert len(by_id) == len(sources) > 250
    for s in sources:
        assert s.period == period_of(s.year) and 1500 <= s.year <= 1850
        assert s.title and s.author and s.category and s.licence
    assert {by_id[f"pg-{n}"].status for n in (203, 204, 205)} == {"wrong"}
    believed = {s.id for s in sources if s.status == "believed"}
    assert believed == {f"pg-{n}" for n in (376, 4200, 1342, 730, 882, 370, 2130)}
    assert by_id["pg-4200"].period == "stuart"  # dated by its writing, not its first printing
    assert any(s.kind == "archive" and s.format == "djvu" for s in sources)


def test_default_selection_leaves_out_doubtful_and_wrong():
    chosen = select(load_catalog())
    assert chosen and {s.status for s in chosen} == {"believed", "unverified"}
    assert [s.id for s in select(load_catalog(), ids=["pg-203"])] == ["pg-203"]  # asked for by name
    tudor = select(load_catalog(), periods=["tudor"], statuses=("believed",))
    assert [s.id for s in tudor] == ["pg-2130"]


def test_user_catalog_adds_and_replaces(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text(
        '[[source]]\ngutenberg = 376\ntitle = "A Journal of the Plague Year"\nauthor = "Daniel Defoe"\n'
        'year = 1722\ncategory = "history"\nstatus = "believed"\nnote = "mine"\n\n'
        '[[source]]\nid = "bailey-1780"\nurl = "https://example.org/1780.xml"\ntitle = "Proceedings"\n'
        'author = "Old Bailey"\nyear = 1780\ncategory = "trial_proceedings"\nformat = "tei"\n'
    )
    sources = load_catalog([mine])
    by_id = {s.id: s for s in sources}
    assert by_id["pg-376"].note == "mine" and by_id["pg-376"].period == "georgian"
    assert by_id["bailey-1780"].format == "tei" and by_id["bailey-1780"].licence.startswith(
        "Unknown"
    )
    only = load_catalog([mine], builtin=False)
    assert [s.id for s in only] == ["pg-376", "bailey-1780"]


def test_user_catalog_in_json(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text(
        '{"source": [{"archive": "someitem", "title": "T", "author": "A", "year": 1700, "category": "c"}]}'
    )
    (s,) = load_catalog([mine], builtin=False)
    assert s.id == "ia-someitem" and s.period == "stuart"


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            'gutenberg = 1\ntitle = "T"\nauthor = "A"\nyear = 1700\ncategory = "c"\nperiod = "tudor"',
            "does not fit year",
        ),
        ('gutenberg = 1\ntitle = "T"\nauthor = "A"\ncategory = "c"', "missing year"),
        (
            'gutenberg = 1\ntitle = "T"\nauthor = "A"\nyear = 1700\ncategory = "c"\ntitel = "x"',
            "did you mean 'title'",
        ),
        ('title = "T"\nauthor = "A"\nyear = 1700\ncategory = "c"', "exactly one of"),
        (
            'gutenberg = "x1"\ntitle = "T"\nauthor = "A"\nyear = 1700\ncategory = "c"',
            "ebook number",
        ),
        (
            'gutenberg = 1\ntitle = "T"\nauthor = "A"\nyear = 1700\ncategory = "c"\nstatus = "sure"',
            "status must be",
        ),
        (
            'url = "https://x/y"\ntitle = "T"\nauthor = "A"\nyear = 1700\ncategory = "c"',
            "needs one",
        ),
    ],
)
def test_bad_user_entries_are_clear_errors(tmp_path, entry, message):
    mine = tmp_path / "mine.toml"
    mine.write_text(f"[[source]]\n{entry}\n")
    with pytest.raises(UserError, match=message):
        load_catalog([mine], builtin=False)


def test_duplicate_ids_and_bad_files(tmp_path):
    twice = tmp_path / "twice.toml"
    entry = '[[source]]\ngutenberg = 1\ntitle = "T"\nauthor = "A"\nyear = 1700\ncategory = "c"\n'
    twice.write_text(entry + entry)
    with pytest.raises(UserError, match="appears twice"):
        load_catalog([twice], builtin=False)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[source]\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_catalog([broken])
    with pytest.raises(UserError, match="not found"):
        load_catalog([tmp_path / "missing.toml"])


@pytest.mark.parametrize(
    "expected, found, ok",
    [
        ("The Diary of Samuel Pepys", "Diary of Samuel Pepys — Complete", True),
        ("Pride and Prejudice", "Pride and Prejudice", True),
        ("Gulliver's Travels", "Gulliver's Travels into Several Remote Nations of the World", True),
        (
            "The History of the Decline and Fall of the Roman Empire",
            "History of the Decline and Fall of the Roman Empire — Volume 1",
            True,
        ),
        (
            "Lyrical Ballads, With a Few Other Poems (1798)",
            "Lyrical Ballads, With a Few Other Poems",
            True,
        ),
        ("Roxburghe Ballads", "Uncle Tom's Cabin", False),
        ("Acts and Ordinances of the City of London", "The Adventures of Tom Sawyer", False),
        ("Emma", "Emmanuel Kant's Critique", False),
    ],
)
def test_title_matching(expected, found, ok):
    assert title_matches(expected, found) is ok


@pytest.mark.parametrize(
    "expected, found, ok",
    [
        ("Sir Walter Scott", "Walter Scott", True),
        ("Emily Brontë", "Emily Bronte", True),
        ("Edward Bulwer-Lytton", "Baron Edward Bulwer Lytton Lytton", True),
        ("William Wordsworth and Samuel Taylor Coleridge", "Samuel Taylor Coleridge", True),
        ("Queen Elizabeth I", "Elizabeth I, Queen of England", True),
        ("Various", "Anyone", True),
        ("Francis Bacon", "Michel de Montaigne", False),
        ("Jane Austen", "Mark Twain", False),
    ],
)
def test_author_matching(expected, found, ok):
    assert author_matches(expected, found) is ok


def test_check_header_reasons():
    (plague,) = select(load_catalog(), ids=["pg-376"])
    assert (
        check_header(
            plague,
            {
                "title": "A Journal of the Plague Year",
                "author": "Daniel Defoe",
                "language": "English",
            },
        )
        is None
    )
    assert "no title" in check_header(plague, {})
    assert "title mismatch" in check_header(plague, {"title": "Moby Dick"})
    assert "author mismatch" in check_header(
        plague, {"title": "A Journal of the Plague Year", "author": "Herman Melville"}
    )
    assert "not English" in check_header(
        plague, {"title": "A Journal of the Plague Year", "language": "Latin"}
    )
