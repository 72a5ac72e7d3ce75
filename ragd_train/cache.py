"""Content-addressed caches: generated items (queries, verdicts, answers) and text embeddings.

Generated items are one small JSON file each, named by the sha256 of everything that decides
them and written atomically, so concurrent jobs and killed runs never corrupt the cache and a
rerun serves every finished item from disk. Each entry records the content hash of the chunk it
belongs to, so ``prune`` can drop what no live chunk refers to.

Embeddings are stored per model in shards (``.npz``: text hashes + vectors); a run appends one
shard with what it had to encode, and ``prune`` compacts the shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.jsonl_io import atomic_open

log = logging.getLogger("ragd_train")


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts``."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class GenerationCache:
    """A directory of ``<kind>/<key[:2]>/<key>.json`` entries: ``{"ref": content_hash, "value": ...}``."""

    def __init__(self, root: str | Path, kind: str) -> None:
        self.root = Path(root) / kind
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("cache entry %s is damaged (%s); computing it again", path, _reason(exc))
            self.misses += 1
            return None
        self.hits += 1
        return entry["value"] if isinstance(entry, dict) and "value" in entry else entry

    def put(self, key: str, value: Any, ref: str | None = None) -> None:
        with atomic_open(self._path(key)) as handle:
            json.dump({"ref": ref, "value": value}, handle, ensure_ascii=False)

    def fetch(
        self,
        key: str,
        produce: Callable[[], Any | None],
        *,
        valid: Callable[[Any], bool] = lambda value: value is not None,
        ref: str | None = None,
    ) -> Any | None:
        """The entry under ``key`` when ``valid`` accepts it, else ``produce()``, stored unless None.

        The one policy of a cached LLM call: a damaged entry (a string where a list of queries
        belongs, say) is asked for again and never used; an answer that could not be used is not
        stored, so the next run asks again.
        """
        cached = self.get(key)
        if cached is not None:
            if valid(cached):
                return cached
            log.warning("cache entry %s/%s is damaged; asking the LLM again", self.root.name, key)
        value = produce()
        if value is not None:
            self.put(key, value, ref=ref)
        return value

    def refs(self) -> set[str]:
        """The content hashes that the entries name."""
        found = set()
        for path in self.root.glob("*/*.json") if self.root.is_dir() else ():
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(entry, dict) and isinstance(entry.get("ref"), str):
                found.add(entry["ref"])
        return found


class CachedLLM:
    """An LLM, the generation cache its answers go to, and the sampling parameters that, with the
    model's digest, are part of every cache key: what each cached LLM user holds."""

    def __init__(self, llm: Any, cache: GenerationCache, *, temperature: float, seed: int) -> None:
        self.llm = llm
        self.cache = cache
        self.params = {"temperature": temperature, "seed": seed}
        self.digest = llm.model_digest()
        self.name = f"llm:{llm.model}"


def model_fingerprint(model_path: str | Path, **settings: Any) -> str:
    """Identify an embedding model by its weights file (path, size, mtime) and encoding settings."""
    path = Path(model_path)
    weights = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    stamp = [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]
    return cache_key(
        model=str(path.resolve()) if path.exists() else str(model_path), weights=stamp, **settings
    )[:24]


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _shard_checksum(hashes: np.ndarray, vectors: np.ndarray) -> str:
    digest = hashlib.sha256("\n".join(str(h) for h in hashes).encode("utf-8"))
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()


def read_shard(shard: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, vectors)`` of one shard, checked: a 1-D array of text hashes, a finite 2-D
    float32 array with one row per hash, and (shards written since it was recorded) the
    checksum of both. A damaged shard raises ``ValueError`` saying what is wrong."""
    import zipfile

    try:
        with np.load(shard, allow_pickle=False) as data:
            hashes, vectors = data["hashes"], data["vectors"]
            checksum = str(data["checksum"]) if "checksum" in data.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"unreadable ({_reason(exc)})") from None
    if hashes.ndim != 1 or hashes.dtype.kind not in "US":
        raise ValueError("its hashes are not a list of strings")
    if (
        vectors.dtype != np.float32
        or vectors.ndim != 2
        or vectors.shape[0] != len(hashes)
        or not vectors.shape[1]
    ):
        raise ValueError(
            f"vectors of shape {vectors.shape} and dtype {vectors.dtype} for {len(hashes)} texts"
        )
    if checksum is not None and checksum != _shard_checksum(hashes, vectors):
        raise ValueError("checksum mismatch")
    if not np.isfinite(vectors).all():
        raise ValueError("non-finite vectors")
    return hashes, vectors


class EmbeddingCache:
    """Unit vectors by text hash for one model fingerprint, in ``.npz`` shards.

    A damaged shard (unreadable, truncated, wrong dtype or shape, checksum mismatch) is reported
    in one line, removed and its vectors computed again; so are vectors whose dimension is not
    the model's (``dim``, as its config files say; else what it encodes now, else what most
    cached vectors have).
    """

    def __init__(self, root: str | Path, fingerprint: str, dim: int | None = None) -> None:
        self.dir = Path(root) / "embeddings" / fingerprint
        self._vectors: dict[str, np.ndarray] | None = None
        self._dim = dim
        self.hits = 0
        self.misses = 0

    def _load(self, repair: bool = False) -> dict[str, np.ndarray]:
        """The cached vectors; a damaged shard is skipped with one line (and, when ``repair``, as
        when encoding, removed: its vectors are recomputed into a new shard)."""
        if self._vectors is None:
            self._vectors = {}
            for shard in sorted(self.dir.glob("*.npz")):
                try:
                    hashes, vectors = read_shard(shard)
                except ValueError as exc:
                    done = "removed, recomputing" if repair else "skipped"
                    log.warning("embedding cache shard %s is damaged (%s); %s", shard, exc, done)
                    if repair:
                        shard.unlink(missing_ok=True)
                    continue
                for h, v in zip(hashes, vectors, strict=True):
                    self._vectors[str(h)] = v
        return self._vectors

    def encode(self, texts: list[str], encode_fn: Any) -> np.ndarray:
        """Vectors for ``texts``; only texts never seen with this model go through ``encode_fn``."""
        store = self._load(repair=True)
        hashes = [text_hash(t) for t in texts]
        if self._dim is None and store:
            from collections import Counter

            self._dim = Counter(v.shape[0] for v in store.values()).most_common(1)[0][0]
        fresh = self._fill(texts, hashes, encode_fn)
        if fresh is not None and fresh != self._dim:  # what the model encodes now is the truth
            self._dim = fresh
            self._fill(texts, hashes, encode_fn, count=False)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([store[h] for h in hashes])

    def _fill(self, texts: list[str], hashes: list[str], encode_fn: Any, count: bool = True) -> int | None:
        """Encode (and store in a new shard) every text not cached, or cached with a vector of
        the wrong dimension; return the dimension of what was encoded (None: nothing)."""
        store = self._load()
        wrong = {h for h in hashes if h in store and self._dim is not None and store[h].shape != (self._dim,)}
        if wrong:
            log.warning(
                "embedding cache %s: %d vectors are not of the model's dimension %s (a damaged "
                "shard); recomputing them",
                self.dir,
                len(wrong),
                self._dim,
            )
            for h in wrong:
                del store[h]
        todo = sorted({h: i for i, h in enumerate(hashes) if h not in store}.items(), key=lambda kv: kv[1])
        if count:
            self.misses += len(todo)
            self.hits += len(texts) - len(todo)
        else:
            self.misses += len(todo)
            self.hits -= len(todo)
        if not todo:
            return None
        new = np.asarray(encode_fn([texts[i] for _, i in todo]), dtype=np.float32)
        for (h, _), vec in zip(todo, new, strict=True):
            store[h] = vec
        self._write_shard([h for h, _ in todo], new)
        return int(new.shape[1]) if new.ndim == 2 else None

    def _write_shard(self, hashes: list[str], vectors: np.ndarray) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".shard-", suffix=".npz.tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as handle:
                names, vectors = np.asarray(hashes), np.asarray(vectors, dtype=np.float32)
                np.savez(handle, hashes=names, vectors=vectors, checksum=_shard_checksum(names, vectors))
                handle.flush()
                os.fsync(handle.fileno())
            final = self.dir / f"{cache_key(hashes=hashes)[:20]}.npz"
            from ragd_train.jsonl_io import created_mode

            os.chmod(tmp, created_mode())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final


def _readable(shard: Path) -> bool:
    try:
        read_shard(shard)
    except ValueError:
        return False
    return True


def cache_stats(root: str | Path) -> dict[str, Any]:
    """Entries and bytes per cache kind."""
    root = Path(root)
    stats: dict[str, Any] = {}
    gen = root / "generations"
    files = list(gen.rglob("*.json")) if gen.is_dir() else []
    stats["generations"] = {"entries": len(files), "bytes": sum(f.stat().st_size for f in files)}
    emb = root / "embeddings"
    models: dict[str, Any] = {}
    for model_dir in sorted(p for p in emb.iterdir() if p.is_dir()) if emb.is_dir() else []:
        shards = [s for s in model_dir.glob("*.npz") if _readable(s)]
        vectors = len(EmbeddingCache(root, model_dir.name)._load())
        models[model_dir.name] = {
            "shards": len(shards),
            "vectors": vectors,
            "bytes": sum(s.stat().st_size for s in shards),
        }
    stats["embeddings"] = models
    return stats


def live_hashes(snapshots: Iterable[str | Path]) -> set[str]:
    """Content hashes of every chunk in the given snapshot files."""
    from ragd_train.jsonl_io import read_jsonl

    live: set[str] = set()
    for snap in snapshots:  # a damaged snapshot is one line naming its file, line and field
        live.update(str(r["content_hash"]) for r in read_jsonl(snap, required=("content_hash",)))
    return live


def prune(root: str | Path, live: set[str], keep_texts: set[str] | None = None) -> dict[str, int]:
    """Drop generated entries whose chunk is gone and embeddings of texts no longer in use.

    ``keep_texts`` are extra text hashes to keep (e.g. queries of live training data).
    """
    root = Path(root)
    removed = {"generations": 0, "embeddings": 0}
    gen = root / "generations"
    for entry in gen.rglob("*.json") if gen.is_dir() else []:
        try:
            ref = json.loads(entry.read_text(encoding="utf-8")).get("ref")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            ref = None  # a damaged entry is dropped
        if ref not in live:
            entry.unlink(missing_ok=True)
            removed["generations"] += 1
    keep = live | (keep_texts or set())
    emb = root / "embeddings"
    for model_dir in [p for p in emb.iterdir() if p.is_dir()] if emb.is_dir() else []:
        cache = EmbeddingCache(root, model_dir.name)
        store = cache._load()
        kept = {h: v for h, v in store.items() if h in keep}
        removed["embeddings"] += len(store) - len(kept)
        old = list(model_dir.glob("*.npz"))
        compacted = cache._write_shard(list(kept), np.stack(list(kept.values()))) if kept else None
        for shard in old:
            if shard != compacted:
                shard.unlink(missing_ok=True)
    return removed
