"""Images as people have them (transparent, rotated, 16-bit, CMYK, animated) are stored, trained on and
searched as a viewer shows them; the build counts each fix; a rebuild decodes images stored by an older
decoding; bombs and unreadable files are refused by name. The corpus is generated (tests/image_corpus.py)."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from image_corpus import HIDDEN, SIZE, image_corpus, plain_rgb, reference_view
from PIL import Image

from slip_hf.cli import main as cli_main
from slip_hf.data.hub import load_copurchase_graph
from slip_hf.data.images import ImageDownloader
from slip_hf.embedding import ImageBatch
from slip_hf.pixels import decode_image
from slip_hf.processing import NodeTransform
from slip_hf.viewed_image import FIXES, VIEW_VERSION, ImageRefused, viewed_image

CORPUS = image_corpus()
TRAPS = {"rgba.png", "la.png", "p-trns.png", "p-transparent-index.gif", "grey16.png", "animated.webp", "animated.png",
         *(f"exif{o}.{ext}" for o in range(2, 9) for ext in ("jpg", "webp"))}
"""Files where `convert("RGB")` alone shows something else than a viewer."""


@pytest.mark.parametrize("file", CORPUS, ids=[f.name for f in CORPUS])
def test_every_mode_and_orientation_is_what_a_viewer_shows(file):
    image, fixes = viewed_image(file.data)
    assert image.mode == "RGB" and fixes == file.fixes
    assert np.array_equal(np.asarray(image), reference_view(file.data))
    if file.name in TRAPS:  # the test sees the bug it guards against
        plain = plain_rgb(file.data)
        assert plain.shape != np.asarray(image).shape or np.abs(plain.astype(int) - np.asarray(image)).mean() > 20


def test_the_background_under_transparency_can_be_chosen():
    rgba = next(f for f in CORPUS if f.name == "rgba.png")
    black, _ = viewed_image(rgba.data, background=(0, 0, 0))
    assert black.getpixel((0, 0)) == (0, 0, 0) and viewed_image(rgba.data)[0].getpixel((0, 0)) == (255, 255, 255)
    opaque, fixes = viewed_image(Image.new("RGBA", SIZE, (*HIDDEN, 255)))
    assert opaque.getpixel((0, 0)) == HIDDEN and fixes == frozenset()  # an opaque alpha channel changes nothing


def test_32_bit_images_follow_the_documented_rule_or_are_refused_by_name():
    sixteen_in_32 = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.int32), "I")
    assert np.asarray(viewed_image(sixteen_in_32)[0])[0, :, 0].tolist() == [0, 100, 255]
    unit_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert np.asarray(viewed_image(unit_float)[0])[0, :, 0].tolist() == [0, 128, 255]
    for image in (Image.fromarray(np.array([[-5, 70000]], dtype=np.int32), "I"),
                  Image.fromarray(np.array([[0.0, 3.5]], dtype=np.float32), "F")):
        with pytest.raises(ImageRefused, match="no one 8-bit reading") as refused:
            viewed_image(image)
        assert refused.value.status == "unsupported_image"


def test_a_broken_exif_block_is_no_orientation_and_prints_no_warning(tmp_path):
    """In a fresh Python, as a user runs it (pytest's own warning filters would hide what the terminal shows)."""
    import subprocess
    import sys

    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), "red").save(buffer, "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff")
    (tmp_path / "broken-exif.jpg").write_bytes(buffer.getvalue())
    code = ("import sys; from slip_hf.viewed_image import viewed_image; image, fixes = viewed_image(sys.argv[1]); "
            "print(image.size, sorted(fixes))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "broken-exif.jpg")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "(20, 10) []" and done.stderr == ""


def test_bombs_and_unreadable_files_are_refused_by_name(monkeypatch, recwarn):
    big = io.BytesIO()
    Image.new("L", (400, 400)).save(big, "PNG")  # 160,000 pixels in a few hundred bytes
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    for data, status in ((big.getvalue(), "decompression_bomb"), (b"plain text, no image", "not_image"),
                         (CORPUS[0].data[: len(CORPUS[0].data) // 3], "corrupt_image")):
        with pytest.raises(ImageRefused) as refused:
            viewed_image(data)
        assert refused.value.status == status and "\n" not in str(refused.value)
    assert not [w for w in recwarn if "PIL" in str(w.filename) or issubclass(w.category, Image.DecompressionBombWarning)]


class _Capture:
    """An image processor that keeps the images it is given."""

    def __init__(self):
        self.images = []

    def __call__(self, images, return_tensors):
        self.images += images
        return {"pixel_values": np.zeros((len(images), 3, 2, 2), np.float32)}


def test_training_and_evaluation_paths_see_the_stored_pixels(tokenizer):
    """The tensor path (decode_image), the processor path (NodeTransform) and evaluation (ImageBatch) all take
    the image a viewer shows, pixel for pixel the one the builder stores before JPEG encoding."""
    capture, batch_capture = _Capture(), _Capture()
    transform = NodeTransform(capture, tokenizer, max_length=16, label_column=None)
    transform({"node_id": list(range(len(CORPUS))), "title": ["an item"] * len(CORPUS), "image": [{"bytes": f.data} for f in CORPUS]})
    ImageBatch(lambda data: Image.open(io.BytesIO(data)), batch_capture)([f.data for f in CORPUS])
    for file, processed, evaluated in zip(CORPUS, capture.images, batch_capture.images):
        expected = reference_view(file.data)
        assert np.array_equal(decode_image({"bytes": file.data, "path": None}).permute(1, 2, 0).numpy(), expected), file.name
        assert np.array_equal(np.asarray(processed), expected) and np.array_equal(np.asarray(evaluated), expected), file.name


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """The corpus as a user's catalogue: one item per file, a ring of links."""
    root = tmp_path_factory.mktemp("catalogue")
    (root / "images").mkdir()
    for file in CORPUS:
        (root / "images" / file.name).write_bytes(file.data)
    items = [{"id": file.name, "title": f"item {file.name}", "image": f"images/{file.name}", "kind": file.name.split(".")[-1]}
             for file in CORPUS]
    pd.DataFrame(items).to_csv(root / "items.csv", index=False)
    names = [file.name for file in CORPUS]
    pd.DataFrame({"src": names, "dst": names[1:] + names[:1]}).to_csv(root / "links.csv", index=False)
    return root


def _import(catalogue, out, *extra) -> int:
    return cli_main(["import-graph", "--nodes", str(catalogue / "items.csv"), "--edges", str(catalogue / "links.csv"),
                     "--out_dir", str(out), "--id_column", "id", "--text_column", "title", "--image_column", "image",
                     "--label_column", "kind", "--image_size", "64", *extra])


def _as_stored(pixels: np.ndarray) -> np.ndarray:
    """`pixels` through the builder's JPEG encoding (quality 90)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _stored(out) -> dict[str, np.ndarray]:
    graph = load_copurchase_graph(out, "graph")
    return {asin: np.asarray(image.convert("RGB")) for split in graph.nodes.values()
            for asin, image in zip(split["parent_asin"], split["image"])}


@pytest.mark.filterwarnings("error::UserWarning")  # no Pillow warning through the progress bars
def test_import_graph_stores_what_a_viewer_shows_and_counts_each_fix(catalogue, tmp_path, capsys):
    out = tmp_path / "catalogue-mm"
    assert _import(catalogue, out) == 0
    printed = capsys.readouterr()
    expected = {fix: sum(fix in f.fixes for f in CORPUS) for fix in FIXES}
    steps = {step["step"]: step for step in json.loads((out / "stats" / "graph.json").read_text())["steps"]}
    assert steps["2. images"]["fixed"] == {fix.replace("_", " "): n for fix, n in expected.items() if n}
    assert expected["exif_rotated"] == 14 and expected["transparency_flattened"] == 6
    assert "exif rotated: 14" in printed.out and "Warning" not in printed.err
    stored = _stored(out)
    assert len(stored) == len(CORPUS)
    # Stored as JPEG (quality 90): the stored file decodes to exactly what the reference gives through the same
    # encoder, so the pixels before encoding were the reference's.
    for file in CORPUS:
        assert np.array_equal(stored[file.name], _as_stored(reference_view(file.data))), file.name


def test_a_rebuild_decodes_again_what_an_older_decoding_stored_and_keeps_the_rest(catalogue, tmp_path):
    out = tmp_path / "catalogue-mm"
    assert _import(catalogue, out) == 0
    log = out / ".work" / "graph" / "download_status.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["view_version"] for r in records} == {VIEW_VERSION}
    rgba = next(r for r in records if r["key"] == "rgba.png")
    Image.new("RGB", SIZE, HIDDEN).save(rgba["path"], "JPEG")  # what slip_hf 0.2 stored: the hidden colour
    for record in records:  # as slip_hf 0.2 logged them: no version, no fixes
        del record["view_version"], record["fixes"], record["background"]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert _import(catalogue, out) == 0  # the same folder, the same name: a rebuild
    cut_out = next(f for f in CORPUS if f.name == "rgba.png")
    assert np.array_equal(_stored(out)["rgba.png"], _as_stored(reference_view(cut_out.data)))
    assert _import(catalogue, out, "--image_background", "0", "0", "0") == 0  # another background: decoded again
    assert np.array_equal(_stored(out)["rgba.png"], _as_stored(reference_view(cut_out.data, background=(0, 0, 0))))


def test_the_downloader_records_each_refusal_status(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    files = {"bomb.png": Image.new("L", (400, 400)), "text.png": None, "cut.jpg": None}
    big = io.BytesIO()
    files["bomb.png"].save(big, "PNG")
    (tmp_path / "bomb.png").write_bytes(big.getvalue())
    (tmp_path / "text.png").write_bytes(b"not an image")
    (tmp_path / "cut.jpg").write_bytes(CORPUS[0].data[:200])
    downloader = ImageDownloader(tmp_path / "out", local_roots=[tmp_path], num_workers=2)
    results = downloader.download([(name, (tmp_path / name).as_uri()) for name in files])
    assert {name: r.status for name, r in results.items()} == {"bomb.png": "decompression_bomb", "text.png": "not_image",
                                                               "cut.jpg": "corrupt_image"}
