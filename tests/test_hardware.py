import sys
import types

import pytest
import torch

from hellolondon import hardware
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


class FakeNvml(types.ModuleType):
    """pynvml with four cards in NVML (PCI) order; the lookups by UUID and bus id are counted."""

    CARDS = [  # (uuid, PCI bus id, utilisation)
        ("GPU-00000000-0000-0000-0000-000000000000", "00000000:1B:00.0", 10),
        ("GPU-11111111-1111-1111-1111-111111111111", "00000000:3B:00.0", 20),
        ("GPU-22222222-2222-2222-2222-222222222222", "00000000:5B:00.0", 30),
        ("GPU-33333333-3333-3333-3333-333333333333", "00000000:DB:00.0", 77),
    ]

    def __init__(self, bytes_only: bool = False, no_uuid_lookup: bool = False):
        super().__init__("pynvml")
        self.bytes_only, self.no_uuid_lookup = bytes_only, no_uuid_lookup
        self.calls: list[str] = []

    def _find(self, field: int, key: str | bytes) -> int:
        if self.bytes_only and isinstance(key, str):
            raise TypeError("bytes expected")
        key = key.decode() if isinstance(key, bytes) else key
        for i, card in enumerate(self.CARDS):
            if card[field] == key:
                return i
        raise RuntimeError("NVML_ERROR_NOT_FOUND")

    def nvmlInit(self):  # noqa: N802 (pynvml's names)
        self.calls.append("init")

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
        self.calls.append("uuid")
        if self.no_uuid_lookup:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self._find(0, uuid)

    def nvmlDeviceGetHandleByPciBusId(self, bus):  # noqa: N802
        self.calls.append("pci")
        return self._find(1, bus)

    def nvmlDeviceGetUtilizationRates(self, handle):  # noqa: N802
        return types.SimpleNamespace(gpu=self.CARDS[handle][2], memory=0)

    def nvmlDeviceGetMigMode(self, handle):  # noqa: N802
        if not hasattr(self, "mig"):
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")  # a card without MIG
        return (self.mig, self.mig)


@pytest.fixture
def cuda_visible_3(monkeypatch):
    """CUDA device 0 is NVML's card 3 (as under CUDA_VISIBLE_DEVICES=3); torch reports the UUID
    without the "GPU-" prefix, as it does."""
    import hellolondon.hardware as hw

    monkeypatch.setattr(hw, "_nvml_handles", {}, raising=False)
    monkeypatch.setattr(hw, "_nvml_started", False, raising=False)
    props = types.SimpleNamespace(
        name="NVIDIA H100 80GB HBM3",
        total_memory=80 * 2**30,
        uuid="33333333-3333-3333-3333-333333333333",
        pci_domain_id=0,
        pci_bus_id=0xDB,
        pci_device_id=0,
    )
    asked: list[int] = []

    def get_props(index):
        asked.append(index)
        return props

    monkeypatch.setattr(torch.cuda, "get_device_properties", get_props)
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None: 2**30)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return props, asked


def test_nvml_utilization_is_the_visible_card_by_uuid(cuda_visible_3, monkeypatch):
    from hellolondon.hardware import gpu_metrics

    _, asked = cuda_visible_3
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    row = gpu_metrics(torch.device("cuda", 0))
    assert row["gpu/utilization"] == 77  # NVML index 0 would say 10
    assert row["gpu/mem_allocated_gb"] == 1 and row["gpu/mem_total_gb"] == 80
    assert gpu_metrics(torch.device("cuda"))["gpu/utilization"] == 77  # no index: current device
    # The handle is looked up once (the device's properties are asked for by index once; the
    # other two requests are each row's memory total), and NVML is started once.
    assert fake.calls == ["init", "uuid"] and asked.count(0) == 1 and len(asked) == 3


def test_nvml_falls_back_to_the_pci_bus_id(cuda_visible_3, monkeypatch):
    from hellolondon.hardware import _nvml_utilization

    fake = FakeNvml(no_uuid_lookup=True, bytes_only=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert _nvml_utilization(0) == 77
    assert fake.calls[-1] == "pci" and "uuid" in fake.calls


def test_a_mig_instance_is_not_given_its_whole_cards_utilisation(cuda_visible_3, monkeypatch):
    """A MIG instance's UUID is no card's: the bus id then finds the whole card, whose figure
    covers every instance on it, so none is reported; a card with MIG off still gets its own."""
    import hellolondon.hardware as hw

    props, _ = cuda_visible_3
    props.uuid = "44444444-4444-4444-4444-444444444444"  # the instance's
    fake = FakeNvml()
    fake.mig = 1
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert hw._nvml_utilization(0) is None
    assert fake.calls == ["init", "uuid", "uuid", "uuid", "uuid", "pci"]  # GPU-, MIG-: str, bytes
    monkeypatch.setattr(hw, "_nvml_handles", {})
    fake.mig = 0
    assert hw._nvml_utilization(0) == 77


def test_nvml_without_a_match_or_pynvml_gives_no_metric(cuda_visible_3, monkeypatch):
    import hellolondon.hardware as hw

    props, _ = cuda_visible_3
    props.uuid, props.pci_bus_id = "99999999-9999-9999-9999-999999999999", 0x01
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    assert hw._nvml_utilization(0) is None  # never another card's figure
    monkeypatch.setattr(hw, "_nvml_handles", {})
    for attr in ("uuid", "pci_bus_id"):  # a torch that reports neither
        delattr(props, attr)
    assert hw._nvml_utilization(0) is None
    monkeypatch.setattr(hw, "_nvml_handles", {})
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    row = hw.gpu_metrics(torch.device("cuda", 0))
    assert "gpu/utilization" not in row and row["gpu/mem_reserved_gb"] == 1


@pytest.mark.parametrize(
    ("machine", "avx512_bf16", "amx", "lacks"),
    [
        ("x86_64", False, False, True),  # AVX2 only: bf16 products through the slow fallback
        ("x86_64", True, False, False),
        ("AMD64", False, True, False),
        ("arm64", False, False, False),  # no check there, so no claim
    ],
)
def test_a_cpu_without_bf16_matrix_units_is_told(machine, avx512_bf16, amx, lacks, monkeypatch):
    monkeypatch.setattr(hardware.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert hardware.cpu_lacks_bf16_matmul() is lacks


def test_a_gpu_without_bf16_units_trains_and_scores_in_fp16_or_float32(monkeypatch):
    """Before Ampere (V100, T4) torch says bf16 is "supported" through emulation, which has
    no tensor-core kernels: `dtype=auto` takes fp16 there (with its grad scaler), and held-out
    scoring stays in float32, as the docs say."""
    from hellolondon.config import build_config
    from hellolondon.evaluation.heldout import _autocast
    from hellolondon.train.run import precision

    cards = {0: (9, 0), 1: (7, 0)}  # an H100 beside a V100: each device asked about itself
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: cards[d.index])
    asked: list[dict] = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, **kw: asked.append(kw))
    old, new = torch.device("cuda", 1), torch.device("cuda", 0)
    assert precision(build_config("tiny"), old) == torch.float16
    assert precision(build_config("tiny"), new) == torch.bfloat16
    _autocast(old)
    _autocast(new)
    assert asked == [{"enabled": False}, {"dtype": torch.bfloat16}]
