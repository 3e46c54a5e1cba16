"""Former home of pair loading; kept so that ``from palrm.data.io import ...`` keeps working.

The code lives by concern: `palrm.data.tables` (read / write pair tables), `palrm.data.validation`
(columns and values) and `palrm.data.embeddings` (precomputed embedding tables). New code imports
from `palrm.data`.
"""

from palrm.data.embeddings import check_embedding_dim, load_embeddings, save_embeddings
from palrm.data.tables import FORMATS, load_pairs, save_pairs
from palrm.data.validation import ColumnMap

__all__ = ["FORMATS", "ColumnMap", "check_embedding_dim", "load_embeddings", "load_pairs", "save_embeddings",
           "save_pairs"]
