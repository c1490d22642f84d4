"""A catalogue's embeddings and its index: `slip-hf embed` (vectors equal to the model's, Z equal to Z over the whole
graph, float16, a killed run resumed to the same files, two processes equal to one, another plan refused), the
index (exact below the threshold and equal to the exact search, approximate above it within its measured recall),
the fingerprint refusals, `slip-hf search`, and the Space on a saved index (nothing embedded at start, the exact
search's results)."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_parsers import parser_of
from datasets import load_dataset
from PIL import Image

from slip_hf.cli import main as cli_main
from slip_hf.data.hub import load_copurchase_graph
from slip_hf.embedding import encode_texts, load_dual_encoder
from slip_hf.evaluation.runner import EvaluationConfig, embed_split
from slip_hf.search import (
    CatalogueSearch,
    EmbedArguments,
    choose_index,
    embed_catalogue,
    index_folder,
    read_record,
)
from slip_hf.search.catalogue import catalogue_edges
from slip_hf.search.record import WORK

SHARD_ROWS = 40


@pytest.fixture(scope="module")
def slip_dir(tiny_clip_checkpoint, tmp_path_factory):
    """A tiny SLIP (graph path, random GAT) saved with its backbone's tokenizer and image processor."""
    from slip_hf import SlipModel

    folder = tmp_path_factory.mktemp("slip_for_search")
    torch.manual_seed(0)
    SlipModel.from_dual_encoder(tiny_clip_checkpoint, graph_hidden_size=16).save_pretrained(folder)
    for path in Path(tiny_clip_checkpoint).iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            shutil.copy(path, folder / path.name)
    return str(folder)


def _embed(model: str, dataset, out, **overrides) -> Path:
    settings = {"model_name_or_path": model, "dataset_name": str(dataset), "output_dir": str(out), "shard_rows": SHARD_ROWS,
                    "batch_size": 16, "num_workers": 2, "index": False}
    args = EmbedArguments(**{**settings, **overrides})
    embed_catalogue(args)
    index_folder(out, exact_below=args.exact_below, log=lambda line: None) if args.index else None
    return Path(out)


@pytest.fixture(scope="module")
def slip_embeddings(slip_dir, graph_dataset_dir, tmp_path_factory):
    """The SLIP's embeddings of every split, with exact indexes (the catalogue is below the threshold)."""
    return _embed(slip_dir, graph_dataset_dir, tmp_path_factory.mktemp("emb") / "slip", index=True)


def _vectors(folder: Path, column: str) -> np.ndarray:
    rows = load_dataset(str(folder), split="train").with_format("numpy")
    return np.asarray(rows[column], dtype=np.float32)


def test_embed_writes_a_dataset_whose_vectors_are_the_models(slip_dir, graph_dataset_dir, slip_embeddings, monkeypatch):
    record = read_record(slip_embeddings)
    graph = load_copurchase_graph(graph_dataset_dir, "electronics")
    items = graph.all_nodes()
    rows = load_dataset(str(slip_embeddings), split="train")  # the card makes it a dataset; shards in row order
    assert record.complete and record.rows == len(items) == len(rows) and record.num_shards == -(-len(items) // SHARD_ROWS) > 2
    assert rows["node_id"] == items["node_id"] and rows["title"] == items["title"]
    assert set(record.dims) == {"image_embedding", "text_embedding", "node_embedding"}
    assert len(record.model_fingerprint) == len(record.dataset_fingerprint) == 64
    model, image_processor, tokenizer = load_dual_encoder(slip_dir)
    expected = embed_split(model, image_processor, tokenizer, items, EvaluationConfig(batch_size=16))
    np.testing.assert_allclose(_vectors(slip_embeddings, "image_embedding"), expected.image.numpy(), atol=1e-5)
    np.testing.assert_allclose(_vectors(slip_embeddings, "text_embedding"), expected.text.numpy(), atol=1e-5)
    # Z shard by shard on each shard's 2-hop neighbourhood equals Z over the whole graph at once
    whole = model.get_node_features(expected.image, expected.text, catalogue_edges(graph, np.asarray(items["node_id"])))
    np.testing.assert_allclose(_vectors(slip_embeddings, "node_embedding"), whole.numpy(), atol=1e-5)
    card = (slip_embeddings / "README.md").read_text()
    assert record.model_fingerprint[:12] in card and "| `image_embedding` | `Flat` | yes" in card
    commands = [shlex.split(line.split("#")[0].replace("<this folder>", str(slip_embeddings)))[1:]
                for line in card.splitlines() if line.startswith("slip-hf ")]
    assert [command[0] for command in commands] == ["search", "serve"]
    for name, *arguments in commands:  # the card's commands are the CLI's
        parser_of(name, monkeypatch).parse_args(arguments)
    assert not (slip_embeddings / WORK).exists()


def test_plain_clip_in_float16_and_a_siglip_padded_as_trained(tiny_clip_checkpoint, recipe_siglip, graph_dataset_dir, tmp_path):
    folder = _embed(tiny_clip_checkpoint, graph_dataset_dir, tmp_path / "clip16", dtype="float16", split="test")
    rows = load_dataset(str(folder), split="train")
    assert "node_embedding" not in rows.column_names and rows.features["image_embedding"].feature.dtype == "float16"
    model, image_processor, tokenizer = load_dual_encoder(tiny_clip_checkpoint)
    test = load_copurchase_graph(graph_dataset_dir, "electronics").nodes["test"]
    expected = embed_split(model, image_processor, tokenizer, test, EvaluationConfig(batch_size=16))
    np.testing.assert_allclose(_vectors(folder, "image_embedding"), expected.image.numpy(), atol=2e-3)
    folder = _embed(recipe_siglip, graph_dataset_dir, tmp_path / "siglip", split="test")
    model, _, tokenizer = load_dual_encoder(recipe_siglip)
    titles = list(test["title"])
    np.testing.assert_allclose(_vectors(folder, "text_embedding"), encode_texts(model, tokenizer, titles).numpy(), atol=1e-5)
    assert read_record(folder).dims["text_embedding"] == model.config.text_config.hidden_size


def _embed_command(model: str, dataset, out) -> list[str]:
    return [sys.executable, "-m", "slip_hf.cli", "embed", "--model_name_or_path", model, "--dataset_name", str(dataset),
            "--output_dir", str(out), "--shard_rows", str(SHARD_ROWS), "--batch_size", "16", "--num_workers", "2",
            "--exact_below", "100000"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _kill_when(command: list[str], ready, timeout: float = 300) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_run_killed_at_any_instant_resumes_to_the_same_files(slip_dir, graph_dataset_dir, slip_embeddings, tmp_path,
                                                                capsys):
    out = tmp_path / "killed"
    command = _embed_command(slip_dir, graph_dataset_dir, out)
    work = out / WORK
    _kill_when(command, lambda: len(list(work.glob("features-*.done"))) >= 1)  # while embedding
    with pytest.raises(ValueError, match=r"not finished \(0 of \d+ shards written\); run the same slip-hf embed command"):
        read_record(out)
    assert not (out / "data").exists() and not (out / "README.md").exists()  # nothing a reader could load half of
    assert cli_main(["push-dataset", "--dataset-dir", str(out), "--repo-id", "me/embeddings"]) == 2  # nor upload
    _kill_when(command, lambda: any((work / "data").glob("train-*.parquet")))  # while writing the shards
    (work / "data" / ".train-00000-of-00005.parquet.999999999.tmp").write_bytes(b"half a shard")  # as a kill leaves it
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    clean = tmp_path / "clean"
    assert subprocess.run(_embed_command(slip_dir, graph_dataset_dir, clean), capture_output=True, check=False).returncode == 0
    resumed, uninterrupted = _files(out), _files(clean)
    assert resumed.keys() == uninterrupted.keys() and all(resumed[name] == uninterrupted[name] for name in resumed
                                                         if name != "embeddings.json")
    first, second = (json.loads(files["embeddings.json"]) for files in (resumed, uninterrupted))
    assert first == second  # nothing but the output folder's name differs, and that is not recorded
    assert cli_main(command[3:]) == 0  # the same command, once more (in this process: no second start-up)
    assert capsys.readouterr().out.count("kept the index built with these settings") == 2
    assert _files(out) == resumed  # a finished folder and its indexes are left as they are


def test_two_processes_under_accelerate_launch_equal_one(slip_dir, graph_dataset_dir, tmp_path):
    """Each process embeds whole shards with the same batches: the same computation as one process's (with the same
    threads per process, which decide how the matrix products add up), so the same bits."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    two, one = tmp_path / "two", tmp_path / "one"
    done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "slip_hf.cli",
                           *_embed_command(slip_dir, graph_dataset_dir, two)[3:]],
                          capture_output=True, text=True, timeout=600, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(_embed_command(slip_dir, graph_dataset_dir, one), capture_output=True, text=True, timeout=600,
                          check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for column in ("image_embedding", "text_embedding", "node_embedding"):
        np.testing.assert_array_equal(_vectors(two, column), _vectors(one, column))
    assert read_record(two).indexes.keys() == {"image_embedding", "text_embedding"}


def test_another_plan_is_refused_unless_overwritten(tiny_clip_checkpoint, slip_dir, graph_dataset_dir, tmp_path):
    out = _embed(tiny_clip_checkpoint, graph_dataset_dir, tmp_path / "emb", split="test")
    with pytest.raises(ValueError, match=r"holds embeddings of another model.*model_fingerprint.*--overwrite"):
        _embed(slip_dir, graph_dataset_dir, out, split="test")
    _embed(slip_dir, graph_dataset_dir, out, split="test", overwrite=True)
    assert "node_embedding" in read_record(out).dims


def test_the_exact_index_answers_as_the_exact_search(slip_embeddings):
    search = CatalogueSearch(slip_embeddings)
    image, text = (torch.from_numpy(_vectors(slip_embeddings, column)) for column in ("image_embedding", "text_embedding"))
    for row in range(0, len(search), 17):
        query = search.encode_text(search.title(row))
        rows, scores = search.search(query, "image", 10)
        expected = torch.topk(image @ query, 10)
        np.testing.assert_allclose(scores, expected.values.numpy(), atol=1e-5)
        assert rows == expected.indices.tolist() or np.allclose(sorted(scores), sorted((image[rows] @ query).tolist()), atol=1e-5)
        assert search.rank_of(text[row], "text", row) == int((text @ text[row] >= text[row] @ text[row] - 1e-6).sum())


def test_an_approximate_index_reaches_the_recall_it_measured(slip_embeddings, tmp_path):
    folder = tmp_path / "approximate"
    shutil.copytree(slip_embeddings, folder)
    record = index_folder(folder, ("image_embedding",), exact_below=0, target_recall=0.9, log=lambda line: None)
    entry = record.indexes["image_embedding"]
    assert not entry["exact"] and entry["factory"].startswith("IVF") and entry["recall_at_10"] >= 0.9
    search = CatalogueSearch(folder, load_model=False)
    image, text = (torch.from_numpy(_vectors(folder, column)) for column in ("image_embedding", "text_embedding"))
    found = [set(search.search(text[row], "image", 10)[0]) for row in range(len(search))]
    exact = [set(torch.topk(image @ text[row], 10).indices.tolist()) for row in range(len(search))]
    assert np.mean([len(f & e) / 10 for f, e in zip(found, exact)]) >= entry["recall_at_10"] - 1e-9
    assert choose_index(10_000_000, 512, "4GB").factory == "IVF8192_HNSW32,PQ256x4fs,Refine(SQfp16)"
    assert choose_index(100_000, 512).exact and choose_index(300_000, 512).factory.startswith("IVF1024_")
    with pytest.raises(ValueError, match="fits a memory budget"):
        choose_index(10_000_000, 512, "100MB")


def test_fingerprints_refuse_another_model_another_build_and_a_foreign_index(
    slip_dir, tiny_clip_checkpoint, graph_dataset_dir, slip_embeddings, tmp_path,
):
    with pytest.raises(ValueError, match=r"model mismatch: the index was built from .*\(model fingerprint \w{12}\) but the query "
                                         r"model .* has fingerprint \w{12}"):
        CatalogueSearch(slip_embeddings, tiny_clip_checkpoint)
    retrained = tmp_path / "slip"  # the same folder name, other weights
    shutil.copytree(slip_dir, retrained)
    from slip_hf import SlipModel

    model = SlipModel.from_pretrained(retrained)
    with torch.no_grad():
        model.fusion.dense.weight.add_(0.01)
    model.save_pretrained(retrained)
    with pytest.raises(ValueError, match="model mismatch"):
        CatalogueSearch(slip_embeddings, str(retrained))
    rebuilt = tmp_path / "data"  # another build of the dataset: one edge fewer
    shutil.copytree(graph_dataset_dir, rebuilt)
    edges_file = next((rebuilt / "electronics_edges").glob("*.parquet"))
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(edges_file).slice(1), edges_file)
    from slip_hf.space import load_space

    with pytest.raises(ValueError, match=r"dataset mismatch: the index was built from .* but the dataset .* has fingerprint"):
        load_space(embeddings=[str(slip_embeddings)], dataset=str(rebuilt), cache_dir=tmp_path / "cache")
    foreign = tmp_path / "foreign"
    shutil.copytree(slip_embeddings, foreign)
    record = json.loads((foreign / "embeddings.json").read_text())
    record["indexes"]["image_embedding"]["model_fingerprint"] = "0" * 64
    (foreign / "embeddings.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="built from other embeddings"):
        CatalogueSearch(foreign, load_model=False).search(torch.zeros(16), "image")


def test_search_prints_the_top_k_with_titles_and_refuses_a_bad_image(slip_embeddings, tmp_path, capsys):
    search = CatalogueSearch(slip_embeddings)
    assert cli_main(["search", "--index", str(slip_embeddings), search.title(5), "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = search.text(search.title(5), 3)
    assert len(lines) == 3 and [line.split(maxsplit=3)[3] for line in lines] == [hit.title for hit in expected]
    cut_out = tmp_path / "cut-out.png"  # a transparent product photo
    Image.new("RGBA", (24, 24), (200, 30, 30, 0)).save(cut_out)
    assert cli_main(["search", "--index", str(slip_embeddings), "--image", str(cut_out)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 10
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert cli_main(["search", "--index", str(slip_embeddings), "--image", str(broken)]) == 2
    error = capsys.readouterr().err
    assert "image cannot be decoded" in error and len(error.strip().splitlines()) == 1


def test_serve_on_a_saved_index_embeds_nothing_and_answers_as_the_exact_search(
    slip_dir, graph_dataset_dir, slip_embeddings, tmp_path, monkeypatch,
):
    from slip_hf.space import load_space

    cached = load_space([slip_dir], str(graph_dataset_dir), split="all", cache_dir=tmp_path / "cache")
    with monkeypatch.context() as patch:  # a start on the saved index: no catalogue image or title is embedded
        patch.setattr("slip_hf.space.index.encode_images", lambda *args, **kwargs: pytest.fail("embedded at start"))
        patch.setattr("slip_hf.search.embed.encode_images", lambda *args, **kwargs: pytest.fail("embedded at start"))
        page = load_space(embeddings=[str(slip_embeddings)], cache_dir=tmp_path / "cache")
    assert len(page.catalog) == len(cached.catalog) and page.indexes[0].name == Path(slip_dir).name
    exact = cached.indexes[0]

    def same_answers(found: list[int], expected: list[int], query: torch.Tensor, against: str) -> None:
        """The exact search's top k, up to the order of items whose scores tie (a random tiny model has many)."""
        vectors = getattr(exact, against)
        np.testing.assert_allclose(sorted((vectors[found] @ query).tolist()), sorted((vectors[expected] @ query).tolist()), atol=1e-6)

    for row in (0, 7, 30):
        title = page.catalog.titles[row]
        same_answers(page.search_text(title)[-1], cached.search_text(title)[-1], exact.encode_text(title), "image")
        found, expected = page.search_from_item(row, "image"), cached.search_from_item(row, "image")
        same_answers(found[-2], expected[-2], exact.image[row], "text")
        assert found[-1] == expected[-1]  # the item's rank, ties counted against it by both
        assert page.search_from_item(row, "title")[-1] == cached.search_from_item(row, "title")[-1]
    photo = tmp_path / "photo.png"
    Image.new("RGB", (24, 24), (30, 200, 30)).save(photo)
    same_answers(page.search_image(str(photo))[-1], cached.search_image(str(photo))[-1],
                 exact.encode_image(Image.open(photo)), "text")
    with pytest.raises(ValueError, match="serve the same split"):
        load_space(embeddings=[str(_embed(slip_dir, graph_dataset_dir, tmp_path / "test-only", split="test", index=True))],
                   dataset=str(graph_dataset_dir), cache_dir=tmp_path / "cache").indexes[0].check_dataset(
            str(graph_dataset_dir), "electronics", cached.catalog.items["node_id"])


def test_a_folder_and_its_upload_have_the_same_fingerprints(slip_dir, graph_dataset_dir, tmp_path, monkeypatch):
    """A Hub id is fingerprinted from its snapshot (the uploaded files), so a Space on the Hub matches the index
    built from the local folders; stood in here by copies of the folders as `snapshot_download` returns them."""
    from slip_hf.search import dataset_fingerprint, model_fingerprint

    snapshots = {"me/slip": tmp_path / "model-snapshot", "me/data": tmp_path / "data-snapshot"}
    shutil.copytree(slip_dir, snapshots["me/slip"])
    shutil.copytree(graph_dataset_dir, snapshots["me/data"])
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda repo_id, **kwargs: str(snapshots[repo_id]))
    assert model_fingerprint("me/slip") == model_fingerprint(slip_dir)
    assert dataset_fingerprint("me/data", "electronics") == dataset_fingerprint(str(graph_dataset_dir), "electronics")


def test_publish_uploads_the_index_and_the_space_app_serves_it(slip_dir, tiny_clip_checkpoint, graph_dataset_dir, slip_embeddings,
                                                               tmp_path, monkeypatch, capsys):
    import importlib.util

    import gradio as gr
    import pyarrow.parquet as pq
    from huggingface_hub import metadata_load

    root = Path(__file__).resolve().parents[1]
    common = ["publish", "--model_dir", slip_dir, "--dataset_dir", str(graph_dataset_dir), "--model_repo", "me/slip",
              "--dataset_repo", "me/data", "--space_repo", "me/search", "--space_dir", str(root / "hub" / "space"),
              "--index_dir", str(slip_embeddings), "--index_repo", "me/index"]
    assert cli_main([*common, "--dry_run", "True"]) == 0
    assert f"dataset me/index <- {slip_embeddings}" in capsys.readouterr().out
    cards = []

    class StandIn:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, **kwargs):
            if kwargs["repo_type"] == "space":
                cards.append(metadata_load(Path(kwargs["folder_path"]) / "README.md"))
            return f"https://huggingface.co/{kwargs['repo_id']}/commit/1"

    monkeypatch.setattr("slip_hf.hub_upload.HfApi", StandIn)
    assert cli_main(common) == 0 and cards[0]["slip_index"] == "me/index"
    wrong = [*common]
    wrong[wrong.index(slip_dir)] = tiny_clip_checkpoint
    assert cli_main(wrong) == 2 and "model mismatch" in capsys.readouterr().err
    rebuilt = tmp_path / "data"  # another build of the dataset: one edge fewer
    shutil.copytree(graph_dataset_dir, rebuilt)
    edges_file = next((rebuilt / "electronics_edges").glob("*.parquet"))
    pq.write_table(pq.read_table(edges_file).slice(1), edges_file)
    wrong = [*common]
    wrong[wrong.index(str(graph_dataset_dir))] = str(rebuilt)
    assert cli_main(wrong) == 2 and "dataset mismatch" in capsys.readouterr().err
    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, *args, **kwargs: launched.append(self))
    spec = importlib.util.spec_from_file_location("space_app", root / "hub" / "space" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    for name, value in {"SLIP_MODELS": slip_dir, "SLIP_DATASET": str(graph_dataset_dir), "SLIP_INDEX": str(slip_embeddings),
                        "SLIP_CACHE_DIR": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(name, value)
    threads = torch.get_num_threads()
    try:
        app.main()
    finally:
        torch.set_num_threads(threads)
    assert len(launched) == 1 and not list((tmp_path / "cache").glob("embeddings-*.safetensors"))  # nothing embedded
