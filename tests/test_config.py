import pytest

from hellolondon.config import PRESETS, build_config, from_dict
from hellolondon.errors import UserError


def test_presets_have_the_seed_shapes():
    assert (
        PRESETS["slm"].model.n_layer,
        PRESETS["slm"].model.n_head,
        PRESETS["slm"].model.n_embd,
    ) == (12, 12, 768)
    assert (
        PRESETS["regular"].model.n_layer,
        PRESETS["regular"].model.n_head,
        PRESETS["regular"].model.n_embd,
    ) == (24, 16, 1024)
    assert PRESETS["slm"].run_prefix == "london-slm-simple"
    assert PRESETS["regular"].run_prefix == "london-historical-llm"


def test_overrides_with_and_without_section(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nlr = 5e-4\nbatch_size = 3\n[tracking]\ntags = ["a"]\n')
    cfg = build_config("slm", toml, ["lr=1e-4", "model.n_layer=6", "tags=x,y", "compile=false"])
    assert cfg.train.lr == 1e-4  # the command line wins over the file
    assert cfg.train.batch_size == 3  # the file wins over the preset
    assert cfg.model.n_layer == 6 and cfg.model.n_embd == 768
    assert cfg.tracking.tags == ["x", "y"]
    assert cfg.train.compile == "false"


def test_round_trip_through_dict():
    cfg = build_config("regular", overrides=["lr=2e-4"])
    assert from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "preset, overrides, message",
    [
        ("huge", [], "unknown preset"),
        ("tiny", ["lrr=1"], "did you mean lr"),
        ("tiny", ["train.nope=1"], "unknown config key"),
        ("tiny", ["lr"], "key=value"),
        ("tiny", ["batch_size=many"], "expected a int"),
        ("tiny", ["model.n_head=3"], "divisible"),
        ("tiny", ["dtype=float64"], "train.dtype"),
        ("tiny", ["wandb_mode=sometimes"], "wandb_mode"),
    ],
)
def test_bad_config_is_a_clear_error(preset, overrides, message):
    with pytest.raises(UserError, match=message):
        build_config(preset, overrides=overrides)


def test_bad_toml_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr=")
    with pytest.raises(UserError, match="bad.toml"):
        build_config("tiny", bad)


def test_a_config_file_names_the_preset_it_starts_from(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "slm"\n[train]\nlr = 5e-4\n')
    cfg = build_config("tiny", toml)  # the file's preset replaces the command line's
    assert cfg.preset == "slm" and cfg.model.n_embd == 768 and cfg.train.lr == 5e-4


def test_a_dumped_config_trains_the_preset_it_was_dumped_from(tmp_path, capsys):
    from hellolondon.cli import main

    assert main(["config", "--preset", "regular", "train.lr=2e-4"]) == 0
    toml = tmp_path / "my.toml"
    toml.write_text(capsys.readouterr().out)
    cfg = build_config("tiny", toml)
    assert cfg.preset == "regular" and cfg.model.n_layer == 24 and cfg.train.lr == 2e-4


@pytest.mark.parametrize(
    "line, message", [('preset = "huge"', "is not a preset"), ("preset = 3", "is not a preset")]
)
def test_a_config_file_with_an_unknown_preset_is_refused(tmp_path, line, message):
    toml = tmp_path / "c.toml"
    toml.write_text(line + "\n")
    with pytest.raises(UserError, match=message):
        build_config("tiny", toml)


def test_a_resumed_run_keeps_its_preset_whatever_the_file_says(tmp_path):
    base = build_config("tiny")
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "slm"\n')
    with pytest.raises(UserError, match="started from 'tiny' and keeps it"):
        build_config(config_file=toml, base=base)
    toml.write_text('preset = "tiny"\n[train]\nmax_iters = 99\n')
    assert build_config(config_file=toml, base=base).train.max_iters == 99
