"""Generation: KV-cache decoding equals the full forward pass, and sampling is reproducible."""

from __future__ import annotations

import os

import pytest
import torch

from hellolondon.config import ModelConfig
from hellolondon.errors import UserError
from hellolondon.generate import Sampling, generate_ids, kept_on_shift, window_start
from hellolondon.model import GPT, KVCache

CFG = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=48, vocab_size=97)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CFG).eval()


def _tokens(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (1, n), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_incremental_decoding_gives_the_logits_of_the_full_forward_pass(model):
    idx = _tokens(40)
    full, _ = model(idx)
    cache = KVCache(CFG, 1, 40, "cpu", torch.float32)
    parts = []
    for a, b in [
        (0, 13),
        (13, 14),
        (14, 15),
        (15, 22),
        (22, 23),
        (23, 40),
    ]:  # a prefill, single tokens, chunks
        parts.append(model(idx[:, a:b], cache=cache)[0])
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)
    assert cache.pos == 40


@torch.no_grad()
def _greedy_without_cache(model: GPT, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    return ids[len(prompt) :]


def test_greedy_generation_matches_decoding_without_a_cache(model):
    prompt = _tokens(7, seed=3)[0].tolist()
    s = Sampling(max_new_tokens=30, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    assert generate_ids(model, prompt, s) == _greedy_without_cache(model, prompt, 30)


def test_top_k_of_one_samples_the_greedy_tokens(model):
    prompt = [5, 6, 7]
    greedy = generate_ids(
        model, prompt, Sampling(20, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    )
    top1 = generate_ids(
        model,
        prompt,
        Sampling(20, temperature=1.3, top_k=1, top_p=1.0, repetition_penalty=1.0, seed=9),
    )
    assert top1 == greedy


def test_the_same_seed_gives_the_same_text_and_another_seed_other_text(model):
    s = Sampling(max_new_tokens=25, temperature=1.0, top_k=0, top_p=1.0, seed=11)
    a, b = generate_ids(model, [1, 2], s), generate_ids(model, [1, 2], s)
    other = generate_ids(
        model, [1, 2], Sampling(max_new_tokens=25, temperature=1.0, top_k=0, top_p=1.0, seed=12)
    )
    assert a == b and a != other


def test_generation_stops_at_end_of_text(model):
    s = Sampling(max_new_tokens=30, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    ids = generate_ids(model, [1, 2, 3], s)
    assert generate_ids(model, [1, 2, 3], s, eot_id=ids[4]) == ids[: ids.index(ids[4])]


@torch.no_grad()
def _greedy_shifting_without_cache(model: GPT, prompt: list[int], n: int) -> list[int]:
    """Each token from a full forward pass over the view `window_start` gives: while the text
    fits, all of it; past the context, from a start that moves on by a quarter at a time."""
    ctx, keep = CFG.block_size, kept_on_shift(CFG.block_size)
    ids, start = list(prompt), window_start(len(prompt), CFG.block_size)
    for _ in range(n):
        if len(ids) - start > ctx:
            start = len(ids) - keep
        ids.append(int(model(torch.tensor([ids[start:]]))[0][0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("n_prompt", [0, 1, CFG.block_size - 1, CFG.block_size, 3 * CFG.block_size])
def test_greedy_decoding_past_the_context_matches_a_recompute_of_the_shifted_view(model, n_prompt):
    prompt = _tokens(n_prompt, seed=5)[0].tolist()
    s = Sampling(max_new_tokens=130, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    out = generate_ids(model, prompt, s)  # no end-of-text id: an empty prompt starts with 0
    assert len(out) == 130  # the context does not stop it: the view shifts (three times here)
    assert out == _greedy_shifting_without_cache(model, prompt or [0], len(out))


def test_the_view_keeps_the_newest_three_quarters_of_the_context():
    assert kept_on_shift(48) == 36 and kept_on_shift(1024) == 768 and kept_on_shift(1) == 1
    assert window_start(48, 48) == 0 and window_start(49, 48) == 49 - 36


def test_the_model_is_left_as_it_was_even_when_a_callback_fails(model):
    def boom(token: int) -> None:
        raise RuntimeError("stop")

    head = model.lm_head
    model.train()
    with pytest.raises(RuntimeError):
        generate_ids(model, [1, 2], Sampling(max_new_tokens=5), on_token=boom)
    assert model.lm_head is head and head.weight is model.transformer.wte.weight
    assert model.training
    model.eval()


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"top_p": float("nan")},
        {"repetition_penalty": float("nan")},
        {"repetition_penalty": float("inf")},
    ],
)
def test_sampling_settings_that_are_not_finite_are_refused(bad):
    with pytest.raises(UserError, match="finite"):
        Sampling(**bad)


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--seed", "18446744073709551616"),
        ("--seed", "-9223372036854775809"),
        ("--top-p", "0"),
        ("--top-k", "-1"),
        ("--temperature", "-1"),
        ("--repetition-penalty", "0"),
    ],
)
def test_a_bad_sampling_setting_is_one_line_naming_its_flag_before_any_output(
    trained_run, capsys, flag, value
):
    from hellolondon.cli import main

    assert main(["generate", str(trained_run), "--prompt", "The king", flag, value]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""  # the prompt is not echoed ahead of the error
    assert printed.err.startswith(f"error: {flag} must be") and value in printed.err
    assert printed.err.count("\n") == 1


def test_the_whole_seed_range_of_torch_is_taken(model):
    for seed in (-(2**63), -1, 2**64 - 1):
        generate_ids(model, [1, 2], Sampling(max_new_tokens=2, seed=seed))


@pytest.mark.parametrize("flag", ["--interactive", "-i"])
def test_interactive_with_piped_prompts_ends_its_output_with_a_newline(
    trained_run, monkeypatch, capsys, flag
):
    import io

    from hellolondon.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("The king\n"))
    assert main(["generate", str(trained_run), flag, "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("prompt> The king") and out.endswith("prompt> \n")


def test_interactive_takes_the_prompt_flag_as_its_first_prompt(trained_run, monkeypatch, capsys):
    import io

    from hellolondon.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("The queen\n"))
    argv = ["generate", str(trained_run), "--interactive", "--max-new-tokens", "3"]
    assert main([*argv, "--prompt", "The king", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("prompt> The king\nThe king")
    assert "prompt> The queen" in out  # then the prompts typed in


def test_interactive_refuses_a_prompt_that_is_not_utf8_and_asks_for_the_next(
    trained_run, monkeypatch, capsys
):
    import io

    from hellolondon.cli import main

    # a Latin-1 terminal's "Café": the byte 0xe9 reaches Python as a lone surrogate
    monkeypatch.setattr("sys.stdin", io.StringIO("Caf\udce9\nThe queen\n"))
    argv = ["generate", str(trained_run), "-i", "--max-new-tokens", "3"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "error: the text holds bytes that are not UTF-8" in err
    assert "prompt> The queen" in out and out.endswith("prompt> \n")  # the session went on


def test_ctrl_c_stops_the_text_being_written_and_the_session_asks_for_the_next(
    trained_run, monkeypatch, capsys
):
    import io

    import hellolondon.generate as gen
    from hellolondon.cli import main

    real = gen.generate_ids

    def stopped_by_ctrl_c(model, prompt, s, eot_id=None, on_token=None):
        if len(stopped) < 1:  # the first text: Ctrl-C after two tokens
            stopped.append(1)
            real(model, prompt, gen.Sampling(max_new_tokens=2), eot_id, on_token)
            raise KeyboardInterrupt
        return real(model, prompt, s, eot_id, on_token)

    stopped: list[int] = []
    monkeypatch.setattr(gen, "generate_ids", stopped_by_ctrl_c)
    monkeypatch.setattr("sys.stdin", io.StringIO("The king\nThe queen\n"))
    assert main(["generate", str(trained_run), "-i", "--max-new-tokens", "3"]) == 0
    out, err = capsys.readouterr()
    first, second = out.split("prompt> ")[1:3]
    assert first.startswith("The king") and first.endswith("\n")  # its line ended
    assert second.startswith("The queen") and out.endswith("prompt> \n")  # the session went on
    assert "stopped" in err
    # SIGTERM ends the session, also while a text is written
    from hellolondon.errors import Terminated

    def terminated(*args, **kwargs):
        raise Terminated

    monkeypatch.setattr(gen, "generate_ids", terminated)
    monkeypatch.setattr("sys.stdin", io.StringIO("The king\nThe queen\n"))
    assert main(["generate", str(trained_run), "-i"]) == 143
    assert capsys.readouterr().out.count("prompt> ") == 1
    monkeypatch.setattr(gen, "generate_ids", stopped_by_ctrl_c)
    # outside a session, Ctrl-C ends the command, the text's line ended first
    stopped.clear()
    assert main(["generate", str(trained_run), "--prompt", "The king"]) == 130
    out, err = capsys.readouterr()
    assert out.startswith("The king") and out.endswith("\n") and err == "interrupted\n"


def test_a_corrupt_newest_checkpoint_names_an_earlier_one_to_use(trained_run, tmp_path, capsys):
    import shutil

    from hellolondon.cli import main

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    root = run / "checkpoints"
    shutil.rmtree(root / "best")  # as training leaves it: hard links to its step folder's files
    (root / "best").mkdir()
    for f in (root / "step-000040").iterdir():
        os.link(f, root / "best" / f.name)
    weights = root / "step-000040" / "model.safetensors"
    with open(weights, "r+b") as f:  # cut short in place: best/ shares the file
        f.truncate(weights.stat().st_size - 10)
    for given in (run, root / "best"):  # best/ holds the same bytes: not the one to name
        assert main(["generate", str(given), "--max-new-tokens", "2"]) == 2
        err = capsys.readouterr().err
        assert "truncated or corrupt" in err and err.count("\n") == 1
        assert f"give another checkpoint instead, such as {root / 'step-000020'}" in err
    assert (
        main(["generate", str(run / "checkpoints" / "step-000020"), "--max-new-tokens", "2"]) == 0
    )
    state = root / "step-000040" / "state.json"  # now a cut-short state.json: no silent fallback
    weights.unlink()
    shutil.rmtree(root / "best")
    state.write_text(state.read_text()[:50])
    assert main(["generate", str(run), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert f"give another checkpoint instead, such as {root / 'step-000020'}" in err


def test_a_checkpoint_config_of_the_wrong_type_names_its_state_file(trained_run, tmp_path, capsys):
    import json
    import shutil

    from hellolondon.cli import main

    ckpt = tmp_path / "step-000040"
    shutil.copytree(trained_run / "checkpoints" / "step-000040", ckpt)
    shutil.copytree(trained_run / "tokenizer", ckpt / "tokenizer")
    state = json.loads((ckpt / "state.json").read_text())
    state["config"]["model"]["n_layer"] = "x"  # a hand edit
    (ckpt / "state.json").write_text(json.dumps(state))
    assert main(["generate", str(ckpt), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{ckpt / 'state.json'}: model.n_layer: expected" in err


def test_interactive_with_standard_input_closed_ends_as_at_its_end(
    trained_run, monkeypatch, capsys
):
    from hellolondon.cli import main

    monkeypatch.setattr("sys.stdin", None)  # `generate --interactive <&-`
    assert main(["generate", str(trained_run), "--interactive", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out == ""


def test_the_command_says_on_stderr_when_the_text_passed_the_context(trained_run, capsys):
    from hellolondon.cli import main

    args = ["generate", str(trained_run), "--prompt", "The king", "--temperature", "0"]
    assert main([*args, "--repetition-penalty", "1", "--max-new-tokens", "100"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("(the text has ") and "more than the model's context of 32" in err
    assert "(the text" not in out and out.startswith("The king")
    assert main([*args, "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().err == ""


def test_weights_that_diverged_are_named_not_sampled_from(tiny_data, tmp_path):
    from tinyrun import tiny_config

    from hellolondon.train.run import setup_run
    from hellolondon.train.steps import maybe_sample

    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=64))
    with torch.no_grad():
        model.transformer.wte.weight.fill_(float("nan"))
    for temperature in (0.0, 1.0):
        with pytest.raises(UserError, match="scores are not finite .* an earlier checkpoint"):
            generate_ids(model, [1, 2], Sampling(max_new_tokens=3, temperature=temperature))
    said: list[str] = []  # a run whose weights diverged: its closing sample says so, no crash
    run = setup_run(tiny_config(tiny_data, tmp_path, "tracking.run_name=nan"), log=said.append)
    with torch.no_grad():
        run.model.transformer.wte.weight.fill_(float("nan"))
    maybe_sample(run, force=True)
    run.tracker.finish()
    assert (
        "(no sample: the model's next-token scores are not finite"
        in run.rundir.samples_file.read_text()
    )
    assert any(s.startswith("warning: no sample at iteration 0") for s in said)


def test_a_damaged_checkpoint_without_a_sound_other_says_what_to_do(trained_run, tmp_path, capsys):
    import shutil

    from hellolondon.cli import main

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for weights in (run / "checkpoints").glob("*/model.safetensors"):
        os.truncate(weights, weights.stat().st_size - 10)
    assert main(["generate", str(run), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt (sha256 mismatch); no other checkpoint of the run" in err
    assert err.rstrip().endswith(
        "copy the checkpoint again from where it was trained, or train again"
    )
    assert err.count("\n") == 1


def test_help_says_temperature_0_is_greedy_over_the_penalised_scores(capsys):
    from hellolondon.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "most likely" not in text
    assert "0 is greedy: the best token after the repetition penalty" in text
    assert "--repetition-penalty 1 for plain greedy" in text


def test_temperature_0_takes_the_best_token_after_the_repetition_penalty():
    from hellolondon.generate import _next_token

    logits = torch.tensor([[4.0, 3.9, 1.0]])
    seen = torch.tensor([[True, False, False]])  # token 0 is already in the text
    s = Sampling(temperature=0.0, repetition_penalty=1.1)
    assert _next_token(logits, s, seen, None).item() == 1  # 4.0 / 1.1 < 3.9
    plain = Sampling(temperature=0.0, repetition_penalty=1.0)
    assert _next_token(logits, plain, None, None).item() == 0
