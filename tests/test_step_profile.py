"""Where a step's time goes (`bench --profile`): kinds of kernels, busy time, the summary."""

from __future__ import annotations

import contextlib
import json
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from hellolondon.cli import main
from hellolondon.step_profile import (
    OPTIMIZER_RANGE,
    busy_us,
    format_summary,
    kind_of,
    optimizer_range,
    summarize,
    summary_of,
)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "matmul"),
        ("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN", "matmul"),
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
        ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>", "attention"),
        ("fmha_cutlassB_bf16_aligned_64x64_k64_sm80", "attention"),  # not a plain GEMM
        ("triton_per_fused__to_copy_add_native_layer_norm_0", "fused (compiled)"),  # not a copy
        ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>", "optimizer"),
        ("Memcpy HtoD (Pinned -> Device)", "copy"),
        (
            "void at::native::vectorized_elementwise_kernel<4, CUDAFunctor_add>",
            "element-wise (eager)",
        ),
        ("aten::mm", "matmul"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
        ("## Call CompiledFxGraph fyt74hacsibq ##", "fused (compiled)"),
        ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "other"),
    ],
)
def test_kernels_are_told_apart_by_kind(name, kind):
    assert kind_of(name) == kind


def test_busy_time_counts_overlapping_kernels_once():
    assert busy_us([(0, 10), (5, 15), (20, 25)]) == 20  # 0-15 and 20-25
    assert busy_us([(0, 10), (2, 3)]) == 10  # inside another
    assert busy_us([]) == 0


def test_summary_gives_per_step_times_shares_and_the_costliest():
    events = [(n, s, d, kind_of(n)) for n, s, d in [
        ("gemm_a", 0, 600), ("gemm_a", 1000, 600), ("triton_poi_x", 700, 200),
        ("flash_fwd", 1700, 400), ("multi_tensor_apply", 2200, 200)]]  # fmt: skip
    s = summarize(events, wall_us=4000, steps=2, timed_on="gpu")
    assert s["summed_ms_per_step"] == pytest.approx(1.0)  # 2000 µs over 2 steps
    assert s["wall_ms_per_step"] == pytest.approx(2.0)
    assert list(s["kinds"])[0] == "matmul"  # costliest first
    assert s["kinds"]["matmul"]["ms_per_step"] == pytest.approx(0.6)
    assert s["kinds"]["matmul"]["share"] == pytest.approx(0.6)
    assert s["top"][0] == {"name": "gemm_a", "kind": "matmul", "ms_per_step": pytest.approx(0.6)}
    assert s["gpu_busy_share"] == pytest.approx(0.5)
    text = "\n".join(format_summary(s))
    assert "GPU busy 50%" in text and "matmul" in text and "gemm_a" in text


def test_bench_profiles_a_cpu_step_and_writes_a_trace(tmp_path, capsys):
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
            "--repeat", "3", "--batch-size", "2", "--block-size", "16", "--vocab-size", "256",
            "--json", "--profile", str(tmp_path / "prof"), "model.n_layer=1",
            "train.compile=false"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["ms_per_iter_windows"]) == 3
    assert result["ms_per_iter"] == sorted(result["ms_per_iter_windows"])[1]  # the median
    prof = result["profile"]
    assert prof["timed_on"] == "cpu" and prof["steps"] == 3
    assert (
        prof["kinds"]["matmul"]["ms_per_step"] > 0 and prof["kinds"]["attention"]["ms_per_step"] > 0
    )
    trace = json.loads((tmp_path / "prof" / "trace.json").read_text())
    assert any("aten::mm" in e.get("name", "") for e in trace["traceEvents"])


def test_bench_refuses_a_repeat_of_zero(capsys):
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--repeat", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--repeat (0) must be at least 1" in err and err.count("\n") == 1


@pytest.mark.parametrize("where, said", [("file", "is a file"), ("file/sub", "cannot be created")])
def test_bench_checks_the_profile_folder_before_it_runs(tmp_path, capsys, where, said):
    (tmp_path / "file").write_text("kept")
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--profile", str(tmp_path / where)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1
    assert (tmp_path / "file").read_text() == "kept"


def test_a_gpu_profile_without_kernel_events_says_so_and_sums_cpu_time():
    # CUPTI can be refused (a container without profiling rights): then no kernel is recorded,
    # and a "GPU busy 0%" would be false
    span = SimpleNamespace(start=0.0, elapsed_us=lambda: 500.0)
    ops = [SimpleNamespace(name="aten::mm", device_type=DeviceType.CPU, time_range=span,
                           self_cpu_time_total=400.0, cpu_parent=None, id=1,
                           linked_correlation_id=0)]  # fmt: skip
    prof = SimpleNamespace(events=lambda: ops)
    s = summary_of(prof, torch.device("cuda", 0), wall_us=1000.0, steps=1)
    assert s["timed_on"] == "cpu" and "gpu_busy_share" not in s
    assert s["kinds"]["matmul"]["ms_per_step"] == pytest.approx(0.4)
    assert "no GPU kernels were recorded" in "\n".join(format_summary(s))
    kernel = SimpleNamespace(name="sm90_xmma_gemm", device_type=DeviceType.CUDA, time_range=span,
                             self_cpu_time_total=0.0, is_user_annotation=False,
                             linked_correlation_id=1)  # fmt: skip
    prof = SimpleNamespace(events=lambda: [*ops, kernel])
    s = summary_of(prof, torch.device("cuda", 0), wall_us=1000.0, steps=1)
    assert s["timed_on"] == "gpu" and s["gpu_busy_share"] == pytest.approx(0.5)


def _cpu_op(name, parent=None, op_id=0):
    span = SimpleNamespace(start=0.0, elapsed_us=lambda: 100.0)
    return SimpleNamespace(name=name, device_type=DeviceType.CPU, time_range=span, id=op_id,
                           self_cpu_time_total=100.0, cpu_parent=parent,
                           linked_correlation_id=0)  # fmt: skip


def _kernel(name, launcher, us, annotation=False):
    span = SimpleNamespace(start=0.0, elapsed_us=lambda: us)
    return SimpleNamespace(name=name, device_type=DeviceType.CUDA, time_range=span,
                           self_cpu_time_total=0.0, is_user_annotation=annotation,
                           linked_correlation_id=launcher.id)  # fmt: skip


def test_gpu_kernels_launched_in_the_optimizer_range_are_optimizer_time():
    # Muon's Newton-Schulz products are GEMM kernels launched by aten::baddbmm inside the
    # range; the model's GEMMs outside it stay matmul. The GPU's copy of the range itself
    # spans those kernels: counting it too would count their time twice.
    step = _cpu_op(OPTIMIZER_RANGE, op_id=10)
    ns = _cpu_op("aten::baddbmm", parent=_cpu_op("Optimizer.step#Muon.step", step), op_id=11)
    model_mm = _cpu_op("aten::mm", op_id=12)
    ops = [step, ns, model_mm]
    kernels = [_kernel("sm90_xmma_gemm_a", ns, 300.0), _kernel("sm90_xmma_gemm_b", model_mm, 200.0),
               _kernel(OPTIMIZER_RANGE, step, 400.0, annotation=True)]  # fmt: skip
    prof = SimpleNamespace(events=lambda: [*ops, *kernels])
    s = summary_of(prof, torch.device("cuda", 0), wall_us=1000.0, steps=1)
    assert s["timed_on"] == "gpu" and s["summed_ms_per_step"] == pytest.approx(0.5)
    assert s["kinds"]["optimizer"]["ms_per_step"] == pytest.approx(0.3)
    assert s["kinds"]["matmul"]["ms_per_step"] == pytest.approx(0.2)


def test_kernels_find_their_launchers_on_torch_2_11_whose_events_lack_the_link():
    # torch 2.11's FunctionEvent has no linked_correlation_id: the kineto event each one was
    # made from has it, found by kind, id and start. Ids repeat across kinds (an operator's and
    # a kernel's counters), so the kind and start tell them apart.
    def op(name, op_id, start_us, parent=None):
        span = SimpleNamespace(start=start_us, elapsed_us=lambda: 100.0)
        return SimpleNamespace(name=name, device_type=DeviceType.CPU, time_range=span, id=op_id,
                               self_cpu_time_total=100.0, cpu_parent=parent)  # fmt: skip

    def kernel(name, corr, start_us, us):
        span = SimpleNamespace(start=start_us, elapsed_us=lambda: us)
        return SimpleNamespace(name=name, device_type=DeviceType.CUDA, time_range=span, id=corr,
                               self_cpu_time_total=0.0, is_user_annotation=False)  # fmt: skip

    def kineto(e, linked):  # as torch made the event: start in ns from the trace's start
        ns = round(e.time_range.start * 1000) + 5_000
        return SimpleNamespace(device_type=lambda: e.device_type, correlation_id=lambda: e.id,
                               start_ns=lambda: ns, linked_correlation_id=lambda: linked)  # fmt: skip

    step = op(OPTIMIZER_RANGE, 10, 1.5)
    ns = op("aten::baddbmm", 11, 2.25, parent=op("Optimizer.step#Muon.step", 12, 2.0, step))
    model_mm = op("aten::mm", 1, 0.125)
    launch = op("cudaLaunchKernel", 11, 0.5)  # a runtime call whose id is also an operator's
    gemm_a, gemm_b = kernel("sm90_xmma_gemm_a", 11, 3.0, 300.0), kernel("gemm_b", 1, 0.75, 200.0)
    links = [(step, 0), (ns, 0), (model_mm, 0), (launch, 1), (gemm_a, 11), (gemm_b, 1)]
    results = SimpleNamespace(trace_start_ns=lambda: 5_000,
                              events=lambda: [kineto(e, linked) for e, linked in links])  # fmt: skip
    prof = SimpleNamespace(events=lambda: [e for e, _ in links],
                           profiler=SimpleNamespace(kineto_results=results))  # fmt: skip
    s = summary_of(prof, torch.device("cuda", 0), wall_us=1000.0, steps=1)
    assert s["timed_on"] == "gpu" and s["summed_ms_per_step"] == pytest.approx(0.5)
    assert s["kinds"]["optimizer"]["ms_per_step"] == pytest.approx(0.3)
    assert s["kinds"]["matmul"]["ms_per_step"] == pytest.approx(0.2)


def test_cpu_operators_inside_the_optimizer_range_are_optimizer_time():
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        a = torch.randn(64, 64)
        with optimizer_range():
            torch.baddbmm(a[None], a[None], a[None])
            a @ a  # a product, but the optimizer's
        a @ a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = summary_of(prof, torch.device("cpu"), wall_us=1000.0, steps=1)
    kinds = {(t["name"], t["kind"]) for t in s["top"]}
    assert {
        ("aten::baddbmm", "optimizer"),
        ("aten::mm", "optimizer"),
        ("aten::mm", "matmul"),
    } <= kinds
    assert ("aten::baddbmm", "matmul") not in kinds


def test_the_optimizer_range_is_entered_only_while_a_profiler_records():
    assert isinstance(optimizer_range(), contextlib.nullcontext)  # training pays nothing
    with profile(activities=[ProfilerActivity.CPU]):
        assert not isinstance(optimizer_range(), contextlib.nullcontext)


def test_bench_files_muons_newton_schulz_products_under_the_optimizer(tmp_path, capsys):
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
            "--repeat", "1", "--batch-size", "2", "--block-size", "16", "--vocab-size", "256",
            "--json", "--profile", str(tmp_path / "prof"), "model.n_layer=1", "model.n_embd=64",
            "model.n_head=2", "train.compile=false", "train.optimizer=muon"]  # fmt: skip
    assert main(argv) == 0
    prof = json.loads(capsys.readouterr().out)["profile"]
    top = {(t["name"], t["kind"]) for t in prof["top"]}
    assert ("aten::baddbmm", "optimizer") in top  # Newton-Schulz, not "matmul"
    assert not {name for name, kind in top if kind in ("matmul", "copy")} & {
        "aten::baddbmm",
        "aten::bmm",
    }
    assert (
        prof["kinds"]["optimizer"]["ms_per_step"] > 0 and prof["kinds"]["matmul"]["ms_per_step"] > 0
    )
    trace = json.loads((tmp_path / "prof" / "trace.json").read_text())
    assert any(e.get("name") == OPTIMIZER_RANGE for e in trace["traceEvents"])
