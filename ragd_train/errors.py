"""Errors that carry the file, line and field that caused them."""

from __future__ import annotations

from pathlib import Path


class RagdTrainError(Exception):
    """A user-facing error, printed as one line without a traceback."""


class InputError(RagdTrainError):
    """Bad input: names the file, line and field at fault."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")


def resolved(path: str | Path, field: str | None = None) -> Path:
    """``path`` made absolute with its links followed; a symlink loop (or a name too long for
    the file system) is a one-line :class:`InputError` naming it and ``field``."""
    path = Path(path).expanduser()
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        raise InputError("is a symlink loop", path=path, field=field) from None
    except OSError as exc:
        raise InputError(f"cannot be used ({exc.strerror})", path=path, field=field) from None
