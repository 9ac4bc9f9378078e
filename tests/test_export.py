"""Export to a Hugging Face GPT-2 folder: transformers loads it offline and computes our logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hellolondon.cli import main
from hellolondon.errors import UserError
from hellolondon.export import _copy_tokenizer, export_checkpoint
from hellolondon.generate import Sampling, generate_ids
from hellolondon.tokenizer import load_tokenizer
from hellolondon.train.checkpoint import load_for_inference, read_state

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "london"
    export_checkpoint(trained_run, out)
    return out


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_the_folder_has_every_file_and_the_right_special_ids(exported, trained_run):
    names = {p.name for p in exported.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "README.md",
    } <= names
    modes = {p.stat().st_mode & 0o777 for p in exported.iterdir()}
    assert len(modes) == 1  # model.safetensors too is readable like the rest
    config = json.loads((exported / "config.json").read_text())
    tok = load_tokenizer(trained_run / "tokenizer")
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-5
    assert config["bos_token_id"] == config["eos_token_id"] == tok.eot_id == 0
    assert config["pad_token_id"] == tok.token_to_id("<|pad|>")
    generation = json.loads((exported / "generation_config.json").read_text())
    assert (
        generation["eos_token_id"] == tok.eot_id
        and generation["pad_token_id"] == config["pad_token_id"]
    )


def test_transformers_loads_it_offline_with_our_logits_and_tokens(exported, trained_run):
    hf = transformers.GPT2LMHeadModel.from_pretrained(
        exported, local_files_only=True, dtype=torch.float32
    ).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported, local_files_only=True)
    loaded = load_for_inference(trained_run)
    ours, cfg = loaded.model, loaded.cfg
    tok = load_tokenizer(trained_run / "tokenizer")
    text = "In the yeare of our Lord 1666, the Citie of London burned; the Thames ran red."
    ids = tok.encode(text)
    assert hf_tok(text)["input_ids"] == ids and hf_tok.decode(ids) == text
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (
        0,
        0,
        hf.config.pad_token_id,
    )
    x = torch.tensor([ids[: cfg.model.block_size]])
    with torch.no_grad():
        diff = (ours(x)[0] - hf(x).logits).abs().max().item()
    assert diff < 1e-4


def test_literal_control_token_in_text_is_text_in_the_export(exported, trained_run, tmp_path):
    tok = load_tokenizer(trained_run / "tokenizer")
    text = "the bill was marked <|endoftext|> by the clerk"
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported, local_files_only=True)
    assert hf_tok(text)["input_ids"] == tok.encode(text) and tok.eot_id not in tok.encode(text)
    # A tokenizer saved before the setting existed is exported with it too.
    old = tmp_path / "old"
    shutil.copytree(trained_run / "tokenizer", old)
    config = json.loads((old / "tokenizer_config.json").read_text())
    del config["split_special_tokens"]
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "out").mkdir()
    _copy_tokenizer(load_tokenizer(old), 64, tmp_path / "out")
    hf_old = transformers.AutoTokenizer.from_pretrained(tmp_path / "out", local_files_only=True)
    assert hf_old(text)["input_ids"] == tok.encode(text)


def test_transformers_generate_continues_as_we_do(exported, trained_run):
    hf = transformers.GPT2LMHeadModel.from_pretrained(exported, local_files_only=True).eval()
    ours = load_for_inference(trained_run).model
    prompt = load_tokenizer(trained_run / "tokenizer").encode("My Lord, I pray you")
    x = torch.tensor([prompt])
    out = hf.generate(
        x,
        attention_mask=torch.ones_like(x),
        do_sample=False,
        max_new_tokens=10,
        min_new_tokens=10,
        repetition_penalty=1.0,
    )
    greedy = Sampling(
        max_new_tokens=10, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0
    )
    assert out.shape == (1, len(prompt) + 10)
    assert out[0, len(prompt) :].tolist() == generate_ids(ours, prompt, greedy)
    sampled = hf.generate(
        x, attention_mask=torch.ones_like(x), max_new_tokens=5
    )  # generation_config.json
    assert sampled.shape[1] <= len(prompt) + 5


def test_the_pipeline_and_the_cards_example_run_with_their_defaults(exported, capsys):
    # a tiny context (32 here): transformers' generate runs past the learned positions
    transformers.set_seed(0)
    pipe = transformers.pipeline("text-generation", model=str(exported))
    assert pipe("My Lord, I pray you")[0]["generated_text"].startswith("My Lord, I pray you")
    card = (exported / "README.md").read_text()
    example = card.split("```python\n")[1].split("```")[0]
    exec(example.replace("PATH_OR_REPO", str(exported)), {})
    assert capsys.readouterr().out.startswith("In the year of our Lord")


def test_the_model_card_has_data_settings_metrics_use_and_limits(trained_run, tmp_path):
    run = tmp_path / "trained"
    shutil.copytree(trained_run, run)
    report = {
        "step": 40,
        "created": "2026-11-26",
        "tokenizer_fingerprint": load_tokenizer(run / "tokenizer").fingerprint,
        "heldout": {
            "bpb": 3.21,
            "loss": 5.1,
            "ppl": 164.0,
            "tokens": 99,
            "split_tokens": 100,
            "complete": True,
            "context": 32,
            "stride": 16,
            "by_period": {"stuart": {"bpb": 3.3, "tokens": 99}},
            "by_category": {"drama": {"bpb": 3.1, "tokens": 99}},
        },
        "probes": {
            "accuracy": 0.31,
            "chance": 0.25,
            "items": 121,
            "by_category": {"dates": {"accuracy": 0.4, "chance": 0.25}},
        },
    }
    (run / "eval").mkdir()
    (run / "eval" / "step-000040.json").write_text(json.dumps(report))
    info = export_checkpoint(run, tmp_path / "out", license="mit")
    card = (tmp_path / "out" / "README.md").read_text()
    assert info["report"] and card.startswith("---\nlanguage: en\n") and "license: mit" in card
    for section in (
        "## Training data",
        "## Training hyper-parameters",
        "## Evaluation",
        "## Intended use",
        "## Limitations",
    ):
        assert section in card
    assert (
        "Held-out bits per byte: 3.2100" in card
        and "31.0% correct" in card
        and "period stuart: 3.3000" in card
        and "category drama: 3.1000" in card
        and "over the whole validation split (99 tokens scored: every one of its 100 after the "
        "first)"
        in card
    )
    assert "AdamW" in card and "training tokens" in card
    model = load_for_inference(run).model  # both counts, each named, as the two logs differ
    assert (
        f"| parameters | {model.num_params(False):,} ({model.num_params():,} without the "
        "position table, as the training log counts them) |" in card
    )
    # the years and periods of the documents it was trained on, not the configured 1500-1850
    assert "a historical-English GPT-2 (London, 1623)" in card
    assert "| written | 1623 |" in card and "| periods | stuart (12 documents) |" in card
    trainer = read_state(run / "checkpoints" / "step-000040")["trainer"]
    assert trainer["best_step"] == 40  # the last checkpoint is the best: its loss, once
    own = trainer["final_val_loss"]
    assert f"| validation loss (training's fixed batches) | {own:.4f} at step 40 |" in card
    assert "best validation loss" not in card
    assert "121 cloze items on London and England 1500-1850" in card  # the packaged set
    report["probes"] |= {"items": 1, "file": "/home/me/my probes.jsonl"}
    (run / "eval" / "step-000040.json").write_text(json.dumps(report))
    export_checkpoint(run, tmp_path / "out", force=True)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "1 cloze item from the probe file `my probes.jsonl`" in card
    assert "London and England 1500-1850, log-likelihood" not in card


def test_the_card_quotes_the_checkpoints_own_validation_loss_and_the_best_apart(
    tiny_data, tmp_path
):
    """A run that got worse after its best (a learning rate far too high): the card of its last
    checkpoint gives that checkpoint's loss, and the run's best beside it, each with its step."""
    from tinyrun import tiny_config

    from hellolondon.train.loop import train

    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=rising", "train.max_iters=6",
                      "train.lr=1.0", "train.eval_interval=3", "train.ckpt_interval=3")  # fmt: skip
    train(cfg, log=lambda *_: None)
    last = tmp_path / "rising" / "checkpoints" / "step-000006"
    trainer = read_state(last)["trainer"]
    own, best = trainer["final_val_loss"], trainer["best_val_loss"]
    assert own > best + 1 and trainer["best_step"] == 0 and trainer["last_eval_step"] == 6
    lines = [
        f"| validation loss (training's fixed batches) | {own:.4f} at step 6 |",
        f"| best validation loss of the run up to this step | {best:.4f} at step 0 |",
    ]
    export_checkpoint(last, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert all(line in card for line in lines)
    # a checkpoint written before the loop saved its last evaluation: the run's metrics log
    state = json.loads((last / "state.json").read_text())
    del state["trainer"]["final_val_loss"], state["trainer"]["last_eval_step"]
    (last / "state.json").write_text(json.dumps(state))
    export_checkpoint(last, tmp_path / "out", force=True)
    card = (tmp_path / "out" / "README.md").read_text()
    assert all(line in card for line in lines)


@pytest.mark.parametrize("content", ['{"rows": []}', "[1, 2]"])
def test_a_json_file_that_is_not_an_eval_report_is_named_as_such(trained_run, tmp_path, content):
    other = tmp_path / "other.json"
    other.write_text(content)
    with pytest.raises(UserError, match="other.json is not an eval report"):
        export_checkpoint(trained_run, tmp_path / "out", report=other)
    assert not (tmp_path / "out").exists()


def test_a_report_of_another_step_is_refused(trained_run, tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"step": 20, "tokenizer_fingerprint": "x"}))
    with pytest.raises(UserError, match="eval report is for step 20"):
        export_checkpoint(trained_run, tmp_path / "out", report=bad)
    assert not (tmp_path / "out").exists()


def test_a_report_of_other_weights_at_the_same_step_is_refused(trained_run, tmp_path):
    from hellolondon.evaluation.suite import evaluate

    report = evaluate(trained_run, parts=("probes",))[0]
    assert (
        report["weights_sha256"]
        == read_state(load_for_inference(trained_run).ckpt)["files"]["model.safetensors"]
    )
    other = tmp_path / "other.json"  # another run's checkpoint at the same step
    other.write_text(json.dumps(report | {"weights_sha256": "0" * 64}))
    with pytest.raises(UserError, match="measured other weights than checkpoint"):
        export_checkpoint(trained_run, tmp_path / "out", report=other)
    assert not (tmp_path / "out").exists()
    same = tmp_path / "same.json"
    same.write_text(json.dumps(report))
    assert export_checkpoint(trained_run, tmp_path / "out", report=same)["report"]


def test_a_report_on_other_token_files_is_refused(trained_run, tmp_path):
    from hellolondon.evaluation.suite import evaluate

    report = evaluate(trained_run, parts=("probes",))[0]
    heldout = {"own_data": False, "data_dir": str(tmp_path / "odd_data"), "bits_per_byte": 4.2}
    other = tmp_path / "step-000040-on-odd_data.json"
    other.write_text(json.dumps(report | {"heldout": heldout}))
    with pytest.raises(UserError, match=r"scored other token files than the run's own \("):
        export_checkpoint(trained_run, tmp_path / "out", report=other)
    assert not (tmp_path / "out").exists()


def test_export_replaces_an_earlier_export_only_when_forced(trained_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(trained_run), "--out", str(out), "--no-check"]) == 0
    (out / "stale.txt").write_text("from before")
    capsys.readouterr()
    assert main(["export", str(trained_run), "--out", str(out), "--no-check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not empty" in err and "--force" in err and "\n" not in err
    assert (out / "stale.txt").is_file()  # untouched
    (out / "stale.txt").unlink()
    (out / "README.md").write_text("an edited card")  # export's own file: replaced
    assert main(["export", str(trained_run), "--out", str(out), "--force"]) == 0
    printed = capsys.readouterr()
    assert "largest logit difference" in printed.out
    assert "Loading weights" not in printed.err  # transformers' own bar stays out of ours
    assert (out / "model.safetensors").is_file()
    assert (out / "README.md").read_text() != "an edited card"
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".")
    ]  # no temporary folders left


def test_force_never_deletes_files_beside_an_earlier_export(trained_run, tmp_path, capsys):
    # a clone of the model's repository, or harness results saved in the export's folder
    out = tmp_path / "out"
    assert main(["export", str(trained_run), "--out", str(out), "--no-check"]) == 0
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main")
    (out / "results.json").write_text("{}")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["export", str(trained_run), "--out", str(out), "--force", "--no-check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "(.git, results.json)" in err and "--force would delete them" in err
    assert "\n" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_export_never_replaces_a_folder_that_is_not_an_export(
    trained_run, tmp_path, capsys, monkeypatch, force
):
    # --force deletes the folder it replaces: a folder of the user's own files never is one
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(mine)
    for out in (str(mine), "."):
        assert main(["export", str(trained_run), "--out", out, "--no-check", *force]) == 2
        err = capsys.readouterr().err.strip()
        assert "not an export (thesis.tex);" in err and "\n" not in err  # no "..." after one
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and len(list(mine.iterdir())) == 1


@pytest.mark.parametrize("target", [".", "..", "../.."])
def test_export_never_replaces_the_folder_that_holds_its_checkpoint(
    trained_run, tmp_path, capsys, target
):
    run = tmp_path / "trained"
    shutil.copytree(trained_run, run)
    ckpt = run / "checkpoints" / "step-000040"
    out = ckpt / target
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["export", str(ckpt), "--out", str(out), "--force", "--no-check"]) == 2
    err = capsys.readouterr().err.strip()
    # refused as a folder that is not an export (which the run and its checkpoints are not)
    assert "not an export" in err and "\n" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_export_never_replaces_an_export_that_holds_the_run_being_exported(
    trained_run, tmp_path, capsys
):
    out = tmp_path / "out"
    assert main(["export", str(trained_run), "--out", str(out), "--no-check"]) == 0
    shutil.copytree(trained_run, out / "run")  # the run moved into an earlier export
    capsys.readouterr()
    assert main(["export", str(out / "run"), "--out", str(out), "--force", "--no-check"]) == 2
    assert "files that export does not write (run)" in capsys.readouterr().err
    assert (out / "run" / "checkpoints").is_dir()


def test_export_of_a_checkpoint_without_its_tokenizer_is_a_one_line_error(
    trained_run, tmp_path, capsys
):
    ckpt = tmp_path / "lonely"
    shutil.copytree(trained_run / "checkpoints" / "step-000040", ckpt)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no tokenizer" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_without_its_config_is_a_one_line_error(trained_run, tmp_path, capsys):
    run = tmp_path / "trained"
    shutil.copytree(trained_run, run)
    (run / "tokenizer" / "tokenizer_config.json").unlink()
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tokenizer_config.json is missing" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["generate", "eval", "export"])
def test_an_export_folder_given_as_a_checkpoint_is_named_as_such(exported, command, capsys):
    extra = ["--out", str(exported.parent / "again")] if command == "export" else []
    assert main([command, str(exported), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a Hugging Face model folder" in err and "\n" not in err


def test_an_export_that_cannot_be_written_is_a_one_line_error(trained_run, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert main(["export", str(trained_run), "--out", str(tmp_path / "file" / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write the export folder") and "\n" not in err
    assert (tmp_path / "file").read_text() == "mine"


def test_the_licence_id_is_checked_before_anything_is_written(capsys):
    from hellolondon.export.card import check_license

    assert check_license(None) is None
    assert check_license(" MIT ") == "mit" and check_license("cc-by-4.0") == "cc-by-4.0"
    assert capsys.readouterr().err == ""
    for bad in ("MIT License", "mit\ntags: [x]", "", "-mit"):
        with pytest.raises(UserError, match="is not a licence id"):
            check_license(bad)
    assert check_license("my-own-licence") == "my-own-licence"  # may be new on the Hub: warned
    assert "not among the Hub's licence ids" in capsys.readouterr().err


@pytest.mark.parametrize("diff", [1e-2, float("nan")])
def test_a_failed_check_leaves_the_earlier_export_as_it_was(
    trained_run, tmp_path, capsys, monkeypatch, diff
):
    import hellolondon.export as export

    out = tmp_path / "out"
    assert main(["export", str(trained_run), "--out", str(out), "--no-check"]) == 0
    (out / "README.md").write_text("my edited card")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(export, "check_with_transformers", lambda model, folder: diff)
    capsys.readouterr()
    assert main(["export", str(trained_run), "--out", str(out), "--force"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the export's logits differ from ours by up to ")
    assert f"nothing was written to {out}" in err and "\n" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old export kept
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_without_transformers_the_check_is_refused_before_anything_is_written(
    trained_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # import fails
    out = tmp_path / "out"
    assert main(["export", str(trained_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: the check needs transformers: pip install 'hellolondon[hf]', or pass --no-check"
    )
    assert list(tmp_path.iterdir()) == []  # so the advice works as given:
    assert main(["export", str(trained_run), "--out", str(out), "--no-check"]) == 0


@pytest.mark.parametrize("command", ["export", "eval"])
def test_a_checkpoint_with_weights_that_are_not_finite_is_refused(
    trained_run, tmp_path, capsys, monkeypatch, command
):
    import hellolondon.train.checkpoint as checkpoint

    real = checkpoint.load_for_inference

    def diverged(path, device="cpu"):
        loaded = real(path, device)
        with torch.no_grad():
            loaded.model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
        return loaded

    monkeypatch.setattr(checkpoint, "load_for_inference", diverged)
    args = ["--out", str(tmp_path / "out")] + (["--no-track"] if command == "eval" else [])
    assert main([command, str(trained_run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "are not finite (NaN or inf in 1 tensor, such as transformer.h.0.mlp.c_fc.weight)" in err
    verb = {"export": "export", "eval": "evaluate"}[command]
    assert f"; {verb} an earlier checkpoint of the run" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["", "  "])
def test_a_blank_out_is_refused_not_the_current_folder_replaced(
    trained_run, tmp_path, monkeypatch, capsys, out
):
    monkeypatch.chdir(tmp_path)  # empty: an export would take its place
    assert main(["export", str(trained_run), "--out", out, "--no-check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --out is blank; give a path"
    assert list(tmp_path.iterdir()) == []


def test_an_export_into_the_empty_current_folder_keeps_that_folder(
    trained_run, tmp_path, monkeypatch
):
    here = tmp_path / "london"
    here.mkdir()
    monkeypatch.chdir(here)
    inode = here.stat().st_ino
    assert main(["export", str(trained_run), "--out", ".", "--no-check"]) == 0
    assert here.stat().st_ino == inode  # a shell in it is not left in a deleted folder
    assert (Path.cwd() / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["london"]  # no temporary left beside
