"""The Gradio page of a trained SLIP model: text -> image and image -> text search over a catalogue, each hit's
co-purchase neighbours (click one to move through the graph), and a second model side by side with the rank
each gives to the true item. `slip-hf serve` starts it; `hub/space/app.py` is the same page as a Space."""

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..paths import require_folder
from ..search.query import RANK_DEPTH, CatalogueSearch
from ..viewed_image import ImageRefused, viewed_rgb
from .catalog import Catalog
from .index import ModelIndex, load_index

RESULTS = 12


def _warning(message: str) -> str:
    return f"**⚠ {message}**"


def usage_markdown(model: str, clip_export: str | None = None) -> str:
    """How to use the page's model in code, one line per tool: the plain-CLIP export (`slip-hf export`) in
    transformers' pipeline and sentence-transformers, and the SLIP model itself through remote code."""
    lines = []
    if clip_export:
        lines += [
            "from transformers import pipeline",
            f'classify = pipeline("zero-shot-image-classification", model="{clip_export}")',
            "from sentence_transformers import SentenceTransformer",
            f'embed = SentenceTransformer("{clip_export}")          # embed.encode([image]), embed.encode(["usb-c charger"])',
        ]
    lines += ["from transformers import AutoModel",
              f'slip = AutoModel.from_pretrained("{model}", trust_remote_code=True)   # + node embeddings Z (torch_geometric)']
    return "```python\n" + "\n".join(lines) + "\n```"


class SpacePage:
    """The page's state and handlers: a catalogue and one or two model indexes, how to use the first model in
    code (`usage`, markdown), and the folder of the catalogue's image files (`image_dir`,
    `Catalog.write_image_files`), which the page serves as they are."""

    def __init__(self, catalog: Catalog, indexes: Sequence[ModelIndex | CatalogueSearch], usage: str = "", image_dir: str | os.PathLike | None = None):
        if not indexes:
            raise ValueError("a Space needs at least one model.")
        self.catalog, self.indexes, self.usage, self.image_dir = catalog, list(indexes), usage, image_dir

    # -- rendering ------------------------------------------------------------------------------------------
    def _gallery(self, rows: Sequence[int]) -> list[tuple[str, str]]:
        """`(image file, title)` per row: files written once when the page loaded, so a search encodes no image."""
        return [(self.catalog.image_file(row), self.catalog.titles[row]) for row in rows]

    def item_panel(self, row: int) -> tuple:
        """`(image, markdown, neighbour gallery, neighbour rows)` of one item."""
        neighbours = self.catalog.neighbours(row)
        info = f"### {self.catalog.titles[row]}\n\n{self.catalog.category(row)}\n\n"
        if neighbours:
            info += "**Bought together** (click one to go there):\n\n" + "\n".join(
                f"* {self.catalog.titles[n.row]}: {n.describe()}" for n in neighbours
            )
        else:
            info += "No co-purchase neighbour in this catalogue."
        gallery = [(self.catalog.image_file(n.row), f"{self.catalog.titles[n.row]} ({n.describe()})") for n in neighbours]
        return self.catalog.image_file(row), info, gallery, [n.row for n in neighbours]

    # -- handlers (each returns: status, then its outputs) -------------------------------------------------
    def search_text(self, query: str) -> tuple:
        query = (query or "").strip()
        if not query:
            return (_warning("Type a query first, e.g. “usb-c charger”."), *[[] for _ in self.indexes], *[[] for _ in self.indexes])
        galleries, rows = [], []
        for index in self.indexes:
            found, _ = index.search(index.encode_text(query), "image", RESULTS)
            galleries.append(self._gallery(found))
            rows.append(found)
        return (f"Images for “{query}”. Click one to see what is bought with it.", *galleries, *rows)

    def search_image(self, path: str | None) -> tuple:
        empty = (*[[] for _ in self.indexes], *[[] for _ in self.indexes])
        if not path:
            return (_warning("Upload an image first."), *empty)
        try:
            image = viewed_rgb(path)  # upright, transparency on white, as the visitor sees the file
        except ImageRefused as error:
            return (_warning(f"This file is not an image that can be read ({error.status.replace('_', ' ')})."), *empty)
        galleries, rows = [], []
        for index in self.indexes:
            found, _ = index.search(index.encode_image(image), "text", RESULTS)
            galleries.append(self._gallery(found))
            rows.append(found)
        return ("Items whose titles match the uploaded image.", *galleries, *rows)

    def search_from_item(self, row: int | None, by: str) -> tuple:
        """Query with the current item's title (against images) or image (against titles); each model's rank
        of the item itself is the score of that query."""
        if row is None:
            empty = [[] for _ in range(2 * len(self.indexes))]
            return (_warning("Pick an item first (click a search result)."), *empty, *["" for _ in self.indexes])
        galleries, rows, ranks = [], [], []
        for index in self.indexes:
            query = index.encode_text(self.catalog.titles[row]) if by == "title" else index.vector("image", row)
            against = "image" if by == "title" else "text"
            found, _ = index.search(query, against, RESULTS)
            galleries.append(self._gallery(found))
            rows.append(found)
            rank = index.rank_of(query, against, row)
            ranks.append(f"{index.name}: the item itself is ranked **{rank}** of {len(self.catalog):,}" if rank is not None else
                         f"{index.name}: the item itself is not among the first {RANK_DEPTH:,} of {len(self.catalog):,} (approximate index)")
        what = "title" if by == "title" else "image"
        return (f"Searched with the {what} of “{self.catalog.titles[row]}”.", *galleries, *rows, *ranks)


def _guarded(handler: Callable, outputs: int) -> Callable:
    """Run a handler; an unexpected error becomes a message in the page (never a stack trace)."""

    @functools.wraps(handler)
    def run(*args):
        try:
            return handler(*args)
        except Exception as error:  # noqa: BLE001 - the page must stay usable whatever happens
            import gradio as gr

            return (_warning(f"Something went wrong: {error}"), *[gr.update() for _ in range(outputs - 1)])

    return run


def build_space(
    page: SpacePage, title: str = "SLIP: products that know what goes with them", concurrency: int = 8,
    threads_per_search: int | None = None,
):
    """The Gradio Blocks of a [`SpacePage`], queued with `concurrency` handlers at once.

    Searches are cheap and read-only (a query encoding, guarded per model, and a matrix product), so several
    visitors are served at once; result images are the catalogue's files, served from `page.image_dir` as they
    are (`gr.set_static_paths`), never re-encoded nor copied per request.

    Args:
        page: the catalogue and model indexes ([`load_space`]).
        title: the page's heading and browser title.
        concurrency: searches served at once (Gradio's `default_concurrency_limit`).
        threads_per_search: torch's intra-op threads for this process (`torch.set_num_threads`), or `None` to
            leave them. Searches run side by side, so each gets one thread: `slip-hf serve` and the Space pass 1
            (on 2 cores, 16 visitors, median of runs: 15.8 page searches/s against 14.7 with torch's default of a
            thread per core, and 25.7 API searches/s against 24.3: a small gain, within the runs' spread).
    """
    import gradio as gr

    if threads_per_search is not None:
        import torch

        torch.set_num_threads(threads_per_search)
    if page.image_dir is not None:
        gr.set_static_paths([str(page.image_dir)])
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\n\nSearch {len(page.catalog):,} products by text or by image with "
                    + " and ".join(f"**{index.name}**" for index in page.indexes) + ".")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            query = gr.Textbox(label="Search by text", placeholder="usb-c charger", elem_id="query", scale=4)
            search = gr.Button("Search", variant="primary", elem_id="search", scale=1)
        with gr.Row():
            # image_mode=None: the uploaded file as it is (Gradio's default, "RGB", would drop its transparency with
            # convert("RGB") and re-save it to a cache path that concurrent identical uploads write at once)
            upload = gr.Image(type="filepath", image_mode=None, label="…or by image", elem_id="upload", height=160)
            search_by_image = gr.Button("Search with this image", elem_id="search-image")
        result_rows = [gr.State([]) for _ in page.indexes]
        with gr.Row():
            galleries, ranks = [], []
            for number, index in enumerate(page.indexes):
                with gr.Column():
                    galleries.append(gr.Gallery(label=index.name, columns=4, height=360, allow_preview=False, elem_id=f"results-{number}"))
                    ranks.append(gr.Markdown(elem_id=f"rank-{number}"))
        current = gr.State(None)
        neighbour_rows = gr.State([])
        with gr.Row():
            item_image = gr.Image(label="Item", interactive=False, height=220, elem_id="item-image")
            with gr.Column(scale=2):
                item_info = gr.Markdown("Click a result to see its co-purchase neighbours.", elem_id="item-info")
                with gr.Row():
                    by_title = gr.Button("Find it by its title", elem_id="by-title")
                    by_image = gr.Button("Find it by its image", elem_id="by-image")
        neighbours = gr.Gallery(label="Bought together (click to move through the graph)", columns=6, height=240,
                                allow_preview=False, elem_id="neighbours")
        if page.usage:
            with gr.Accordion("Use this model in your code", open=False):
                gr.Markdown(page.usage, elem_id="usage")

        item_outputs = [current, item_image, item_info, neighbours, neighbour_rows]

        def show(row):
            return (row, *page.item_panel(row))

        def pick(rows, event: gr.SelectData):
            return show(rows[event.index])

        search_outputs = [status, *galleries, *result_rows]
        search.click(_guarded(page.search_text, len(search_outputs)), query, search_outputs, api_name="search_text")
        query.submit(_guarded(page.search_text, len(search_outputs)), query, search_outputs, api_name="submit_text")
        search_by_image.click(_guarded(page.search_image, len(search_outputs)), upload, search_outputs, api_name="search_image")
        for gallery, rows in zip(galleries, result_rows):
            gallery.select(pick, rows, item_outputs)
        neighbours.select(pick, neighbour_rows, item_outputs)
        item_search_outputs = [*search_outputs, *ranks]
        by_title.click(_guarded(lambda row: page.search_from_item(row, "title"), len(item_search_outputs)), current, item_search_outputs)
        by_image.click(_guarded(lambda row: page.search_from_item(row, "image"), len(item_search_outputs)), current, item_search_outputs)
    return demo.queue(default_concurrency_limit=concurrency)


def load_space(
    models: Sequence[str] = (), dataset: str | None = None, config: str = "electronics", split: str = "test",
    cache_dir: str | os.PathLike = ".slip_space_cache", max_text_length: int | None = None, clip_export: str | None = None,
    embeddings: Sequence[str] = (),
) -> SpacePage:
    """Check the inputs, load the catalogue and every model's index: a saved one (`embeddings`, written by
    `slip-hf embed`: nothing is embedded at start), or one embedded once per (model, catalogue) and then read from
    the cache.

    Args:
        models (`Sequence[str]`): one SLIP or CLIP checkpoint (folder or Hub id), or two to compare side by side; with
            `embeddings`, the query model of each folder (default: the one it records).
        dataset (`str`, *optional*): the co-purchase graph dataset (folder or Hub id) to search; with `embeddings`,
            default the one the first folder records.
        config (`str`, *optional*, defaults to `"electronics"`): the dataset config (with `embeddings`: the recorded one).
        split (`str`, *optional*, defaults to `"test"`): the split searched, or `"all"` (with `embeddings`: the
            recorded one).
        cache_dir (`str | os.PathLike`, *optional*, defaults to `".slip_space_cache"`): where each model's embeddings
            (safetensors, keyed by the weights and the catalogue) and the catalogue's image files are kept; a later
            start reads them instead of embedding or writing again.
        max_text_length (`int`, *optional*): tokens per title; default: the tokenizer's.
        clip_export (`str`, *optional*): the first model's plain-CLIP export (a Hub id), shown in the page's usage
            lines.
        embeddings (`Sequence[str]`, *optional*): one or two embeddings folders with saved indexes. Each is checked
            against its query model and the dataset by their fingerprints, and against the catalogue's rows.

    Returns:
        [`SpacePage`]: the page's state and handlers, for [`build_space`].

    Example:

    ```python
    from slip_hf.space import build_space, load_space

    page = load_space(["runs/slip-electronics", "runs/clip"], "amazon-copurchase-mm")
    page = load_space(embeddings=["slip-embeddings"])          # a saved index: no embedding at start
    build_space(page, threads_per_search=1).launch()
    ```
    """
    if embeddings:
        if models and len(models) != len(embeddings):
            raise ValueError("with --index, --model names the query model of each index folder: as many as the folders, or none.")
        for folder in embeddings:
            require_folder(folder, "embeddings")
        searches = [CatalogueSearch(folder, models[number] if models else None) for number, folder in enumerate(embeddings)]
        first = searches[0].record
        dataset, config, split = dataset or first.dataset, first.dataset_config, first.split
        require_folder(dataset, "dataset")
        catalog = Catalog.from_dataset(dataset, config, split)
        node_ids = catalog.items["node_id"]
        for search in searches:
            search.check_dataset(dataset, config, node_ids)
        indexes, models = searches, [search.record.model for search in searches]
    else:
        if not models:
            raise ValueError("name a model (--model) or a saved index (--index).")
        if dataset is None:
            raise ValueError("name the dataset to search (--dataset).")
        for model in models:
            require_folder(model, "model")
        require_folder(dataset, "dataset")
        catalog = Catalog.from_dataset(dataset, config, split)
        indexes = [load_index(model, catalog, cache_dir, max_text_length=max_text_length) for model in models]
    names = [Path(model).name for model in models]
    if len(set(names)) < len(names):
        names = [f"{name} ({number + 1})" for number, name in enumerate(names)]
    for index, name in zip(indexes, names):
        index.name = name
    image_dir = catalog.write_image_files(cache_dir)
    return SpacePage(catalog, indexes, usage_markdown(models[0], clip_export), image_dir)


__all__ = ["SpacePage", "build_space", "load_space", "usage_markdown"]
