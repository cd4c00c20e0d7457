"""Joining caches (`aqa features merge`), typically the shards of one extraction."""

from __future__ import annotations

from pathlib import Path

from aqa_pipeline.config import config_hash
from aqa_pipeline.errors import AqaError
from aqa_pipeline.features.ids import ids_digest
from aqa_pipeline.features.store import FeatureSet, check_key, read_features, write_features


def _check_shards(sets: list[tuple[Path, FeatureSet]]) -> None:
    """All shards of one job present once, each holding every video of its part."""
    shards = [(p, fs.provenance.get("shard")) for p, fs in sets]
    if not any(s for _, s in shards):
        return
    if not all(s for _, s in shards):
        plain = [str(p) for p, s in shards if not s]
        raise AqaError(f"cannot merge shards with non-shard caches: {plain}")
    first_path, first = shards[0]
    for path, s in shards[1:]:
        for field in ("n", "all_ids_sha256"):
            if s[field] != first[field]:
                raise AqaError(
                    f"{path} and {first_path} are shards of different jobs ({field} differs)"
                )
    ks = [s["k"] for _, s in shards]
    dup = sorted({k for k in ks if ks.count(k) > 1})
    if dup:
        raise AqaError(f"shard(s) {dup} given more than once")
    missing = sorted(set(range(first["n"])) - set(ks))
    if missing:
        raise AqaError(
            f"incomplete: shard(s) {missing} of {first['n']} missing (have {sorted(ks)})"
        )
    for (path, fs), (_, s) in zip(sets, shards, strict=True):
        absent = sorted(set(s["ids"]) - set(fs.video_ids))
        if absent:
            raise AqaError(
                f"{path}: incomplete shard {s['k']}/{s['n']}: {len(absent)} videos not "
                f"extracted (e.g. {absent[:3]}); rerun that shard to finish it"
            )
    all_ids = [v for _, fs in sets for v in fs.video_ids]
    if ids_digest(all_ids) != first["all_ids_sha256"]:
        raise AqaError("the shards together do not hold the job's input list")


def merge_caches(paths: list[Path], out: Path) -> FeatureSet:
    """Merge caches with equal keys into `out`; shards of one job must all be present."""
    if not paths:
        raise AqaError("merge: no input caches")
    sets = [(Path(p), read_features(p)) for p in paths]
    ref_path, ref = sets[0]
    for path, fs in sets[1:]:
        check_key(fs.key_fields, ref.key_fields, f"{path} vs {ref_path}")
    seen: dict[str, Path] = {}
    for path, fs in sets:
        for vid in fs.video_ids:
            if vid in seen:
                raise AqaError(f"video {vid!r} is in both {seen[vid]} and {path}")
            seen[vid] = path
    _check_shards(sets)
    records = [r for _, fs in sets for r in fs.records()]
    if ref.provenance.get("shard"):
        records.sort(key=lambda r: r.video_id)
    provenance = {
        **ref.key_fields,
        "cache_key": config_hash(ref.key_fields),
        "recipe_name": ref.provenance.get("recipe_name"),
        "weights_file": ref.provenance.get("weights_file"),
        "shard": None,
        "merged_from": [
            {
                "file": str(p),
                "shard": {k: v for k, v in (fs.provenance.get("shard") or {}).items() if k != "ids"}
                or None,
                "n_videos": fs.n_videos,
                "cache_key": fs.cache_key,
                "runs": fs.provenance.get("runs", []),
            }
            for p, fs in sets
        ],  # fmt: skip
    }
    merged = FeatureSet.from_records(
        records, ref.feature_dim, ref.clip_features.dtype, ref.key_fields, provenance
    )
    write_features(out, merged)
    return merged
