"""The HDF5 feature store: the contract between extraction and the heads."""

from aqa_pipeline.features.store import (
    FeatureSet,
    VideoRecord,
    check_key,
    read_features,
    read_provenance,
    write_features,
)

__all__ = [
    "FeatureSet",
    "VideoRecord",
    "check_key",
    "read_features",
    "read_provenance",
    "write_features",
]
