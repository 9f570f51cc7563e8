"""Atomic, pickle-free file primitives: JSON and safetensors written via temp file + rename."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from secateurs.errors import RunDirError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _finite(value: Any) -> Any:
    """Replace NaN/Inf by None so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps_json(payload: Any) -> str:
    return json.dumps(_finite(payload), indent=2, sort_keys=False, default=_json_default, allow_nan=False) + "\n"


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, dumps_json(payload).encode())


def read_json(path: Path, what: str = "JSON file") -> Any:
    """Parse ``path``; a missing or malformed file is a `RunDirError` naming it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunDirError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RunDirError(f"cannot read {what} {path}: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RunDirError(f"{what} {path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise RunDirError(f"{what} {path} is nested too deeply to be a {what}") from None


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` as safetensors, atomically (contiguous CPU copies; shared storage is fine)."""
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(plain, tmp, metadata=dict(metadata) if metadata else None)
        os.chmod(tmp, FILE_MODE)
        _fsync_file(tmp)  # the data reaches the disk before the rename publishes it (power loss)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_tensors(path: Path, what: str = "weights file") -> dict[str, torch.Tensor]:
    """Read a safetensors file; missing or malformed files are a `RunDirError` naming the file."""
    if not path.is_file():
        raise RunDirError(f"{what} {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise RunDirError(f"{what} {path} is not a valid safetensors file: {error}") from None


def tensor_shapes(path: Path, what: str = "weights file") -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file, read from its header only (no data)."""
    if not path.is_file():
        raise RunDirError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise RunDirError(f"{what} {path} is not a valid safetensors file: {error}") from None


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing), waiting for other holders.

    For caches that several processes of one suite fill: the second process waits while the first
    computes, then reads what it wrote instead of computing it again. Where ``fcntl`` does not exist
    (Windows) this holds nothing and the caller may compute twice, which is slower but correct.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh hidden sibling of ``target``; removed on error. The caller renames it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any:
    """The C library's ``renameat2``, looked up once (None where it has none)."""
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the C library, kernel or file system cannot (the caller falls back to two
    renames); other failures raise `OSError`.
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    result = renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def replace_dir(staging: Path, target: Path) -> None:
    """Move a finished ``staging`` directory to ``target``, replacing an old ``target``.

    Where the file system can swap two directories atomically, ``target`` always names a complete
    directory, the old one or the new one. Elsewhere the old one is renamed aside first; a kill between
    the two renames leaves ``.NAME.old-PID`` next to ``target``, which the next replacement removes.
    """
    if target.exists() and exchange_paths(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # it now holds the old target
        _fsync_dir(target.parent)
        return
    # Only the two-rename path leaves leftovers, so only it looks for them.
    prefix = f".{target.name}.old-"
    stale = [path for path in target.parent.iterdir() if path.name.startswith(prefix)]
    if target.exists():
        trash = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, trash)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    _fsync_dir(target.parent)
