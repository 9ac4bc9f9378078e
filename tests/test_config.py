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
        ("tiny", ["batch_size=many"], "expected a whole number"),
        ("tiny", ["model.n_head=3"], "divisible"),
        ("tiny", ["dtype=float64"], "train.dtype"),
        ("tiny", ["device=gpu"], "unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps"),
        ("tiny", ["init_timeout=-5"], "tracking.init_timeout must be between 1 and 3600"),
        ("tiny", ["init_timeout=inf"], "tracking.init_timeout must be between 1 and 3600"),
        ("tiny", ["device=cuda:x"], "unknown device 'cuda:x'"),
        ("tiny", ["wandb_mode=sometimes"], "wandb_mode"),
        # each of these trained on (to nan, or with every gradient flipped) or failed in training
        ("tiny", ["lr=inf"], "train.lr must be a positive finite number, not inf"),
        ("tiny", ["lr=nan"], "lr: expected a number, got 'nan'"),
        ("tiny", ["monitor.rise_ratio=nan"], "monitor.rise_ratio: expected a number"),  # rule off
        ("tiny", ["muon_lr=inf"], "train.muon_lr must be a positive finite number"),
        ("tiny", ["grad_clip=-1"], r"train.grad_clip must be >= 0, not -1.0"),
        ("tiny", ["weight_decay=nan"], "weight_decay: expected a number, got 'nan'"),
        ("tiny", ["beta1=2"], r"train.beta1 must be in \[0, 1\), not 2.0"),
        ("tiny", ["seed=-1"], "train.seed must be from 0"),
        # torch takes seeds below 2**64, and rank r seeds with seed + r
        ("tiny", ["seed=1e30"], r"train.seed must be from 0 to 2\*\*63 - 1"),
        ("tiny", ["sample_interval=-1"], "train.sample_interval must be >= 0"),
        # W&B reads a wait of 0 as "not given" and waits 60 s
        ("tiny", ["monitor.alert_wait_s=0"], "monitor.alert_wait_s must be >= 1"),
        ("tiny", ["monitor.spike_zscore=-2"], "monitor.spike_zscore must be > 0"),
        ("tiny", ["monitor.phase_range_slack=-1"], "monitor.phase_range_slack must be >= 0"),
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


def test_a_resumed_run_keeps_its_preset_whatever_the_file_says(tmp_path):
    base = build_config("tiny")
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "slm"\n')
    with pytest.raises(UserError, match="started from 'tiny' and keeps it"):
        build_config(config_file=toml, base=base)
    toml.write_text('preset = "tiny"\n[train]\nmax_iters = 99\n')
    assert build_config(config_file=toml, base=base).train.max_iters == 99


@pytest.mark.parametrize(
    "body, message",
    [
        ('preset = "huge"', "is not a preset"),
        ("preset = 3", "is not a preset"),
        ("[model]\nn_layer = 4.5", "model.n_layer: expected a whole number, got 4.5"),
        ("[model]\nn_layer = 1e400", "model.n_layer: expected a whole number"),
        ("[train]\nbatch_size = true", "train.batch_size: expected a whole number"),
        ("[train]\nfsdp = 1", "train.fsdp: expected true or false"),
        ('[train]\nlr = "0.1"', "train.lr: expected a number, got the string '0.1'; write it"),
        ('[train]\nfsdp = "true"', "train.fsdp: expected true or false, got the string"),
        ('[train]\ndevice = ["cpu"]', "train.device: expected text"),
        ("[train]\ndevice = 0", 'train.device: expected text, got 0; write it in quotes \\("0"\\)'),
        ("[data]\ndata_dir = true", "data.data_dir: expected text, got True; write it in quotes"),
        ("out_dir = 5", "out_dir: expected text, got 5"),
        ("[tracking]\ntags = [1, 2]", "tracking.tags: expected a list of strings"),
    ],
)
def test_a_config_file_preset_or_value_of_the_wrong_kind_is_refused(tmp_path, body, message):
    toml = tmp_path / "c.toml"
    toml.write_text(body + "\n")
    with pytest.raises(UserError, match=message):
        build_config("tiny", toml)


def test_a_config_file_value_takes_the_type_of_its_field(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        'out_dir = "5"\n[model]\ndropout = 0\n[train]\nmax_iters = 1e3\ncompile = true\n'
        'micro_batch = 4\n[tracking]\ntags = "a,b"\n'
    )
    cfg = build_config("tiny", toml)
    assert (cfg.out_dir, cfg.model.dropout, cfg.train.max_iters) == ("5", 0.0, 1000)
    assert isinstance(cfg.model.dropout, float) and isinstance(cfg.train.max_iters, int)
    assert (cfg.train.compile, cfg.train.micro_batch, cfg.tracking.tags) == (
        "true",
        "4",
        ["a", "b"],
    )


def test_nan_in_a_config_file_is_refused(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[monitor]\nspike_zscore = nan\n")
    with pytest.raises(UserError, match="monitor.spike_zscore: expected a number, got nan"):
        build_config("tiny", toml)


@pytest.mark.parametrize("value", ["2.5e0", "1e400"])
def test_an_int_setting_in_float_notation_must_be_whole(value):
    with pytest.raises(UserError, match="train.max_iters: expected a whole number"):
        build_config("tiny", overrides=[f"train.max_iters={value}"])
    assert build_config("tiny", overrides=["train.max_iters=1e3"]).train.max_iters == 1000


def test_a_dumped_config_reads_back_whatever_its_strings_hold(tmp_path, capsys):
    from hellolondon.cli import main

    notes = 'two\nlines, a tab\t, a "quote", a \\ and \x01\x7f, café ſ'
    argv = ["config", f"tracking.notes={notes}", 'out_dir=C:\\runs "x"']
    assert main(argv) == 0
    toml = tmp_path / "my.toml"
    toml.write_text(capsys.readouterr().out)
    cfg = build_config("tiny", toml)
    assert cfg.tracking.notes == notes and cfg.out_dir == 'C:\\runs "x"'


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"model": {"n_layer": "two"}}, "model.n_layer: expected a whole number, got 'two'"),
        ({"train": {"batch_size": 2.5}}, "train.batch_size: expected a whole number, got 2.5"),
        ({"monitor": [1]}, "config section 'monitor': expected a table of settings"),
    ],
)
def test_a_saved_config_edited_to_a_wrong_type_is_one_line(tmp_path, capsys, edit, message):
    import json

    from hellolondon.cli import main

    saved = build_config("tiny").to_dict()
    for section, value in edit.items():
        saved[section] = {**saved[section], **value} if isinstance(value, dict) else value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    runs = tmp_path / "runs"
    assert main(["train", "--config", str(path), "--out-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: {message}" in err
    assert not runs.exists()  # refused before the run folder is made


def test_config_names_a_changed_shape_instead_of_the_presets_words(capsys, tmp_path):
    from hellolondon.cli import main

    assert main(["config", "--preset", "slm"]) == 0
    assert capsys.readouterr().out.startswith("# preset slm: GPT-2 small shape")
    assert main(["config", "model.n_layer=2", "model.n_embd=64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# from preset tiny, with another shape: n_layer 2, n_embd 64\n")


def test_a_preset_flag_against_the_files_preset_is_refused(capsys, tmp_path):
    from hellolondon.cli import main

    (tmp_path / "f.toml").write_text('preset = "tiny"\n[train]\nlr = 0.001\n')
    for argv in (["config"], ["train", "--data", str(tmp_path)]):
        assert main([*argv, "--config", str(tmp_path / "f.toml"), "--preset", "slm"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"error: --preset slm does not apply with --config {tmp_path / 'f.toml'}, which "
            "starts from preset 'tiny'"
        )
    assert main(["config", "--config", str(tmp_path / "f.toml"), "--preset", "tiny"]) == 0
    (tmp_path / "g.toml").write_text("[train]\nlr = 0.001\n")  # no preset: --preset applies
    assert main(["config", "--config", str(tmp_path / "g.toml"), "--preset", "slm"]) == 0
    assert 'preset = "slm"' in capsys.readouterr().out


def test_preset_as_a_setting_says_how_to_choose_one(capsys):
    from hellolondon.cli import main

    assert main(["config", "preset=slm"]) == 2
    assert capsys.readouterr().err == (
        'error: the preset is chosen with --preset NAME (or preset = "NAME" at the top of a TOML '
        "file), not as a key=value setting\n"
    )


def test_eval_iters_on_top_of_a_saved_config_sizes_the_evaluation_again():
    """A run's config.json holds the evaluation size it resolved (eval_seqs = eval_iters x
    batch_size); a new eval_iters given with it must not be silently ignored."""
    saved = build_config("tiny", overrides=["train.eval_iters=10", "train.eval_seqs=160"])
    again = build_config(base=saved, overrides=["train.eval_iters=1"])
    assert (again.train.eval_iters, again.train.eval_seqs) == (1, 0)  # 0: resolved anew
    assert build_config(base=saved).train.eval_seqs == 160  # the same run again: the same set
    both = build_config(base=saved, overrides=["train.eval_iters=1", "train.eval_seqs=32"])
    assert both.train.eval_seqs == 32
