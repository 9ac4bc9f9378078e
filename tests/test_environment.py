import pytest

from hellolondon.environment import env_number
from hellolondon.errors import UserError


def _read(monkeypatch, raw, **kw):
    monkeypatch.setenv("HL_TEST_NUMBER", raw)
    opts = {"meaning": "a test number", "advice": "fix it"} | kw
    return env_number("HL_TEST_NUMBER", 7, **opts)


def test_unset_or_blank_gives_the_default(monkeypatch):
    monkeypatch.delenv("HL_TEST_NUMBER", raising=False)
    assert env_number("HL_TEST_NUMBER", 7, meaning="m", advice="a") == 7
    assert _read(monkeypatch, "  ") == 7


def test_values_in_range_are_read(monkeypatch):
    assert _read(monkeypatch, " 2.5 ") == 2.5
    assert _read(monkeypatch, "0") == 0  # the minimum itself, inclusive by default
    value = _read(monkeypatch, "3", whole=True)
    assert value == 3 and isinstance(value, int)


@pytest.mark.parametrize(
    "raw, kw",
    [
        ("abc", {}),
        ("nan", {}),
        ("inf", {}),
        ("-1", {}),
        ("0", {"inclusive": False}),
        ("1.5", {"whole": True}),
    ],
)
def test_bad_values_are_one_line_naming_the_variable(monkeypatch, raw, kw):
    with pytest.raises(UserError) as err:
        _read(monkeypatch, raw, **kw)
    assert str(err.value) == f"HL_TEST_NUMBER={raw!r} is not a test number; fix it"
