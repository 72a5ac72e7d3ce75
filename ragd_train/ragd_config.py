"""Edit ragd's own ~/.ragd/config.yaml, keeping every key and comment it does not touch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.jsonl_io import atomic_open

# Settings that belong to this project's own config; ragd rewrites its file and would drop them.
TRAINING_KEYS = ("training",)


def _parse_value(raw: str) -> Any:
    """YAML scalars: ints, floats, booleans, null, else the string."""
    from ruamel.yaml import YAML

    try:
        value = YAML(typ="safe").load(raw)
    except Exception:  # noqa: BLE001 - anything unparsable stays a string
        return raw
    return raw if isinstance(value, (dict, list)) or value is None and raw not in ("null", "~") else value


def set_value(config_path: Path, key: str, raw_value: str) -> list[str]:
    """Set dotted ``key`` to ``raw_value``; return notes for the user (e.g. reindex warnings)."""
    from ruamel.yaml import YAML

    parts = key.split(".")
    if not all(parts):
        raise RagdTrainError(f"'{key}' is not a dotted key such as embedding.model")
    if parts[0] in TRAINING_KEYS:
        raise RagdTrainError(
            f"'{key}' is a training setting: it lives in ragd-train's config "
            "(config/config.yaml or --configfile), "
            "not in ragd's config.yaml, which ragd rewrites"
        )
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    data = yaml.load(config_path.read_text(encoding="utf-8")) if config_path.exists() else None
    if data is None:
        from ruamel.yaml.comments import CommentedMap

        data = CommentedMap()
    updates: dict[str, Any] = {key: _parse_value(raw_value)}
    notes: list[str] = []
    if key == "embedding.model":
        meta = Path(str(raw_value)).expanduser() / "training_metadata.json"
        if meta.exists():
            dim = json.loads(meta.read_text())["output_dimension"]
            updates["embedding.dimension"] = dim
            notes.append(f"embedding.dimension set to {dim} from the model")
        notes.append("the embedding model changed: run `ragd reindex --all` before searching")
    elif key == "embedding.dimension":
        notes.append("the embedding dimension changed: run `ragd reindex --all` before searching")
    for dotted, value in updates.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if part not in node or not hasattr(node[part], "keys"):
                from ruamel.yaml.comments import CommentedMap

                node[part] = CommentedMap()
            node = node[part]
        node[leaf] = value
    config_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(config_path) as handle:
        yaml.dump(data, handle)
    return notes
