"""Without W&B's sweep engine, `hellolondon sweep` says how to install it, and starts nothing."""

from __future__ import annotations

import sys

from hellolondon.cli import main


def test_sweep_without_the_engine_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "method: random\nparameters:\n  train.lr: {values: [0.001]}\n"
        'command: ["${env}", "${interpreter}", -m, hellolondon, train, "${args_no_hyphens}"]\n'
    )
    monkeypatch.setitem(sys.modules, "sweeps", None)  # import sweeps -> ImportError
    code = main(["sweep", str(spec), "--trials", "1", "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "pip install --no-deps sweeps==0.3.0" in err and "hellolondon[sweep]" in err
    assert not (tmp_path / "out").exists()
