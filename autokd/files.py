"""Reading user files and writing outputs: strict YAML, one-line validation messages, atomic writes.

Every file autokd writes goes through :func:`atomic_write` (a per-process temporary name in the same
folder, then ``os.replace``): a reader, or a crash at any moment, sees the old file or the new one,
never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

from .errors import ConfigError

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["load_yaml", "parse_yaml", "yaml_where", "format_validation_error", "invalid", "atomic_write",
           "atomic_write_text", "temp_path", "atomic_dir", "remove_stale_temps"]

#: The pydantic error type that :func:`invalid` raises and :func:`format_validation_error` locates.
INVALID = "autokd_invalid"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML's default is a silent last-wins)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # SafeLoader raises its own error below
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1})", mark)
        seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(problem)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> Python data (duplicate keys refused); a one-line ConfigError naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: malformed YAML ({yaml_where(e)})") from None


def load_yaml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping; one-line errors for a missing, unreadable, binary or
    malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text YAML file (it contains NUL bytes)")
    data = parse_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def invalid(message: str, *at: str | int) -> NoReturn:
    """Refuse a value from inside a pydantic validator, ``at`` naming the place *below* the validated
    field (``invalid("loss 'kd' has no hyper-parameter 'temp'", "params", "temp")`` from a term's
    validator reads ``terms.0.params.temp: ...``); :func:`format_validation_error` appends ``at`` to
    pydantic's location."""
    from pydantic_core import PydanticCustomError

    raise PydanticCustomError(INVALID, "{message}", {"message": message, "at": tuple(at)})


def format_validation_error(e: ValidationError) -> str:
    """One line naming the first failing field and why."""
    err = e.errors()[0]
    parts = tuple(err["loc"])
    if err["type"] == INVALID:
        parts += tuple(err["ctx"]["at"])
    loc = ".".join(str(p) for p in parts) or "(root)"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    extra = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{loc}: {msg}{extra}"


def temp_path(path: Path) -> Path:
    """A temporary name next to ``path`` that no other process or thread uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Remove the temporaries of ``path`` left by processes that died mid-write (``kill -9``)."""
    prefix = f".{path.name}."
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for e in entries:
        parts = e.name[len(prefix):].split(".") if e.name.startswith(prefix) else []
        if len(parts) == 3 and parts[2] == "tmp" and parts[0].isdigit() and not _alive(int(parts[0])):
            if e.is_dir():
                shutil.rmtree(e, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    e.unlink()


@contextlib.contextmanager
def atomic_write(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """``with atomic_write(p) as tmp: write tmp`` — ``tmp`` replaces ``p`` only if the block ends without an
    exception; otherwise ``p`` is untouched and ``tmp`` removed. ``durable`` fsyncs ``tmp`` before the swap, so
    even a power cut leaves the old or the new content; ``durable=False`` (files derived from a record kept
    elsewhere, e.g. a trial's ``metrics.json`` beside the study storage) skips that ~3 ms and still never
    shows a reader a half-written file while the machine stays up."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> Path:
    with atomic_write(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """``with atomic_dir(d) as tmp: fill tmp`` — the folder ``tmp`` replaces ``d`` as a whole when the block
    ends without an exception (a reader never sees new files beside old ones); otherwise ``d`` is untouched.
    The swap is two renames; if a crash falls between them, the next call restores the previous folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(f".{path.name}.previous")
    if old.exists() and not path.exists():  # a crash between the two renames of an earlier swap
        os.replace(old, path)
    remove_stale_temps(path)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
