"""Strict JSONL reading and atomic writing."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import jsonlines

from ragd_train.errors import InputError


def created_mode(directory: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` would give under the current umask (temp files get 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


_KINDS = (
    (stat.S_ISLNK, "a symlink"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_output_path(path: str | Path) -> None:
    """Outputs are written only to a regular file or a new path: anything else (a symlink, a
    named pipe, a device, a folder) is refused with one line naming it, before any work."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        for parent in path.parents:
            if os.path.lexists(parent):
                if not parent.is_dir():
                    raise InputError(f"cannot be written: {parent} is not a folder", path=path) from None
                break
        return
    except OSError as exc:
        raise InputError(f"cannot be written ({exc.strerror})", path=path) from None
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise InputError(f"is {kind}; outputs are written only to a regular file or a new path", path=path)


def _write_error(path: Path, exc: OSError) -> InputError:
    return InputError(f"cannot be written ({exc.strerror or exc})", path=path)


def _link_new(tmp: str, path: Path) -> None:
    """Put ``tmp`` at ``path`` only if nothing is there (a hard link is atomic; where the file
    system has none, check and rename)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, replace: bool = True) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; rename it over ``path`` only on success.

    ``path`` must be a regular file or a new path (``check_output_path``); with
    ``replace=False`` it must stay new. A failure of the write itself (a full disk, a read-only
    folder) is one line naming ``path``, and leaves ``path`` as it was.
    """
    path = Path(path)
    check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            try:
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                raise _write_error(path, exc) from None
        check_output_path(path)  # it may have become a link meanwhile
        try:
            os.chmod(tmp, created_mode())
            if replace:
                os.replace(tmp, path)
            else:
                _link_new(tmp, path)
        except FileExistsError:
            raise InputError("already exists", path=path) from None
        except OSError as exc:
            raise _write_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_strings(obj: dict[str, Any], strings: tuple[str, ...], path: Path, **where: Any) -> None:
    for field in strings:
        value = obj.get(field)
        if value is not None and not isinstance(value, str):
            raise InputError(
                f"expected a string, got {type(value).__name__}", path=path, field=field, **where
            )


def read_jsonl(
    path: str | Path, required: Iterable[str] = (), strings: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Read a JSONL file; every line must be a JSON object holding ``required`` fields, and the
    ``strings`` fields, where present, must be strings."""
    path = Path(path)
    required, strings = tuple(required), tuple(strings)
    records: list[dict[str, Any]] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    for lineno, obj in _numbered(raw.split(b"\n"), path):
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object", path=path, line=lineno)
        for field in required:
            if field not in obj or obj[field] is None:
                raise InputError("missing required field", path=path, line=lineno, field=field)
        _check_strings(obj, strings, path, line=lineno)
        records.append(obj)
    return records


def _numbered(lines: list[bytes], path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line, parsed by ``jsonlines``; a line that is not
    UTF-8 or not JSON is one error naming the file and line."""
    current = 0

    def counted() -> Iterator[bytes]:
        nonlocal current
        for current, line in enumerate(lines, start=1):  # noqa: B007 - read by the loop below
            yield line

    with jsonlines.Reader(counted(), loads=json.loads) as reader:
        while True:
            try:
                value = reader.read(skip_empty=True, allow_none=True)
            except EOFError:
                return
            except jsonlines.InvalidLineError as exc:
                cause = exc.__cause__
                if isinstance(cause, UnicodeDecodeError):
                    reason = f"not valid UTF-8 ({cause.reason} at byte {cause.start})"
                elif isinstance(cause, json.JSONDecodeError):
                    reason = f"malformed JSON ({cause.msg}, column {cause.colno})"
                else:
                    reason = f"malformed JSON ({exc})"
                raise InputError(reason, path=path, line=exc.lineno) from None
            yield current, value


def record_lines(path: str | Path) -> Sequence[int]:
    """The line (JSONL: skipping blank lines) or item number (a ``.json`` array, or no file) of
    each record, in the order ``read_records`` returns them, for errors found after reading."""
    path = Path(path)
    try:
        if path.suffix != ".json":
            return [n for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1) if raw.strip()]
    except OSError:
        pass  # records handed over in memory: number them
    return range(1, 1 << 62)  # lazy: zip stops at the last record


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; a one-line :class:`InputError` naming the file otherwise."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError("not a JSON object", path=path)
    return data


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path``; a one-line :class:`InputError` naming the file otherwise."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", path=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", path=path, line=exc.lineno) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror})", path=path) from None


def read_records(
    path: str | Path, required: Iterable[str] = (), strings: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Read JSONL, or a JSON array when the file ends in ``.json``."""
    path = Path(path)
    if path.suffix != ".json":
        return read_jsonl(path, required, strings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 ({exc.reason})", path=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON ({exc.msg})", path=path, line=exc.lineno) from None
    if not isinstance(data, list):
        raise InputError("expected a JSON array of objects", path=path)
    for index, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise InputError(f"item {index} is not a JSON object", path=path)
        for field in required:
            if field not in obj or obj[field] is None:
                raise InputError(f"item {index}: missing required field", path=path, field=field)
        for field in strings:
            value = obj.get(field)
            if value is not None and not isinstance(value, str):
                raise InputError(
                    f"item {index}: expected a string, got {type(value).__name__}", path=path, field=field
                )
    return data


def dumps(record: dict[str, Any]) -> str:
    """Serialise one record deterministically (stable key order as given, UTF-8 kept)."""
    return json.dumps(record, ensure_ascii=False)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records atomically as JSONL (or a JSON array for ``.json``); return the count."""
    path = Path(path)
    records = list(records)
    with atomic_open(path) as handle:
        if path.suffix == ".json":
            json.dump(records, handle, ensure_ascii=False, indent=1)
            handle.write("\n")
        else:
            jsonlines.Writer(handle, dumps=dumps).write_all(records)
    return len(records)


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically, pretty-printed."""
    with atomic_open(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2, sort_keys=False)
        handle.write("\n")
