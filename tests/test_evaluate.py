"""Evaluation: whole-split bits-per-byte, knowledge probes, generation quality, the report and
the `hellolondon eval` command."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hellolondon.cli import main
from hellolondon.errors import UserError
from hellolondon.evaluation import probes as P
from hellolondon.evaluation.generation import distinct_n, repetition_rate
from hellolondon.evaluation.heldout import Tally, _by_group, score_heldout, token_bytes, windows
from hellolondon.evaluation.suite import evaluate, summary_text, tracker_row
from hellolondon.prepare import load_meta
from hellolondon.tokenizer import load_tokenizer
from hellolondon.train.checkpoint import load_for_inference


@given(st.integers(2, 300), st.integers(1, 40), st.data())
def test_windows_score_every_target_once_with_enough_context(n, context, data):
    stride = data.draw(st.integers(1, context))
    seen = []
    for start, first in windows(n, context, stride):
        span = min(context, n - 1)
        assert start >= 0 and start + span <= n - 1  # full length, inside the stream
        assert start + 1 <= first <= start + span + 1
        for j in range(first, start + span + 1):
            seen.append(j)
            assert j - start >= min(j, context - stride + 1)  # tokens of context before target j
    assert seen == list(range(1, n))


def test_token_bytes_add_up_to_the_utf8_length_of_the_text(tiny_data):
    tok = load_tokenizer(tiny_data.parent / "tokenizer")
    text = "Sir, the Æsop of Cheapſide paid £3 10s. for “wine” — café et façade 🍷."
    ids = tok.encode(text)
    assert token_bytes(tok)[ids].sum() == len(text.encode("utf-8"))
    assert token_bytes(tok)[tok.eot_id] == 0


def _reference_nll(model, tokens: np.ndarray, context: int) -> list[float]:
    """Each target scored with exactly the `context` tokens before it (what stride 1 gives)."""
    out = []
    with torch.no_grad():
        for j in range(1, len(tokens)):
            x = torch.tensor(tokens[max(0, j - context) : j], dtype=torch.long)[None]
            logp = torch.log_softmax(model(x)[0][0, -1].float(), -1)
            out.append(-float(logp[int(tokens[j])]))
    return out


def test_heldout_scores_every_token_and_matches_a_token_by_token_reference(trained_run, tiny_data):
    loaded = load_for_inference(trained_run)
    model, cfg = loaded.model, loaded.cfg
    tok = load_tokenizer(trained_run / "tokenizer")
    meta = load_meta(tiny_data)
    val = np.fromfile(tiny_data / "val.bin", dtype=np.uint16)
    n = 150
    got = score_heldout(model, tok, tiny_data, meta, stride=1, max_tokens=n)
    ref = _reference_nll(model, val[: n + 1], cfg.model.block_size)
    nbytes = token_bytes(tok)[val[1 : n + 1]]
    assert got["tokens"] == n and not got["complete"]
    assert got["loss"] == pytest.approx(sum(ref) / n, rel=1e-5)
    text_nats = sum(r for r, b in zip(ref, nbytes, strict=True) if b > 0)
    assert got["bpb"] == pytest.approx(text_nats / (math.log(2) * nbytes.sum()), rel=1e-5)

    whole = score_heldout(model, tok, tiny_data, meta)  # default stride: half the context
    assert whole["complete"] and whole["tokens"] == meta["val_tokens"] - 1
    assert whole["by_period"] and whole["by_source"]
    assert sum(v["tokens"] for v in whole["by_source"].values()) <= whole["tokens"]


def test_groups_sum_documents_by_period_and_source():
    spans = [
        {"start": 0, "end": 4, "period": "tudor", "source": "a"},
        {"start": 4, "end": 7, "period": "stuart", "source": "a"},
        {"start": 7, "end": 10, "period": "tudor", "source": "b"},
    ]
    tbytes = np.array([0, 1, 2, 3])
    t = Tally(np.array([0, 4, 7]), np.array([4, 7, 10]), tbytes)
    pos = np.arange(1, 12)  # 10 and 11 lie outside every span
    targets = np.array([1, 2, 3, 0, 1, 1, 1, 2, 2, 3, 3])
    t.add(pos, targets, np.ones(11))
    groups = _by_group(t, spans)
    assert (
        groups["by_period"]["tudor"]["tokens"] == 3 + 3
        and groups["by_period"]["tudor"]["documents"] == 2
    )
    stuart = groups["by_period"]["stuart"]  # targets 0, 1, 1: the control token has no bytes
    assert stuart["tokens"] == 3 and stuart["bytes"] == 2 and stuart["loss"] == 1.0
    assert stuart["bpb"] == pytest.approx(2 / (math.log(2) * 2))  # ... and no place in bits/byte
    assert groups["by_source"]["b"]["bpb"] == pytest.approx(3 / (math.log(2) * 5))
    assert "by_category" not in groups  # no category metadata: no breakdown


def test_documents_past_the_scored_tokens_get_no_group_row():
    """With --max-tokens only the first documents are scored: the others' groups are left
    out, not shown as NaN (which is not JSON either)."""
    spans = [
        {"start": 0, "end": 4, "period": "tudor", "source": "a", "category": "drama"},
        {"start": 4, "end": 8, "period": "stuart", "source": "b, a reprint", "category": "law"},
    ]
    t = Tally(np.array([0, 4]), np.array([4, 8]), np.array([0, 1, 2, 3]))
    t.add(np.arange(1, 4), np.array([1, 2, 3]), np.ones(3))  # the first document only
    groups = _by_group(t, spans)
    assert {k: list(v) for k, v in groups.items()} == {
        "by_period": ["tudor"], "by_source": ["a"], "by_category": ["drama"]
    }  # fmt: skip
    json.dumps(groups, allow_nan=False)


def test_the_packaged_probes_are_valid_and_cover_every_category():
    probes = P.load_probes()
    assert len(probes) >= 100
    cats = {p.category for p in probes}
    assert cats == {"dates", "places", "people", "trades", "vocabulary"}
    assert all(sum(p.category == c for p in probes) >= 20 for c in cats)
    assert all(p.source.strip() and len(p.distractors) >= 2 for p in probes)


GOOD = {
    "id": "x-1",
    "category": "dates",
    "prompt": "The Fire of London began in",
    "answer": " 1666",
    "distractors": [" 1665", " 1701"],
    "source": "Pepys",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"answer": "1666"}, "starts with one space"),
        ({"distractors": [" 1666", " 1665"]}, "must all be different"),
        ({"distractors": []}, "non-empty list"),
        ({"source": " "}, "source must be a non-empty string"),
        ({"prompt": "began in "}, "must not end with whitespace"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_a_malformed_probe_is_one_clear_line_naming_the_item(tmp_path, change, message):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(GOOD | {"id": "ok"}) + "\n" + json.dumps(GOOD | change) + "\n")
    with pytest.raises(UserError) as err:
        P.load_probes(path)
    text = str(err.value)
    assert "\n" not in text and f"{path}:2" in text and "'x-1'" in text and message in text


def test_probe_files_with_duplicate_ids_or_bad_json_are_refused(tmp_path):
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(UserError, match=r"dup.jsonl:2: probe 'x-1': this id is used twice"):
        P.load_probes(dup)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a",\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: not valid JSON"):
        P.load_probes(bad)
    twice = tmp_path / "twice.jsonl"  # the second id used to win silently
    twice.write_text(json.dumps(GOOD)[:-1] + ', "id": "b"}\n')
    with pytest.raises(UserError, match=r"twice.jsonl:1: the key 'id' is given twice"):
        P.load_probes(twice)


def test_probe_scoring_counts_strict_wins_against_chance(monkeypatch):
    probes = [
        P.parse_probe(GOOD | {"id": str(i), "category": c}, "t") for i, c in enumerate("aabb")
    ]
    scores = {
        "0": [-1.0, -2.0, -3.0],
        "1": [-2.0, -1.0, -3.0],
        "2": [-1.0, -1.0, -5.0],
        "3": [-0.5, -4.0, -4.0],
    }
    monkeypatch.setattr(P, "option_logprobs", lambda model, tok, probe, device: scores[probe.id])
    model = torch.nn.Linear(1, 1)
    r = P.score_probes(model, None, probes)
    assert [d["correct"] for d in r["items_detail"]] == [True, False, False, True]  # a tie is wrong
    assert r["accuracy"] == 0.5 and r["chance"] == pytest.approx(1 / 3)
    assert r["by_category"] == {
        "a": {"items": 2, "accuracy": 0.5, "chance": pytest.approx(1 / 3)},
        "b": {"items": 2, "accuracy": 0.5, "chance": pytest.approx(1 / 3)},
    }
    assert r["z"] == pytest.approx((2 - 4 / 3) / math.sqrt(4 * (1 / 3) * (2 / 3)))


def test_option_logprobs_are_the_summed_log_probabilities_of_the_completion(trained_run):
    model = load_for_inference(trained_run).model
    tok = load_tokenizer(trained_run / "tokenizer")
    probe = P.parse_probe(GOOD | {"distractors": [" sixteen sixty-five", " 1701"]}, "t")
    got = P.option_logprobs(model, tok, probe, "cpu")
    ctx = tok.encode(probe.prompt)
    for option, score in zip(probe.options, got, strict=True):
        seq = (ctx + tok.encode(option))[-(model.config.block_size + 1) :]
        cont = len(tok.encode(option))
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([seq[:-1]]))[0][0].float(), -1)
        want = sum(float(logp[i, seq[i + 1]]) for i in range(len(seq) - 1 - cont, len(seq) - 1))
        assert score == pytest.approx(want, rel=1e-5)


def test_distinct_n_and_repetition_rate():
    assert distinct_n(["a b c d"], 1) == 1.0
    assert distinct_n(["a a a a"], 1) == 0.25
    assert distinct_n(["a b", "a b"], 2) == 0.5
    assert repetition_rate(["x y z w x y z w"], 4) == pytest.approx(1 - 4 / 5)
    assert repetition_rate(["one two three four five"], 4) == 0.0
    assert repetition_rate(["too short"], 4) == 0.0


def test_a_full_report_has_every_part_and_a_readable_summary(trained_run, tiny_data):
    report, _, state, _ = evaluate(trained_run, tiny_data, gen_tokens=12)
    assert report["step"] == state["step"] == 40
    assert report["heldout"]["complete"] and report["heldout"]["bpb"] > 0
    assert report["probes"]["items"] >= 100 and 0 <= report["probes"]["accuracy"] <= 1
    g = report["generation"]
    assert g["prompts"] == 8 and len(g["samples"]) == 3 and 0 < g["distinct_1"] <= 1
    again, *_ = evaluate(trained_run, tiny_data, parts=("generation",), gen_tokens=12)
    assert again["generation"]["samples"] == g["samples"]  # fixed seeds: the same text
    text = summary_text(report)
    assert (
        "bits per byte" in text and "Knowledge probes" in text and g["samples"][0]["prompt"] in text
    )
    row = tracker_row(report)
    assert row["eval/val_bpb"] == report["heldout"]["bpb"] and "eval/probe_accuracy/dates" in row


def _run_copy(trained_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "trained"
    shutil.copytree(trained_run, run)
    return run


def test_eval_command_writes_the_report_and_logs_it_to_the_run(
    trained_run, tiny_data, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = _run_copy(trained_run, tmp_path)
    code = main(["eval", str(run), "--data", str(tiny_data), "--gen-tokens", "8"])
    out = capsys.readouterr().out
    assert code == 0 and "bits per byte" in out
    report = json.loads((run / "eval" / "step-000040.json").read_text())
    assert (
        (run / "eval" / "step-000040.md")
        .read_text()
        .startswith("# Evaluation: run trained, step 40")
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "eval/val_bpb" in r]
    assert (
        logged
        and logged[-1]["step"] == 40
        and logged[-1]["eval/val_bpb"] == report["heldout"]["bpb"]
    )
    assert logged[-1]["eval/probe_accuracy"] == report["probes"]["accuracy"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval/val_bpb"] == report["heldout"]["bpb"] and summary["eval/iter"] == 40


def test_eval_on_other_token_files_is_kept_apart_from_the_runs_own_report(
    trained_run, tiny_data, tmp_path, capsys, monkeypatch
):
    """Another data folder's validation split is not the run's held-out text: its score must
    not replace the run's own report (the model card quotes that one) or its tracked numbers."""
    from hellolondon.corpus.documents import read_documents, write_documents
    from hellolondon.prepare import prepare

    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = _run_copy(trained_run, tmp_path)
    # the same tokenizer, other documents: token files the run never saw
    docs = list(read_documents(tiny_data.parent / "documents.jsonl"))[::-1][:6]
    write_documents(tmp_path / "odd.jsonl", docs)
    prepare(
        tmp_path / "odd.jsonl", tiny_data.parent / "tokenizer", tmp_path / "odd data", workers=1
    )
    assert (
        main(["eval", str(run), "--data", str(tiny_data), "--no-probes", "--gen-tokens", "4"]) == 0
    )
    own = (run / "eval" / "step-000040.json").read_text()
    tracked = (run / "metrics.jsonl").read_text(), (run / "summary.json").read_text()
    capsys.readouterr()
    argv = [
        "eval",
        str(run),
        "--data",
        str(tmp_path / "odd data"),
        "--no-probes",
        "--gen-tokens",
        "4",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "holds other token files than the run was trained on" in out
    assert "report: " + str(run / "eval" / "step-000040-on-odd_data.json") in out
    other = json.loads((run / "eval" / "step-000040-on-odd_data.json").read_text())
    assert other["heldout"]["own_data"] is False
    assert other["heldout"]["bpb"] != json.loads(own)["heldout"]["bpb"]
    assert (run / "eval" / "step-000040.json").read_text() == own  # untouched
    assert ((run / "metrics.jsonl").read_text(), (run / "summary.json").read_text()) == tracked
    assert json.loads(own)["heldout"]["own_data"] is True


def test_eval_without_a_tokenizer_is_a_one_line_error(trained_run, tmp_path, capsys):
    run = _run_copy(trained_run, tmp_path)
    shutil.rmtree(run / "tokenizer")
    assert main(["eval", str(run), "--no-heldout"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no tokenizer" in err and "\n" not in err


def test_eval_with_a_malformed_probe_file_exits_2_before_scoring(trained_run, tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({**GOOD, "distractors": " 1665"}) + "\n")
    assert (
        main(
            [
                "eval",
                str(trained_run),
                "--probes",
                str(path),
                "--no-heldout",
                "--no-generation",
                "--no-track",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "probe 'x-1'" in err and "\n" not in err and "Traceback" not in err


def test_eval_without_token_files_says_to_pass_data(trained_run, tmp_path, capsys):
    assert main(["eval", str(trained_run), "--data", str(tmp_path / "nowhere"), "--no-track"]) == 2
    assert "pass --data DIR" in capsys.readouterr().err


def test_eval_from_another_folder_finds_the_data_the_run_recorded(
    trained_run, tiny_data, tmp_path, capsys, monkeypatch
):
    """A run trained with `--data work/data` names its data relative to where it was started;
    its config.json also records the absolute folder, which eval takes from anywhere else."""
    run = _run_copy(trained_run, tmp_path)
    for state_file in run.glob("checkpoints/*/state.json"):
        state = json.loads(state_file.read_text())
        state["config"]["data"]["data_dir"] = "work/data"
        state_file.write_text(json.dumps(state))
    config = json.loads((run / "config.json").read_text())
    config["data"]["data_dir"] = "work/data"
    (run / "config.json").write_text(json.dumps(config))
    assert config["reproduce"]["data"]["data_dir"] == str(tiny_data.resolve())
    monkeypatch.chdir(tmp_path)  # holds no work/data
    argv = ["eval", str(run), "--no-probes", "--no-generation", "--no-track", "--json"]
    assert main([*argv, "--max-tokens", "64", "--out", str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heldout"]["data_dir"] == str(tiny_data.resolve())
    assert report["heldout"]["own_data"]


@pytest.mark.parametrize("stride", ["0", "-1", "100000"])
def test_eval_refuses_a_stride_outside_the_context(trained_run, tmp_path, capsys, stride):
    argv = ["eval", str(trained_run), "--stride", stride, "--no-probes", "--no-generation"]
    assert main([*argv, "--out", str(tmp_path), "--no-track"]) == 2
    assert "--stride must be between 1 and the model's context" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_eval_refuses_a_file_as_report_folder_before_scoring(trained_run, tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    argv = ["eval", str(trained_run), "--no-probes", "--no-generation", "--no-track"]
    assert main([*argv, "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "is a file; give a folder" in err and "held-out" not in err  # before any scoring
    assert taken.read_text() == "mine"


def test_eval_json_prints_only_the_report_on_stdout(trained_run, tmp_path, capsys):
    args = ["eval", str(trained_run), "--no-heldout", "--no-generation", "--no-track", "--json"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["probes"]["items"] >= 100
    assert "report:" in captured.err and (tmp_path / "step-000040.json").is_file()


def test_eval_json_keeps_stdout_for_the_report_while_it_logs_to_the_run(
    trained_run, tmp_path, capsys
):
    run = _run_copy(trained_run, tmp_path)
    assert main(["eval", str(run), "--no-heldout", "--no-generation", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["step"] == 40
    assert "metrics go to" in captured.err  # the tracker's line, kept for the reader


def test_eval_checks_the_report_folder_can_be_written_before_scoring(
    trained_run, tmp_path, capsys, monkeypatch
):
    import hellolondon.files as files

    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    argv = ["eval", str(trained_run), "--no-probes", "--no-generation", "--no-track"]
    assert main([*argv, "--out", str(taken / "eval")]) == 2
    err = capsys.readouterr().err
    assert "cannot create the report folder" in err and "held-out" not in err
    monkeypatch.setattr(files.os, "access", lambda *_: False)  # a read-only folder, even for root
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert (
        f"cannot create the report folder {tmp_path / 'eval'} ({tmp_path} is not writable)" in err
    )
    assert "held-out" not in err
    read_only = type("Stat", (), {"f_flag": os.ST_RDONLY})()
    monkeypatch.setattr(files.os, "statvfs", lambda *_: read_only)  # a read-only mount
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 2
    assert f"({tmp_path} is on a read-only file system)" in capsys.readouterr().err
    assert taken.read_text() == "mine" and not (tmp_path / "eval").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_eval_refuses_a_report_folder_that_cannot_be_made_before_scoring(trained_run, capsys):
    # /proc passes the permission check (as root) yet takes no new folder
    argv = ["eval", str(trained_run), "--no-probes", "--no-generation", "--no-track"]
    assert main([*argv, "--out", "/proc/hellolondon-eval"]) == 2
    err = capsys.readouterr().err
    assert "the report folder /proc/hellolondon-eval (" in err
    assert "held-out" not in err  # refused before anything was scored


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--max-tokens", "-1"], "error: --max-tokens must be 0 (all) or more, not -1"),
        (["--gen-tokens", "0"], "error: --gen-tokens must be at least 1, not 0"),
    ],
)
def test_eval_names_the_one_count_flag_that_is_wrong(trained_run, capsys, flags, said):
    assert main(["eval", str(trained_run), "--no-track", *flags]) == 2
    assert capsys.readouterr().err.strip() == said


def test_a_probe_file_that_is_not_a_regular_file_is_not_called_missing(tmp_path):
    with pytest.raises(UserError, match=r"^probe file /dev/null is not a regular file; give"):
        P.load_probes("/dev/null")


def test_a_partial_eval_keeps_the_parts_it_left_out_in_the_report(trained_run, tmp_path):
    base = ["eval", str(trained_run), "--no-generation", "--no-track", "--out", str(tmp_path)]
    assert main([*base, "--no-probes", "--max-tokens", "200"]) == 0
    heldout = json.loads((tmp_path / "step-000040.json").read_text())["heldout"]
    assert main([*base, "--no-heldout"]) == 0  # e.g. another probe set
    report = json.loads((tmp_path / "step-000040.json").read_text())
    assert report["heldout"] == heldout and report["probes"]["items"] >= 100
    assert "bits per byte" in (tmp_path / "step-000040.md").read_text()


def test_a_partial_eval_of_a_renamed_run_keeps_the_parts_it_left_out(trained_run, tmp_path):
    # the weights say which checkpoint a report measured, not the name of the run's folder
    run = _run_copy(trained_run, tmp_path)
    assert main(["eval", str(run), "--no-heldout", "--no-generation", "--no-track"]) == 0
    probes = json.loads((run / "eval" / "step-000040.json").read_text())["probes"]
    renamed = run.rename(tmp_path / "best-model")
    argv = ["eval", str(renamed), "--no-probes", "--no-generation", "--no-track"]
    assert main([*argv, "--max-tokens", "200"]) == 0
    report = json.loads((renamed / "eval" / "step-000040.json").read_text())
    assert report["probes"] == probes and report["heldout"]["tokens"] == 200


def test_a_shorter_heldout_check_does_not_replace_a_complete_score(
    trained_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = _run_copy(trained_run, tmp_path)
    out = tmp_path / "reports"
    base = ["eval", str(run), "--no-generation", "--no-probes", "--out", str(out)]
    assert main(base) == 0
    complete = json.loads((out / "step-000040.json").read_text())["heldout"]
    assert complete["complete"]
    capsys.readouterr()
    assert main([*base, "--max-tokens", "100"]) == 0
    said = capsys.readouterr().out
    assert json.loads((out / "step-000040.json").read_text())["heldout"] == complete
    assert "every token" in (out / "step-000040.md").read_text()
    assert "keeps its earlier held-out score" in said and "not saved" in said
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval/val_bpb"] == complete["bpb"]  # the partial score is not logged over it
    assert main([*base, "--max-tokens", "100", "--stride", "8"]) == 0  # another scoring: replaced
    assert not json.loads((out / "step-000040.json").read_text())["heldout"]["complete"]


def test_the_run_summary_holds_one_checkpoints_report(trained_run, tmp_path, capsys, monkeypatch):
    """Not step 20's held-out score beside step 40's probes, nor an older step's score under
    the newest eval/iter."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = _run_copy(trained_run, tmp_path)
    summary = lambda: json.loads((run / "summary.json").read_text())  # noqa: E731
    assert main(["eval", str(run), "--gen-tokens", "4"]) == 0  # step 40, every part
    assert "eval/probe_accuracy" in summary()
    step20 = run / "checkpoints" / "step-000020"
    assert main(["eval", str(step20), "--no-probes", "--gen-tokens", "4"]) == 0
    s = summary()
    report20 = json.loads((run / "eval" / "step-000020.json").read_text())
    assert s["eval/iter"] == 20 and s["eval/val_bpb"] == report20["heldout"]["bpb"]
    assert s.get("eval/probe_accuracy") is None  # step 40's, which step 20 did not measure
    rows = (run / "metrics.jsonl").read_text().splitlines()
    # step 40 again, a part it already has: the summary is step 40's whole report again
    assert main(["eval", str(run), "--no-heldout", "--no-probes", "--gen-tokens", "4"]) == 0
    s, report40 = summary(), json.loads((run / "eval" / "step-000040.json").read_text())
    assert s["eval/iter"] == 40 and s["eval/val_bpb"] == report40["heldout"]["bpb"]
    assert s["eval/probe_accuracy"] == report40["probes"]["accuracy"]
    capsys.readouterr()
    assert main(["eval", str(run), "--no-probes", "--no-generation", "--max-tokens", "50"]) == 0
    new_rows = (run / "metrics.jsonl").read_text().splitlines()[len(rows) + 1 :]
    assert all(set(json.loads(r)) - {"step", "time"} != {"eval/iter"} for r in new_rows)


def test_eval_of_a_run_being_trained_leaves_its_tracker_alone(trained_run, tmp_path, capsys):
    import os
    import socket

    run = _run_copy(trained_run, tmp_path)
    # the record a live training process keeps in its run folder (this test's own process)
    (run / "process.json").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    )
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    args = ["eval", str(run), "--no-heldout", "--no-generation"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "is being trained now" in err and "--no-track" in err and "\n" not in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert main([*args, "--no-track"]) == 0  # its checkpoints can still be evaluated
    assert (run / "eval" / "step-000040.json").is_file()
    assert (run / "metrics.jsonl").read_bytes() == before[run / "metrics.jsonl"]


def test_parts_of_a_report_on_other_weights_at_the_same_step_are_not_kept(tmp_path):
    # a run resumed from an earlier checkpoint writes new weights at a step it had reached
    from hellolondon.evaluation.suite import with_earlier_parts

    key = {"run": "r", "step": 40, "tokenizer_fingerprint": "f"}
    earlier = key | {"weights_sha256": "a" * 64, "heldout": {"bpb": 1.0}}
    (tmp_path / "step-000040.json").write_text(json.dumps(earlier))
    new = key | {"weights_sha256": "b" * 64, "probes": {"accuracy": 0.5}}
    assert "heldout" not in with_earlier_parts(new, tmp_path, "step-000040")
    same = new | {"weights_sha256": "a" * 64}
    assert with_earlier_parts(same, tmp_path, "step-000040")["heldout"] == {"bpb": 1.0}
