"""The tracking flags, the config and the environment resolve as the W&B guide describes: project
helloLondon, the five default tags plus the preset, config over environment, flags over both."""

from __future__ import annotations

import argparse
import re

import pytest

from hellolondon.cli.flags import add_tracking_flags, tracking_settings
from hellolondon.config import build_config
from hellolondon.tracking.wandb_options import DEFAULT_TAGS, WandbOptions


@pytest.fixture(autouse=True)
def no_wandb_env(monkeypatch):
    for key in (
        "WANDB_MODE",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "WANDB_TAGS",
        "WANDB_DEBUG",
        "WANDB_BASE_URL",
        "WANDB_NAME",
        "WANDB_NOTES",
        "WANDB_RUN_GROUP",
    ):
        monkeypatch.delenv(key, raising=False)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_tracking_flags(parser)
    return parser.parse_args(list(argv))


def options(preset: str = "slm", overrides: list[str] | None = None) -> WandbOptions:
    name = "tracking.run_name=london-slm-simple-20261126-101500"
    cfg = build_config(preset, overrides=[name, *(overrides or [])])
    return WandbOptions.from_config(cfg)


def test_every_flag_lands_in_the_tracking_config_and_wins_over_earlier_overrides():
    args = parse(
        "--wandb-mode",
        "offline",
        "--wandb-project",
        "p",
        "--wandb-entity",
        "team",
        "--run-name",
        "n1",
        "--tags",
        "a,b",
        "--notes",
        "x=1, y",
        "--group",
        "g",
        "--log-artifacts",
    )
    overrides = ["tracking.project=early", *tracking_settings(args)]
    t = build_config("tiny", overrides=overrides).tracking
    assert (t.wandb_mode, t.project, t.entity, t.run_name, t.group) == (
        "offline",
        "p",
        "team",
        "n1",
        "g",
    )
    assert t.tags == ["a", "b"] and t.notes == "x=1, y" and t.log_artifacts is True


def test_no_flags_add_nothing():
    assert tracking_settings(parse()) == []


def test_defaults_are_the_guides(monkeypatch):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")
    o = options()
    assert o.project == "helloLondon" and o.entity is None and o.mode == "offline"
    assert o.mode_reason.startswith("API key not found")
    assert o.tags == ["london", "historical", "llm", "gpt2", "1500-1850", "slm"]
    assert tuple(o.tags[:5]) == DEFAULT_TAGS and o.name == "london-slm-simple-20261126-101500"


KEY = "k" * 40


@pytest.mark.parametrize("saved_host", [None, "https://wandb.example.org"])
def test_a_key_stored_by_wandb_login_is_found_for_the_host_wandb_uses(
    saved_host, tmp_path, monkeypatch
):
    """`wandb login` stores the key under the host of W&B's default server (its cloud, as the
    installed W&B names it), or of the one `wandb login --host` saved in W&B's settings."""
    import wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(config_dir))
    host = saved_host or str(wandb.Settings().base_url)
    if saved_host:
        (config_dir / "settings").write_text(f"[default]\nbase_url = {saved_host}\n")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {host.split('//')[1]}\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    o = options()
    assert (o.mode, o.mode_reason) == ("online", "API key from wandb login")


def test_environment_fills_what_the_config_leaves_empty(monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "envproj")
    monkeypatch.setenv("WANDB_ENTITY", "envteam")
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    monkeypatch.setenv("WANDB_TAGS", "night,slm")
    monkeypatch.setenv("WANDB_DEBUG", "true")
    o = options()
    assert (o.project, o.entity, o.mode, o.mode_reason, o.debug) == (
        "envproj",
        "envteam",
        "offline",
        "WANDB_MODE",
        True,
    )
    assert o.tags[-2:] == ["slm", "night"]  # no tag twice
    o = options(
        overrides=[
            "tracking.project=cfg",
            "tracking.entity=cfgteam",
            "tracking.wandb_mode=disabled",
        ]
    )
    assert (o.project, o.entity, o.mode, o.mode_reason) == (
        "cfg",
        "cfgteam",
        "disabled",
        "tracking.wandb_mode",
    )


def test_wandb_name_notes_and_group_are_recorded_as_the_run_uses_them(monkeypatch):
    # W&B itself reads WANDB_NOTES and WANDB_RUN_GROUP when init gets none: the saved config
    # must say so, and WANDB_NAME must name the run's folder as well as the W&B run
    from hellolondon.train.resolve import resolve_config

    monkeypatch.setenv("WANDB_NAME", "night-run")
    monkeypatch.setenv("WANDB_NOTES", "lr probe")
    monkeypatch.setenv("WANDB_RUN_GROUP", "nights")
    meta = {"vocab_size": 64}
    t = resolve_config(build_config("tiny"), world=1, meta=meta).tracking
    assert (t.run_name, t.notes, t.group) == ("night-run", "lr probe", "nights")
    flags = ["tracking.run_name=n1", "tracking.notes=x", "tracking.group=g"]
    t = resolve_config(build_config("tiny", overrides=flags), world=1, meta=meta).tracking
    assert (t.run_name, t.notes, t.group) == ("n1", "x", "g")
    monkeypatch.delenv("WANDB_NAME")
    assert resolve_config(build_config("slm"), world=1, meta=meta).tracking.run_name.startswith(
        "london-slm-simple-"
    )


def test_a_bad_mode_is_refused_with_the_choices():
    with pytest.raises(SystemExit):
        parse("--wandb-mode", "sometimes")
    from hellolondon.errors import UserError

    with pytest.raises(UserError, match="online, offline or disabled"):
        build_config("tiny", overrides=["tracking.wandb_mode=sometimes"])


def test_a_mistyped_wandb_mode_is_refused_rather_than_ignored(monkeypatch):
    from hellolondon.errors import UserError

    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef" * 2 + "fedcba98")  # would go online
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(UserError, match="WANDB_MODE=ofline is not a mode"):
        options()
    assert options(overrides=["tracking.wandb_mode=offline"]).mode == "offline"  # not consulted
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert options().mode == "offline"
    from hellolondon.tracking.wandb_start import choose_mode  # said as it was set

    assert choose_mode(options())[1] == "WANDB_MODE=dryrun (W&B's name for offline)"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert choose_mode(options())[1] == "WANDB_MODE=offline"


@pytest.mark.parametrize(
    "overrides, env, words",
    [
        (["tracking.project=me/helloLondon"], {}, "tracking.project 'me/helloLondon'"),
        ([], {"WANDB_PROJECT": "runs:2026"}, "tracking.project 'runs:2026'"),
        (["tracking.tags=" + "t" * 65], {}, "is 65 characters"),
        ([], {"WANDB_TAGS": "ok," + "t" * 65}, "is 65 characters"),
    ],
)
def test_names_wandb_would_refuse_even_offline_are_refused_before_training(
    overrides, env, words, monkeypatch
):
    # W&B checks them only in wandb.init, after the model is built, and then not even an
    # offline run starts
    from hellolondon.errors import UserError

    assert options(overrides=["tracking.tags=" + "t" * 64]).tags[-1] == "t" * 64
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=re.escape(words)):
        options(overrides=overrides)


@pytest.mark.parametrize("name", ["lr/3e-4", "..", "/tmp/run", "a\\b"])
def test_a_run_name_that_is_not_one_folder_inside_runs_is_refused(name):
    # else the run lands outside runs/ or nested where `hellolondon runs` never lists it
    from hellolondon.errors import UserError

    refused = re.escape(f"tracking.run_name {name!r} (--run-name, WANDB_NAME)")
    with pytest.raises(UserError, match=refused):
        build_config("tiny", overrides=[f"tracking.run_name={name}"])
    assert build_config("tiny", overrides=["tracking.run_name=lr 3e-4"]).tracking.run_name


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "bell\x07"])
def test_a_run_name_with_control_characters_is_refused(name):
    from hellolondon.errors import UserError

    with pytest.raises(UserError, match="no control characters .line breaks, tabs., and not only"):
        build_config("tiny", overrides=[f"tracking.run_name={name}"])


def test_a_blank_tracking_flag_is_refused_not_read_as_absent(capsys, tmp_path):
    from hellolondon.cli import main

    argv = ["train", "--preset", "tiny", "--data", str(tmp_path), "--out-dir", str(tmp_path)]
    assert main([*argv, "--run-name", " "]) == 2
    assert capsys.readouterr().err == (
        "error: --run-name is blank; give a value, or leave --run-name out for the default\n"
    )
    assert main([*argv, "--wandb-project", ""]) == 2
    assert "--wandb-project is blank" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_run_name_too_long_for_a_folder_is_refused_before_any_work(capsys, tmp_path):
    from hellolondon.cli import main

    argv = ["train", "--preset", "tiny", "--data", str(tmp_path), "--out-dir", str(tmp_path)]
    assert main([*argv, "--run-name", "x" * 300]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: tracking.run_name is 300 characters (--run-name, WANDB_NAME); it names the "
        "run's folder: use at most 128 (and 200 bytes in UTF-8)"
    )
    assert list(tmp_path.iterdir()) == []
    assert build_config("tiny", overrides=["tracking.run_name=" + "x" * 128]).tracking.run_name
    with pytest.raises(Exception, match="90 characters"):  # 240 bytes in UTF-8
        build_config("tiny", overrides=["tracking.run_name=" + "\u00e9\u20ac\u2020" * 30])


def test_a_mode_saved_by_wandb_offline_is_followed_and_wandb_mode_wins_over_it(
    monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # a key: online unless something says not
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home"))
    assert options().mode == "online"
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "settings").write_text("[default]\nmode = disabled\n")
    assert options().mode == "disabled"  # the user's own, from `wandb disabled`
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "settings").write_text("[default]\nmode = offline\n")
    o = options()  # this folder's, from `wandb offline`, before the user's
    assert o.mode == "offline" and o.mode_reason.startswith("`wandb offline` saved it in wandb")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert options().mode == "online"
