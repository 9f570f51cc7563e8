"""The device option: parsing, ``auto``, refusals of devices that are not there, what run.json records."""

from __future__ import annotations

import pytest
import torch

from secateurs.runtime import devices
from secateurs.runtime.devices import DeviceError, device_record, module_device, parse_device, resolve_device


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("auto", ("auto", None)),
        ("cpu", ("cpu", None)),
        ("CUDA", ("cuda", None)),
        ("cuda:3", ("cuda", 3)),
        ("mps", ("mps", None)),
    ],
)
def test_device_options_parse(spec: str, parsed: tuple[str, int | None]) -> None:
    assert parse_device(spec) == parsed


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "cpu:0", "mps:1", "", "tpu"])
def test_unknown_device_strings_list_what_is_accepted(spec: str) -> None:
    with pytest.raises(DeviceError) as error:
        parse_device(spec)
    assert "accepted: auto, cpu, cuda, cuda:N, mps" in str(error.value) and "\n" not in str(error.value)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    assert resolve_device("auto") == torch.device("cuda")


def test_an_unavailable_device_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    with pytest.raises(DeviceError, match=r"^cuda requested, but torch.cuda.is_available\(\) is False: ") as error:
        resolve_device("cuda:0")
    assert "accepted here: auto, cpu" in str(error.value)
    with pytest.raises(DeviceError, match=r"^mps requested, but torch.backends.mps.is_available\(\) is False"):
        resolve_device("mps")


def test_a_cuda_index_past_the_last_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"cuda:2 requested, but this machine has 2 CUDA device\(s\) \(cuda:0..1\)"):
        resolve_device("cuda:2")


def test_the_cpu_record_names_the_processor() -> None:
    record = device_record(torch.device("cpu"))
    assert record["type"] == "cpu" and record["index"] is None
    assert record["name"] == devices.cpu_model() and "cuda" not in record


def test_module_device_follows_parameters_then_buffers() -> None:
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")
    with_buffer = torch.nn.Module()
    with_buffer.register_buffer("b", torch.zeros(1, device="meta"))
    assert module_device(with_buffer) == torch.device("meta")
