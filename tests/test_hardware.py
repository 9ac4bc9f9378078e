import pytest
import torch

from hellolondon.config import REGULAR, SLM
from hellolondon.hardware import mfu_percent, peak_flops
from hellolondon.model import GPT


def test_peak_table_picks_the_specific_card(monkeypatch):
    monkeypatch.delenv("HELLOLONDON_PEAK_TFLOPS", raising=False)
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA L40S") == 362e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("x86_64") is None  # no made-up CPU peak
    monkeypatch.setenv("HELLOLONDON_PEAK_TFLOPS", "100")
    assert peak_flops("x86_64") == 100e12


@pytest.mark.parametrize(
    "preset, tokens_per_sec, expected",
    # nanoGPT's published H200 runs: SLM 576k tok/s at 44% MFU, Regular 203k tok/s at 47%
    [(SLM, 576_000, 44.3), (REGULAR, 203_000, 47.2)],
)
def test_mfu_by_hand_reproduces_the_reference_figures(preset, tokens_per_sec, expected):
    with torch.device("meta"):
        model = GPT(preset.model)
    c = preset.model
    by_hand = 6 * model.num_params() + 12 * c.n_layer * c.n_head * c.head_dim * c.block_size
    assert model.flops_per_token() == by_hand
    assert mfu_percent(by_hand, tokens_per_sec, 1, 989e12) == pytest.approx(expected, abs=0.1)
    # eight devices sharing eight times the throughput are as busy as one
    assert mfu_percent(by_hand, 8 * tokens_per_sec, 8, 989e12) == pytest.approx(expected, abs=0.1)
    assert mfu_percent(by_hand, tokens_per_sec, 1, None) is None
