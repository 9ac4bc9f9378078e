import pytest
import torch

from hellolondon.config import REGULAR, SLM
from hellolondon.hardware import mfu_percent, peak_flops
from hellolondon.model import GPT


@pytest.mark.parametrize(
    "name, tflops",
    [  # names as torch.cuda.get_device_name() returns them
        ("NVIDIA H200", 989.4),
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA GH200 480GB", 989.4),
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA H800", 989.4),
        ("NVIDIA H800 PCIe", 756.5),
        ("NVIDIA B200", 2250),
        ("NVIDIA GB200", 2500),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A100-SXM4-40GB", 312),
        ("NVIDIA A100-PCIE-40GB", 312),
        ("NVIDIA A100 80GB PCIe", 312),
        ("NVIDIA A800-SXM4-80GB", 312),
        ("NVIDIA A800 80GB PCIe", 312),
        ("NVIDIA A30", 165),
        ("NVIDIA A40", 149.7),
        ("NVIDIA A10", 125),
        ("NVIDIA L40S", 362.05),
        ("NVIDIA L40", 181.05),
        ("NVIDIA L4", 121),
        ("NVIDIA RTX 6000 Ada Generation", 364.2),
        ("NVIDIA RTX A6000", 154.8),
        ("NVIDIA GeForce RTX 4090", 165.2),
        ("NVIDIA GeForce RTX 3090", 71),
        ("Tesla V100-SXM2-16GB", 125),
        ("Tesla V100-PCIE-32GB", 112),
        ("Tesla V100S-PCIE-32GB", 130),
        ("Tesla T4", 65),
    ],
)
def test_peak_table_knows_real_device_names(name, tflops, monkeypatch):
    monkeypatch.delenv("HELLOLONDON_PEAK_TFLOPS", raising=False)
    assert peak_flops(name) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA A10G",  # no vendor figure: not the A10's
        "NVIDIA RTX A1000",  # not an A10
        "NVIDIA RTX A4000",  # not an A40
        "NVIDIA H20",  # not an H200
        "NVIDIA GeForce RTX 4090 D",
        "NVIDIA GeForce RTX 3090 Ti",
        "Quadro RTX 6000",  # Turing, not the Ada card
        "x86_64",  # no made-up CPU peak
    ],
)
def test_peak_table_does_not_guess(name, monkeypatch):
    monkeypatch.delenv("HELLOLONDON_PEAK_TFLOPS", raising=False)
    assert peak_flops(name) is None


def test_peak_override(monkeypatch):
    monkeypatch.setenv("HELLOLONDON_PEAK_TFLOPS", "100")
    assert peak_flops("x86_64") == 100e12 and peak_flops("NVIDIA H100 PCIe") == 100e12
    assert peak_flops("NVIDIA H100 PCIe", override=5e12) == 5e12


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
