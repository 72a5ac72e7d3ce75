"""Reading YAML config files (ragd-train's and ragd's) with one-line errors naming file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ragd_train.errors import InputError


def read_yaml_mapping(file: str | Path, empty_ok: bool = True) -> dict[str, Any]:
    """A YAML file holding a mapping (empty = {}, unless not ``empty_ok``); one-line errors
    naming the file and line."""
    try:
        data = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("config file not found", path=file) from None
    except IsADirectoryError:
        raise InputError("config file is a folder", path=file) from None
    except OSError as exc:
        raise InputError(f"config file cannot be read ({exc.strerror})", path=file) from None
    except UnicodeDecodeError:
        raise InputError("config file is not UTF-8 text", path=file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"invalid YAML: {getattr(exc, 'problem', exc)}",
            path=file,
            line=mark.line + 1 if mark else None,
        ) from None
    if data is None:
        if not empty_ok:
            raise InputError("config file is empty (it must hold a mapping of settings)", path=file)
        data = {}
    if not isinstance(data, dict):
        raise InputError("config must be a mapping", path=file)
    return data
