"""Where a model runs: one device option everywhere (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

`resolve_device` turns the option into a `torch.device`, refusing one that is not there with one line
(``cuda requested, but torch.cuda.is_available() is False: ...``); ``auto`` picks CUDA, then MPS,
then the CPU. `device_record` is what run.json records about it (type, index, name — the GPU model
or the CPU's —, the CUDA and cuDNN versions when present). `synchronize` waits for queued kernels,
so host timers measure finished work.

The library never picks a device behind the caller's back: commands and `secateurs.api` resolve the
option once and move the model there; every tensor the library creates follows the model's device
(``device=`` of an existing tensor), except host-side bookkeeping that says so in a comment.
"""

from __future__ import annotations

import logging
import platform
import re
from pathlib import Path
from typing import Any

import torch

from secateurs.errors import UsageError

log = logging.getLogger(__name__)

ACCEPTED = "auto, cpu, cuda, cuda:N, mps"
_PATTERN = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


class DeviceError(UsageError):
    """A device option that is malformed or names a device this machine does not have."""


def parse_device(spec: str) -> tuple[str, int | None]:
    """``"cuda:1"`` → ``("cuda", 1)``; a malformed option is a `DeviceError` listing the accepted forms."""
    match = _PATTERN.match(spec.strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"unknown device {spec!r}; accepted: {ACCEPTED}")
    return match.group(1), int(match.group(2)) if match.group(2) is not None else None


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The `torch.device` for ``spec`` (None means ``auto``); logs which one ``auto`` chose.

    Raises `DeviceError` for a malformed option or a device that is not available here.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    kind, index = parse_device(spec or "auto")
    if kind == "auto":
        chosen = torch.device("cuda") if torch.cuda.is_available() else None
        if chosen is None:
            chosen = torch.device("mps") if mps_available() else torch.device("cpu")
        log.info("device auto: %s (%s)", chosen, device_name(chosen))
        return chosen
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "cuda requested, but torch.cuda.is_available() is False: this torch build "
                f"({torch.__version__}, CUDA {torch.version.cuda or 'none'}) sees no CUDA device; "
                f"accepted here: {', '.join(available_devices())}"
            )
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            raise DeviceError(
                f"cuda:{index} requested, but this machine has {count} CUDA device(s) (cuda:0..{count - 1})"
            )
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    if kind == "mps":
        if not mps_available():
            raise DeviceError(
                "mps requested, but torch.backends.mps.is_available() is False (Apple silicon with an MPS build "
                f"of torch only); accepted here: {', '.join(available_devices())}"
            )
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The device options that resolve on this machine (``auto`` and ``cpu`` always)."""
    options = ["auto", "cpu"]
    if torch.cuda.is_available():
        options += ["cuda"] + [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if mps_available():
        options.append("mps")
    return options


def device_name(device: torch.device) -> str:
    """The GPU model for CUDA, ``Apple MPS`` for MPS, the CPU's model name otherwise."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    if device.type == "mps":
        return "Apple MPS"
    return cpu_model()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else `platform.processor()`, else "unknown"."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_record(device: torch.device) -> dict[str, Any]:
    """What run.json records about ``device``: type, index, name, CUDA/cuDNN versions where present."""
    record: dict[str, Any] = {"type": device.type, "index": device.index, "name": device_name(device)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        record.update(
            index=index,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            capability=f"{properties.major}.{properties.minor}",
            memory_gib=round(properties.total_memory / 2**30, 1),
        )
    return record


def synchronize(device: torch.device) -> None:
    """Wait until every kernel queued on ``device`` has finished (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (the CPU for a module without tensors)."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")
