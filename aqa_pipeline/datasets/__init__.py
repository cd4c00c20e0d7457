"""Label adapters: annotations of each dataset -> a `LabelSet` keyed by the store's video ids.

Labels spec (the `--labels` option and the `labels:` key of a train config):

    NAME:PATH[?key=value&key=value...]

NAME picks the adapter, PATH is its file or folder, options follow like a URL query. A PATH
ending in .csv without a NAME means `csv:`. Each adapter declares its options as one typed
model (an `AdapterOptions` subclass, `adapter(NAME).Options`), validated before the files
are read: an unknown key, or a value of the wrong type, exits 1 naming the key
(`unknown key fisv?targt (did you mean target?)`). Values are converted by the field's
type: numbers ("0", "0.25"), bools (true/false, 1/0, yes/no), choices in any case
(`target=pcs`), lists as comma-separated items. Adapters and their options:

    mtl_aqa:DIR     final_annotations_dict_with_dive_number.pkl (or final_annotations_dict.pkl)
                    + train_split_0.pkl / test_split_0.pkl. Score = final score; difficulty,
                    the 7 judge scores (as `judges`) and the dive number (exemplar class)
                    when present. Options: split=0, id_format={event:02d}_{clip:02d},
                    annotations=FILE (default: the first annotation file present),
                    missing=error|drop (split entries without an annotation).
    aqa7:DIR        AQA-7 per sport class. DIR holds Split_4/split_4_{train,test}_list.mat
                    (the AQA-7 release) or, for the diving class, UNLV-Dive's
                    final_annotations_dict.pkl + {train,test}_split_0.pkl.
                    Options: class=diving|gym_vault|ski_big_air|snowboard_big_air|
                    sync_diving_3m|sync_diving_10m|trampoline|all (all: one fold per class,
                    averaged with Fisher-z), id_format ({class}-out/{idx:03d} for the .mat
                    release, {event:02d}_{clip:02d} for UNLV-Dive), missing=error|drop
                    (UNLV-Dive's split lists one unannotated dive: use missing=drop).
    jigsaws:DIR     label.pkl (6 GRS items per trial, as `subscores`; score = their sum) and
                    splits.pkl (MUSDL's 4 folds per task). Options: task=Suturing|
                    Needle_Passing|Knot_Tying|all, fold=0..3|all (default: all four folds),
                    id_format={trial}_capture1 (MUSDL's frame folders; fields {trial},
                    {task}).
    fisv:DIR        Fis-V train.txt / test.txt ("id TES PCS deductions"). Option target=TES|PCS.
    rg:DIR          Rhythmic Gymnastics train.txt / test.txt. Options: apparatus=Ball|Clubs|
                    Hoop|Ribbon|all (all: one fold per apparatus), target=total|difficulty|
                    execution.
    logo:DIR        LOGO anno_dict.pkl + train_/test_<split>.pkl. Option split=split3.
    csv:FILE        columns video_id,score[,split][,difficulty][,judge_1..judge_n][,sub_*]
                    [,class]. split is train|test, or an integer fold number for k-fold
                    cross-validation (fold i tests on the rows marked i and trains on the
                    rest). Without a split column: test_fraction=0.2[&split_seed=0] draws a
                    seeded random split.

Examples: `mtl_aqa:/data/MTL-AQA/info`, `jigsaws:/data/jigsaws?task=Suturing&fold=0`,
`csv:labels.csv`, `labels.csv?test_fraction=0.25`.
"""

from __future__ import annotations

from aqa_pipeline.datasets.base import AdapterOptions, Fold, LabelSet, load_pickle
from aqa_pipeline.datasets.registry import (
    adapter,
    list_adapters,
    load_labels,
    parse_options,
    parse_spec,
    register_adapter,
)
from aqa_pipeline.plugins import import_all

# every module here is imported, which runs their @register_adapter
import_all(__name__, __path__)

__all__ = [
    "adapter",
    "AdapterOptions",
    "Fold",
    "LabelSet",
    "list_adapters",
    "load_labels",
    "load_pickle",
    "parse_options",
    "parse_spec",
    "register_adapter",
]
