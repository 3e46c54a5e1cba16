"""Preference data: the `PairData` schema, pair tables, validation, embedding tables, memmap pairs, splits.

This layer depends on nothing above it (no models, no training)."""

from palrm.data.embeddings import check_embedding_dim, load_embeddings, save_embeddings
from palrm.data.memmap import MemmapPairs, MemmapPairWriter, open_memmap_pairs
from palrm.data.paircomp import PaircompDataset, build_paircomp
from palrm.data.persona import (
    PERSONA_PROMPT,
    PersonaDataset,
    build_persona,
    persona_names,
)
from palrm.data.pickafilter import (
    PickAFilterDataset,
    build_pickafilter,
    load_pickapic_embeddings,
)
from palrm.data.schema import NO_PROMPT, SPLITS, PairData
from palrm.data.splits import (
    PairSplits,
    few_shot_split,
    split_pairs,
    split_users,
    take_shots,
)
from palrm.data.synthetic import SyntheticDataset, build_synthetic
from palrm.data.tables import FORMATS, load_pairs, save_pairs
from palrm.data.tldr import TLDRDataset, build_tldr
from palrm.data.validation import ColumnMap

__all__ = [
    "PERSONA_PROMPT",
    "PaircompDataset",
    "PersonaDataset",
    "PickAFilterDataset",
    "SyntheticDataset",
    "TLDRDataset",
    "build_paircomp",
    "build_persona",
    "build_pickafilter",
    "build_synthetic",
    "build_tldr",
    "load_pickapic_embeddings",
    "persona_names",
    "FORMATS",
    "NO_PROMPT",
    "SPLITS",
    "ColumnMap",
    "PairData",
    "PairSplits",
    "check_embedding_dim",
    "few_shot_split",
    "load_embeddings",
    "load_pairs",
    "MemmapPairWriter",
    "MemmapPairs",
    "open_memmap_pairs",
    "save_embeddings",
    "save_pairs",
    "split_pairs",
    "split_users",
    "take_shots",
]
