"""Publishing an export folder: dry run, token handling, the upload through a mocked HfApi."""

from __future__ import annotations

import pytest

from hellolondon.cli import main

SECRET = "hf_TESTtokenDoNotLeak1234567890"


@pytest.fixture
def folder(tmp_path):
    """An export folder of the right shape, tiny: what `check_export` reads is real."""
    import json

    import torch
    from safetensors.torch import save_file

    from hellolondon.export import hf_shapes

    out = tmp_path / "export"
    out.mkdir()
    config = {"model_type": "gpt2", "vocab_size": 8, "n_embd": 4, "n_layer": 1, "n_head": 1,
              "n_positions": 4}  # fmt: skip
    (out / "config.json").write_text(json.dumps(config))
    tensors = {name: torch.zeros(shape) for name, shape in hf_shapes(config).items()}
    save_file(tensors, str(out / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "README.md", "generation_config.json"):
        (out / name).write_text("{}")
    (out / ".model.safetensors.tmp").write_text("partial")
    return out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("cut", "model.safetensors cannot be read (Error while deserializing header"),
        ("config", "config.json is not valid JSON (Expecting value"),
        ("tokenizer", "tokenizer_config.json is not valid JSON"),
        ("shape", "does not fit config.json"),
        ("layers", "it has no transformer.h.1.attn.c_attn.bias"),  # random layers in transformers
    ],
)
def test_a_damaged_export_is_named_before_anything_goes_up(folder, hub, capsys, damage, message):
    import json

    weights = folder / "model.safetensors"
    if damage == "cut":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "config":
        (folder / "config.json").write_text("garbage")
    elif damage == "tokenizer":
        (folder / "tokenizer_config.json").write_text('{"model_max_length": ')
    elif damage == "layers":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | {"n_layer": 2}))
    else:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | {"vocab_size": 9}))
    assert main(["publish", str(folder), "--repo", "user/ok", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "run `hellolondon export` again" in err and err.count("\n") == 1
    assert hub.calls == []


class FakeApi:
    calls: list = []

    def __init__(self, token=None, **kwargs):
        FakeApi.calls.append(("init", token))

    def create_repo(self, **kwargs):
        FakeApi.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        FakeApi.calls.append(("upload_folder", kwargs))


@pytest.fixture(autouse=True)
def no_saved_token(tmp_path, monkeypatch):
    """No token saved by `hf auth login` unless a test writes one: the machine's own is not read."""
    from huggingface_hub import constants

    path = tmp_path / "hf-home" / "token"
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(path))
    return path


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def test_dry_run_lists_the_files_and_contacts_nothing(folder, hub, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["publish", str(folder), "--repo", "me/london", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload 6 files" in out and "https://huggingface.co/me/london" in out
    assert "model.safetensors" in out and ".tmp" not in out
    assert "HF_TOKEN is not set" in out
    assert hub.calls == []


def test_a_missing_token_is_a_clear_error(folder, hub, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["publish", str(folder), "--repo", "me/london"]) == 2
    err = capsys.readouterr().err.strip()
    assert "HF_TOKEN is not set" in err and "\n" not in err
    assert hub.calls == []


def test_upload_uses_the_token_and_never_shows_or_writes_it(folder, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert main(["publish", str(folder), "--repo", "me/london", "--private"]) == 0
    init, create, upload = hub.calls
    assert init == ("init", SECRET)
    assert create[1] == {
        "repo_id": "me/london",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    assert upload[1]["folder_path"] == str(folder) and upload[1]["repo_id"] == "me/london"
    assert (
        ".model.safetensors.tmp" not in upload[1]["allow_patterns"]
        and "README.md" in upload[1]["allow_patterns"]
    )
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err and "uploaded 6 files" in out.out
    assert not any(SECRET in p.read_text() for p in folder.rglob("*") if p.is_file())


def test_a_hub_error_is_one_line_without_the_token(folder, monkeypatch, capsys):
    import huggingface_hub

    class Failing(FakeApi):
        def upload_folder(self, **kwargs):
            raise RuntimeError(f"401 Unauthorized for token {SECRET}\nmore detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", Failing)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert main(["publish", str(folder), "--repo", "me/london"]) == 2
    err = capsys.readouterr().err.strip()
    assert "401 Unauthorized" in err and SECRET not in err and "\n" not in err


@pytest.mark.parametrize(
    "repo",
    ["london", "me/", "me/lon don", "a/b/c", "me/a--b", "me/a..b", "me/london.git", "me/london."]
    + ["me/" + "x" * 97],
)
def test_a_bad_repo_name_is_refused(folder, repo, capsys):
    assert main(["publish", str(folder), "--repo", repo, "--dry-run"]) == 2
    assert "user/name" in capsys.readouterr().err


def test_a_folder_that_is_not_an_export_is_refused(tmp_path, capsys):
    assert main(["publish", str(tmp_path), "--repo", "me/london", "--dry-run"]) == 2
    assert "not an export folder" in capsys.readouterr().err


def test_a_blank_token_is_not_set_in_a_dry_run_either(folder, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "  ")
    assert main(["publish", str(folder), "--repo", "me/london", "--dry-run"]) == 0
    assert "HF_TOKEN is not set" in capsys.readouterr().out


def test_the_url_follows_hf_endpoint(folder, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org/")
    assert main(["publish", str(folder), "--repo", "me/london", "--dry-run"]) == 0
    assert "to https://hub.example.org/me/london" in capsys.readouterr().out


@pytest.mark.parametrize(
    "message, said",
    [
        ("403 Forbidden: you do not have write access", "403 Forbidden"),
        # a message that starts blank still says its status, and its reason, not the request id
        ("\n(Request ID: r1)\n\nForbidden", "failed: HTTP 403: Forbidden;"),
        # a heading's reason is on the next line (huggingface_hub's 400: "Bad request:\n...")
        (
            "Bad request:\nno write access to me/london\nmore",
            "HTTP 403: Bad request: no write access to me/london;",
        ),
    ],
)
def test_a_refused_token_says_a_write_token_is_needed(folder, monkeypatch, capsys, message, said):
    import huggingface_hub

    class Refused(RuntimeError):
        response = type("Response", (), {"status_code": 403})()

    class Failing(FakeApi):
        def create_repo(self, **kwargs):
            raise Refused(message)

    monkeypatch.setattr(huggingface_hub, "HfApi", Failing)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert main(["publish", str(folder), "--repo", "me/london"]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and "must be a write token" in err and "\n" not in err


def test_the_token_saved_by_hf_auth_login_is_used_when_hf_token_is_unset(
    folder, hub, no_saved_token, capsys, monkeypatch
):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    no_saved_token.parent.mkdir()
    no_saved_token.write_text(SECRET + "\n")
    assert main(["publish", str(folder), "--repo", "me/london", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "token: the token `hf auth login` saved in" in out and SECRET not in out
    assert hub.calls == []
    assert main(["publish", str(folder), "--repo", "me/london"]) == 0
    assert hub.calls[0] == ("init", SECRET)
    monkeypatch.setenv("HF_TOKEN", "hf_fromTheEnvironment")  # the environment wins
    assert main(["publish", str(folder), "--repo", "me/london"]) == 0
    assert hub.calls[3] == ("init", "hf_fromTheEnvironment")


def test_a_byte_changed_in_a_real_export_is_named_before_anything_goes_up(
    trained_run, tmp_path, hub, capsys
):
    from hellolondon.export import export_checkpoint

    out = tmp_path / "export"
    export_checkpoint(trained_run, out)
    argv = ["publish", str(out), "--repo", "user/ok", "--dry-run"]
    assert main(argv) == 0
    assert ".checksums.json" not in capsys.readouterr().out  # recorded, never uploaded
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # inside a tensor: the header still reads
    weights.write_bytes(bytes(data))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model.safetensors is not the file export wrote" in err and hub.calls == []


def test_the_model_card_may_be_edited_before_publishing(trained_run, tmp_path, hub, capsys):
    from hellolondon.export import export_checkpoint

    out = tmp_path / "export"
    export_checkpoint(trained_run, out)
    card = out / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + "\n## Citation\nOurs.\n", encoding="utf-8")
    assert main(["publish", str(out), "--repo", "user/ok", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "note: README.md was edited since the export; your version is uploaded" in said
    assert "README.md" in said.split("would upload")[1]
    card.unlink()  # the card itself is still required
    assert main(["publish", str(out), "--repo", "user/ok", "--dry-run"]) == 2
    assert "missing README.md" in capsys.readouterr().err and hub.calls == []


@pytest.mark.parametrize("extra", ["link", "file", "folder"])
def test_files_export_did_not_write_are_never_uploaded(folder, hub, capsys, extra, tmp_path):
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("not for the Hub")
    if extra == "link":
        (folder / "notes.txt").symlink_to(secret)
    elif extra == "file":
        (folder / "extra.json").write_text("{}")
    else:
        (folder / "sub").mkdir()
        (folder / "sub" / "f.txt").write_text("x")
    assert main(["publish", str(folder), "--repo", "user/ok", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert ("is a link" if extra == "link" else "is not a file export writes") in err
    assert err.count("\n") == 1 and hub.calls == []


@pytest.fixture
def odd_hub(monkeypatch):
    """A server at HF_ENDPOINT that takes requests and answers as no Hub does: never ("hang")
    or with a web page ("page"). Yields a function that starts it and returns its address."""
    import http.server
    import threading

    from hellolondon import publish

    stop = threading.Event()
    servers = []

    def start(kind: str) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if kind == "hang":
                    stop.wait(30)
                    return
                body = b"<html>a proxy's page</html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        address = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("HF_ENDPOINT", address)
        monkeypatch.setenv("HF_TOKEN", SECRET)
        monkeypatch.setattr(publish, "ANSWER_TIMEOUT_S", 1)
        return address

    yield start
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_hub_that_never_answers_fails_in_one_line(folder, odd_hub, capsys):
    import time

    address = odd_hub("hang")
    t0 = time.monotonic()
    assert main(["publish", str(folder), "--repo", "me/london"]) == 2
    assert time.monotonic() - t0 < 20  # it waited without end
    err = capsys.readouterr().err
    assert f"no answer from {address} within 1 s" in err and err.count("\n") == 1


def test_a_server_that_is_not_the_hub_is_named(folder, odd_hub, capsys):
    address = odd_hub("page")
    assert main(["publish", str(folder), "--repo", "me/london"]) == 2
    err = capsys.readouterr().err
    assert f"{address} answered with something other than the Hub's JSON" in err
    assert "check HF_ENDPOINT" in err and err.count("\n") == 1
