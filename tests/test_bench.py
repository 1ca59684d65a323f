"""The benchmark command: every configuration timed, JSON and a markdown table with ratios."""

from __future__ import annotations

import json

import torch

from dogbreeds.commands import bench


def test_bench_times_each_net_and_backend_and_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench"
    bench.main([
        "--device", "cpu", "--resolution", "16", "--batch", "4", "--amp", "off",
        "--backend", "reference", "gather", "--steps", "1", "--repeats", "1", "--out", str(out),
    ])  # fmt: skip
    payload = json.loads(out.with_suffix(".json").read_text())
    results = payload["results"]
    assert payload["meta"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert [(r["net"], r["backend"]) for r in results] == [
        ("cnn", "-"), ("dsc", "-"), ("deformable", "reference"), ("deformable", "gather"),
    ]  # fmt: skip
    assert all(r["train_img_s"] > 0 and r["eval_img_s"] > 0 for r in results)
    table = out.with_suffix(".md").read_text()
    cnn = results[0]["train_img_s"]
    ratio = f"{results[2]['train_img_s'] / cnn:.2f}x"
    assert "| cpu | 4 | off | channels_last | deformable | reference |" in table and ratio in table
    assert "| cpu | 4 | off | channels_last | cnn | - |" in table and "1.00x" in table
    assert table.strip() in capsys.readouterr().out


def test_bench_skips_backends_without_a_kernel_for_the_device(monkeypatch):
    """`fused` has no CUDA kernel and `triton` no CPU one: neither is timed where it can't run."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    configs = list(bench.configurations([torch.device("cpu"), torch.device("cuda")], [8], ["off"],
                                        ["fused", "triton", "gather"]))  # fmt: skip
    deformable = [(str(device), backend) for device, net, backend, *_ in configs
                  if net == "deformable"]  # fmt: skip
    assert deformable == [("cpu", "fused"), ("cpu", "gather"), ("cuda", "triton"),
                          ("cuda", "gather")]  # fmt: skip


def test_bench_times_each_memory_format_asked_for(tmp_path):
    out = tmp_path / "bench"
    bench.main([
        "--device", "cpu", "--resolution", "16", "--batch", "4", "--amp", "off", "--backend",
        "reference", "--memory-format", "channels_last", "contiguous", "--steps", "1",
        "--repeats", "1", "--out", str(out),
    ])  # fmt: skip
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    assert [(r["memory_format"], r["net"]) for r in results] == [
        (layout, net) for layout in ("channels_last", "contiguous")
        for net in ("cnn", "dsc", "deformable")
    ]  # fmt: skip
    assert "| cpu | 4 | off | contiguous | cnn | - |" in out.with_suffix(".md").read_text()
