"""A catalogue's embeddings and their search index: `slip-hf embed` (every item through a model, into parquet
shards with a card and the model's and dataset's fingerprints), `slip-hf index` (a FAISS index chosen for the
catalogue's size and a memory budget, tuned to a measured recall), `slip-hf search` and `slip-hf serve --index`
(queries, refused when the model or the dataset is not the one embedded)."""

from .embed import EmbedArguments, embed_catalogue
from .fingerprints import dataset_fingerprint, model_fingerprint
from .index import EXACT_BELOW, TARGET_RECALL, IndexChoice, choose_index, index_folder, read_index
from .query import CatalogueSearch, Hit
from .record import EmbeddingsRecord, read_record

__all__ = ["EXACT_BELOW", "TARGET_RECALL", "CatalogueSearch", "EmbedArguments", "EmbeddingsRecord", "Hit", "IndexChoice",
           "choose_index", "dataset_fingerprint", "embed_catalogue", "index_folder", "model_fingerprint", "read_index",
           "read_record"]
