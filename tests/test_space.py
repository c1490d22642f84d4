"""The Space: catalogue and neighbours, cached embeddings, search handlers and their messages, `slip-hf
publish` (dry run and uploads against a stand-in), and the page in a real browser."""

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from slip_hf.cli import main as cli_main
from slip_hf.data.hub import load_copurchase_graph
from slip_hf.space import Catalog, build_space, load_space

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def page(graph_dataset_dir, tiny_clip_checkpoint, tmp_path_factory):
    cache = tmp_path_factory.mktemp("space_cache")
    return load_space([tiny_clip_checkpoint, tiny_clip_checkpoint], str(graph_dataset_dir), split="all", cache_dir=cache,
                      max_text_length=24)


def test_catalog_neighbours_come_with_counts_and_times_most_bought_first(graph_dataset_dir):
    catalog = Catalog.from_dataset(graph_dataset_dir, split="all")
    graph = load_copurchase_graph(graph_dataset_dir, "electronics")
    row = max(range(len(catalog)), key=lambda r: len(catalog.neighbours(r, limit=1000)))
    node = int(catalog.items[row]["node_id"])
    neighbours = catalog.neighbours(row, limit=1000)
    edges = graph.edges.to_pandas()
    expected = edges[(edges.src == node) | (edges.dst == node)]
    assert len(neighbours) == len(expected) and [n.count for n in neighbours] == sorted(expected["count"], reverse=True)
    first = neighbours[0]
    other = int(catalog.items[first.row]["node_id"])
    edge = expected[(expected.src == other) | (expected.dst == other)].iloc[0]
    assert (first.count, first.first_time, first.last_time) == (edge["count"], edge["first_time"], edge["last_time"])
    assert "bought together by" in first.describe() and len(catalog.neighbours(row, limit=2)) == 2
    test_only = Catalog.from_dataset(graph_dataset_dir, split="test")
    assert len(test_only) == graph.nodes["test"].num_rows  # neighbours outside the split are left out
    with pytest.raises(ValueError, match="no split 'dev'"):
        Catalog.from_dataset(graph_dataset_dir, split="dev")


def test_embeddings_are_cached_once_per_model_and_catalogue(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file, save_file

    from slip_hf.space import load_index

    catalog = Catalog.from_dataset(graph_dataset_dir, split="test")
    cache = tmp_path / "cache"
    first = load_index(tiny_clip_checkpoint, catalog, cache)
    assert len(list(cache.glob("embeddings-*.safetensors"))) == 1 and first.image.shape[0] == len(catalog)
    with monkeypatch.context() as patch:  # the second start reads the file: no image is embedded again
        patch.setattr("slip_hf.space.index.encode_images", lambda *args, **kwargs: pytest.fail("embedded again"))
        again = load_index(tiny_clip_checkpoint, catalog, cache)
    assert torch.equal(first.image, again.image) and torch.equal(first.text, again.text)
    load_index(tiny_clip_checkpoint, Catalog.from_dataset(graph_dataset_dir, split="validation"), cache)
    assert len(list(cache.glob("embeddings-*.safetensors"))) == 2  # another catalogue, another file
    # the same folder name with retrained weights must not reuse the old embeddings
    model = tmp_path / "model"
    shutil.copytree(tiny_clip_checkpoint, model)
    before = load_index(str(model), catalog, cache)
    weights = load_file(str(model / "model.safetensors"))
    save_file({name: tensor * 0.5 if tensor.is_floating_point() else tensor for name, tensor in weights.items()},
              str(model / "model.safetensors"), metadata={"format": "pt"})
    after = load_index(str(model), catalog, cache)
    assert len(list(cache.glob("embeddings-*.safetensors"))) == 4 and not torch.equal(before.text, after.text)


def test_image_files_are_the_stored_bytes_written_once_and_listed(graph_dataset_dir, tmp_path, monkeypatch):
    from datasets import Image as ImageFeature

    catalog = Catalog.from_dataset(graph_dataset_dir, split="test")
    stored = catalog.items.cast_column("image", ImageFeature(decode=False))["image"]
    folder = catalog.write_image_files(tmp_path)
    assert [Path(catalog.image_file(row)).read_bytes() for row in range(len(catalog))] == [image["bytes"] for image in stored]
    assert json.loads((folder / "files.json").read_text()) == [Path(catalog.image_file(row)).name for row in range(len(catalog))]
    again = Catalog.from_dataset(graph_dataset_dir, split="test")
    with monkeypatch.context() as patch:  # a later start reads the list, not the images
        patch.setattr(Catalog, "_write_images", lambda self, folder: pytest.fail("images read again"))
        assert again.write_image_files(tmp_path) == folder
    assert [again.image_file(row) for row in range(len(again))] == [catalog.image_file(row) for row in range(len(catalog))]
    Path(catalog.image_file(3)).unlink()  # a file gone since: written again, from the dataset
    Catalog.from_dataset(graph_dataset_dir, split="test").write_image_files(tmp_path)
    assert Path(catalog.image_file(3)).read_bytes() == stored[3]["bytes"]
    (folder / "files.json").write_text('["1.jpg", ')  # a list that does not parse is not trusted either
    Catalog.from_dataset(graph_dataset_dir, split="test").write_image_files(tmp_path)
    assert len(json.loads((folder / "files.json").read_text())) == len(catalog)
    assert not list(folder.glob(".*.tmp"))


def test_text_and_image_search_and_the_true_items_rank(page):
    status, first, second, rows_first, rows_second = page.search_text(page.catalog.titles[0])
    assert status.startswith("Images for") and len(first) == len(second) == len(rows_first) == 12
    assert rows_first == rows_second  # the same checkpoint twice: the same answers
    outputs = page.search_from_item(3, "title")
    assert outputs[0].startswith("Searched with the title") and "ranked **" in outputs[-1]
    _, info, neighbours, rows = page.item_panel(3)
    assert page.catalog.titles[3] in info and len(neighbours) == len(rows)


def test_bad_input_gets_a_message_not_a_trace(page, tmp_path):
    assert "Type a query first" in page.search_text("   ")[0]
    assert "Upload an image first" in page.search_image(None)[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert "not an image that can be read" in page.search_image(str(broken))[0]
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20), (200, 30, 30)).save(good)
    assert page.search_image(str(good))[0].startswith("Items whose titles")
    assert "Pick an item first" in page.search_from_item(None, "title")[0]


def test_serve_refuses_missing_paths_and_a_dataset_without_images(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_space([str(tmp_path / "missing-model")], str(graph_dataset_dir))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_space([tiny_clip_checkpoint], str(tmp_path / "missing-dataset"))
    graph = load_copurchase_graph(graph_dataset_dir, "electronics")
    with pytest.raises(ValueError, match="no 'image' column"):
        Catalog(graph.nodes["test"].remove_columns("image"), graph.edges)


def _space_folders(tmp_path, slip_model_dir, graph_dataset_dir):
    model = tmp_path / "model"
    shutil.copytree(slip_model_dir, model)  # plus a training checkpoint, which publishing leaves out
    (model / "checkpoint-3").mkdir()
    (model / "checkpoint-3" / "optimizer.pt").write_bytes(b"x")
    return model


def test_publish_dry_run_lists_every_file_and_target(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, capsys):
    model = _space_folders(tmp_path, tiny_clip_checkpoint, graph_dataset_dir)
    space = tmp_path / "space"
    shutil.copytree(ROOT / "hub" / "space", space)
    (space / ".slip_space_cache").mkdir(exist_ok=True)  # a local run's embeddings: never uploaded
    (space / ".slip_space_cache" / "embeddings-0.safetensors").write_bytes(b"x")
    code = cli_main(["publish", "--model_dir", str(model), "--dataset_dir", str(graph_dataset_dir), "--space_dir",
                     str(space), "--model_repo", "me/slip", "--dataset_repo", "me/data", "--space_repo",
                     "me/search", "--dry_run", "True"])
    out = capsys.readouterr().out
    assert code == 0 and "dry run: nothing uploaded." in out
    assert f"model me/slip <- {model}" in out and "  config.json" in out and "optimizer.pt" not in out
    assert "dataset me/data <- " in out and "  README.md" in out and ".work" not in out
    assert "space me/search <- " in out and "  app.py" in out and "  requirements.txt" in out and "embeddings-0" not in out


def test_publish_uploads_three_repos_and_points_the_space_at_them(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, monkeypatch):
    from huggingface_hub import metadata_load

    calls = []

    class StandIn:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            folder = Path(kwargs["folder_path"])
            card = metadata_load(folder / "README.md") if kwargs["repo_type"] == "space" else None
            calls.append(("upload", kwargs["repo_id"], kwargs["repo_type"], sorted(p.name for p in folder.iterdir()), card))
            return f"https://huggingface.co/{kwargs['repo_id']}/commit/1"

    monkeypatch.setattr("slip_hf.hub_upload.HfApi", StandIn)
    model = _space_folders(tmp_path, tiny_clip_checkpoint, graph_dataset_dir)
    assert cli_main(["publish", "--model_dir", str(model), "--dataset_dir", str(graph_dataset_dir), "--model_repo", "me/slip",
                     "--dataset_repo", "me/data", "--space_repo", "me/search", "--space_dir", str(ROOT / "hub" / "space")]) == 0
    creates = [call for call in calls if call[0] == "create"]
    assert [(c[1], c[2]["repo_type"]) for c in creates] == [("me/slip", "model"), ("me/data", "dataset"), ("me/search", "space")]
    assert creates[2][2]["space_sdk"] == "gradio"
    space_upload = [call for call in calls if call[0] == "upload" and call[2] == "space"][0]
    assert "app.py" in space_upload[3] and ".slip_space_cache" not in space_upload[3]
    assert space_upload[4]["models"] == ["me/slip"] and space_upload[4]["datasets"] == ["me/data"]
    assert metadata_load(ROOT / "hub" / "space" / "README.md")["models"] == ["you/slip-electronics"]  # the folder is untouched


def test_the_space_app_reads_its_card_or_the_environment(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, monkeypatch):
    import importlib.util

    import gradio as gr
    import torch

    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, *args, **kwargs: launched.append(self))
    spec = importlib.util.spec_from_file_location("space_app", ROOT / "hub" / "space" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    monkeypatch.setenv("SLIP_MODELS", tiny_clip_checkpoint)
    monkeypatch.setenv("SLIP_DATASET", str(graph_dataset_dir))
    monkeypatch.setenv("SLIP_SPLIT", "validation")
    monkeypatch.setenv("SLIP_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    try:
        app.main()
        assert torch.get_num_threads() == 1  # searches run side by side: one torch thread each
    finally:
        torch.set_num_threads(threads)  # the rest of the test session keeps its threads
    assert len(launched) == 1 and list((tmp_path / "cache").glob("embeddings-*.safetensors"))
    monkeypatch.setenv("SLIP_MODELS", "")
    with pytest.raises(SystemExit, match="set the Space's models and dataset"):
        app.main()  # no model at all: one line, before anything loads


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NO_BROWSER = "this machine has no Debian chromium + chromium-driver (apt-get install chromium chromium-driver; .ci/run installs them)"


def test_the_page_in_a_real_browser(page, tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("SLIP_HF_REQUIRE_BROWSER"):  # CI: the browser test must run
            pytest.fail(NO_BROWSER)
        pytest.skip(NO_BROWSER)
    import socket

    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as probe:  # a free port on the loopback interface
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = build_space(page)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))  # Gradio re-renders
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        query = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#query textarea")))
        words = page.catalog.titles[0].split(",")[0]
        query.send_keys(words)
        driver.find_element(By.CSS_SELECTOR, "#search").click()
        # both models' result lists render their images
        for number in (0, 1):
            wait.until(lambda d, n=number: len(d.find_elements(By.CSS_SELECTOR, f"#results-{n} button.thumbnail-item img")) == 12)
        assert f"Images for “{words}”" in driver.find_element(By.CSS_SELECTOR, "#status").text
        first = driver.find_elements(By.CSS_SELECTOR, "#results-0 button.thumbnail-item")[0]
        title = first.find_element(By.TAG_NAME, "img").get_attribute("alt")
        first.click()
        wait.until(lambda d: title in d.find_element(By.CSS_SELECTOR, "#item-info").text)
        neighbours = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#neighbours button.thumbnail-item"))
        info = driver.find_element(By.CSS_SELECTOR, "#item-info").text
        assert "Bought together" in info and "bought together by" in info
        next_title = neighbours[0].find_element(By.TAG_NAME, "img").get_attribute("alt").split(" (bought together")[0]
        neighbours[0].click()  # move through the graph
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#item-info h3").text == next_title)
        driver.find_element(By.CSS_SELECTOR, "#by-title").click()
        wait.until(lambda d: "ranked" in d.find_element(By.CSS_SELECTOR, "#rank-1").text)
        driver.find_element(By.CSS_SELECTOR, "#query textarea").send_keys(Keys.CONTROL, "a", Keys.DELETE)
        driver.find_element(By.CSS_SELECTOR, "#search").click()  # an empty query: a message, not a trace
        wait.until(lambda d: "Type a query first" in d.find_element(By.CSS_SELECTOR, "#status").text)
        driver.find_element(By.CSS_SELECTOR, "#query textarea").send_keys(words)
        driver.find_element(By.CSS_SELECTOR, "#search").click()
        wait.until(lambda d: "Images for" in d.find_element(By.CSS_SELECTOR, "#status").text)
        # a visitor's cut-out: a transparent PNG (colour hidden under alpha 0) searched by image
        cut_out = Image.new("RGBA", (48, 40), (200, 20, 160, 0))
        cut_out.paste((30, 90, 200, 255), (10, 8, 38, 32))
        cut_out.save(tmp_path / "cut-out.png")
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(tmp_path / "cut-out.png"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload img"))
        driver.find_element(By.CSS_SELECTOR, "#search-image").click()
        wait.until(lambda d: "Items whose titles match the uploaded image" in d.find_element(By.CSS_SELECTOR, "#status").text)
        for number in (0, 1):
            wait.until(lambda d, n=number: len(d.find_elements(By.CSS_SELECTOR, f"#results-{n} button.thumbnail-item img")) == 12)
        screenshot = tmp_path / "space.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 20_000
    finally:
        driver.quit()
        demo.close()


def test_sixteen_visitors_at_once_get_their_own_results_with_no_failure(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    """A real `slip-hf serve` process under 16 concurrent gradio_client visitors over loopback, text and image
    (transparent PNG) searches, as page visitors (fetching the result images) and as API callers: no failed
    search or image, every answer the one its query gets alone, no traceback in the server's log
    (benchmarks/space_load.py, bounded: 4 searches each)."""
    model = tmp_path / "second"  # two models side by side, as the demo's Space compares SLIP and CLIP
    shutil.copytree(tiny_clip_checkpoint, model)
    report, printed = _space_load(tmp_path, "--model", tiny_clip_checkpoint, str(model), "--dataset", str(graph_dataset_dir),
                                  "--split", "all", "--visitors", "16", "--searches", "4")
    assert [(row["kind"], row["searches"]) for row in report["rows"]] == [("page", 64), ("api", 64)]
    assert all(row["failed"] == row["wrong"] == row["failed_image_fetches"] == 0 for row in report["rows"]) and report["tracebacks"] == 0
    assert "| 16 | page | 64 | 0 | 0 |" in printed and "| 16 | api | 64 | 0 | 0 |" in printed


def test_a_scaled_catalogue_is_embedded_once_then_started_from_the_cache(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    """`space_load.py --items`: the split repeated into a bigger catalogue; the first start builds the index,
    the second reads it (writes nothing: no embedding, no image file), and searches over it answer."""
    report, printed = _space_load(tmp_path, "--model", tiny_clip_checkpoint, "--dataset", str(graph_dataset_dir), "--split", "all",
                                  "--items", "1200", "--visitors", "1", "--searches", "2", "--kinds", "api")
    first, cached = report["starts"]
    assert first["new_cache_files"] >= 1200 + 2 and cached["new_cache_files"] == 0 and first["peak_memory_gb"] > 0
    assert report["rows"][0]["failed"] == 0 and report["tracebacks"] == 0 and "catalogue of 1,200 items" in printed


def _space_load(tmp_path, *arguments: str) -> tuple[dict, str]:
    """Run benchmarks/space_load.py; its JSON report and what it printed."""
    import subprocess
    import sys

    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "space_load.py"), *arguments, "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout
