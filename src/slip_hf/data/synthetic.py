"""The embedded default data: raw files in the exact Amazon Reviews 2023 schema, generated offline.

No real Amazon data can be fetched everywhere slip_hf runs (CI, air-gapped machines), so the package ships a
*generator*. The real builder ([`slip_hf.data.builder`]) then turns its output into the dataset exactly as it
would the McAuley-Lab files.

Generative model (after §5 of the SLIP paper)
---------------------------------------------
* The catalogue has `num_lines` *product lines*. A line belongs to a department (level 1 of the category
  path, e.g. `Audio`) and a product type (level 2, e.g. `Headphones`); it has a brand, a series name and a
  visual identity: a shape drawn on its department's background colour. Its items differ by colour and model
  number, and their titles say so ("orbit nova-17 red headphones, model 3").
* Lines come in *complement bundles*: one line of each of a department's three product types (a phone, its
  case, its charger). A shopper picks a bundle and buys one item from two or three of its lines; some also
  buy from the next bundle (so bundles connect) or a random item. Co-purchase (1-hop) neighbours are therefore
  complements, and 2-hop neighbours, linked through a shared complement, are mostly items of the *same* line:
  similar items. `synthetic_truth.jsonl` records each item's line so the card can measure it.
* Item popularity inside a line follows a Zipf law, so some pairs are co-bought often and others rarely, and
  the `min_copurchase` threshold and the k-core have something to remove.
* Time (`num_eras` > 1): the three years of reviews are cut into eras, and the catalogue changes from one era
  to the next. Complements change: in era e, bundle b holds the type-k line of bundle (b + e k) mod B, so a
  phone's case line of era 0 is not the one bought with it in era 1. Lines launch and retire: a third of the
  lines launch after era 0 and a sixth retire before the last era; a shopper buys only lines on sale. A
  temporal split then asks a model for relations that did not exist before the cut, and positives of old
  eras teach pairings that no longer hold (what recency-aware positives are for). `num_eras=1` (the
  default) is the time-free catalogue, draw for draw.

Bad rows, each kind at a known count (see [`SyntheticRawSummary`]): reviews without `user_id`, unverified
reviews, repeated reviews of one item by one user, one-purchase users, items without a metadata line, blank
titles, items without images, image URLs to missing files, files that are not images, cut-off JPEGs, and one
metadata line that is not JSON.

[`write_power_law_reviews`] is the other generator: reviews only, at benchmark scale (millions of rows), with
power-law user activity and item popularity.
"""

import gzip
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from tqdm.auto import tqdm

DEPARTMENTS = {
    "Audio": ("Headphones", "Speakers", "Microphones"),
    "Cameras": ("Lenses", "Tripods", "Camera Bags"),
    "Computers": ("Keyboards", "Mice", "Monitors"),
    "Phones": ("Smartphones", "Phone Cases", "Chargers"),
    "Television": ("TVs", "Remotes", "Wall Mounts"),
    "Gaming": ("Controllers", "Consoles", "Headsets"),
}
SHAPES = ("circle", "square", "triangle", "stripes", "ring", "cross", "diamond", "bars")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 50, 190),
    "orange": (240, 140, 30),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
}
BRANDS = ("acme", "zenith", "orbit", "nova", "vertex", "lumen", "pulse", "quanta", "helix", "sonic")
SERIES = ("aero", "blade", "core", "drift", "echo", "flux", "glide", "halo", "ion", "jet", "kite", "loop")
BACKGROUNDS = ((200, 200, 200), (120, 160, 200), (200, 170, 120), (150, 200, 150), (190, 140, 190), (110, 110, 110))


def render_product_image(shape: str, color: tuple[int, int, int], background: tuple[int, int, int], size: int, rng: np.random.Generator) -> PILImage.Image:
    """A product photo stand-in: `shape` in `color` at a random place and scale on `background`, plus noise."""
    image = PILImage.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    scale = rng.uniform(0.5, 0.8) * size
    x0, y0 = rng.uniform(0, size - scale, size=2)
    box = (x0, y0, x0 + scale, y0 + scale)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(x0, y0 + scale), (x0 + scale / 2, y0), (x0 + scale, y0 + scale)], fill=color)
    elif shape == "stripes":
        for offset in range(0, int(scale), max(2, size // 8)):
            draw.rectangle((x0 + offset, y0, x0 + offset + max(1, size // 16), y0 + scale), fill=color)
    elif shape == "bars":
        for offset in range(0, int(scale), max(2, size // 8)):
            draw.rectangle((x0, y0 + offset, x0 + scale, y0 + offset + max(1, size // 16)), fill=color)
    elif shape == "ring":
        draw.ellipse(box, outline=color, width=max(2, size // 10))
    elif shape == "diamond":
        draw.polygon([(x0 + scale / 2, y0), (x0 + scale, y0 + scale / 2), (x0 + scale / 2, y0 + scale), (x0, y0 + scale / 2)], fill=color)
    else:  # cross
        bar = scale / 4
        draw.rectangle((x0, y0 + scale / 2 - bar / 2, x0 + scale, y0 + scale / 2 + bar / 2), fill=color)
        draw.rectangle((x0 + scale / 2 - bar / 2, y0, x0 + scale / 2 + bar / 2, y0 + scale), fill=color)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, size=(size, size, 3))
    return PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@dataclass
class SyntheticRawSummary:
    """What the generator wrote, with the number of planted bad rows of each kind."""

    category: str
    items: int
    product_lines: int
    users: int
    reviews: int
    reviews_without_user: int
    unverified_reviews: int
    repeated_reviews: int
    single_purchase_users: int
    items_without_metadata: int
    blank_titles: int
    items_without_images: int
    missing_image_files: int
    non_image_files: int
    cut_off_images: int
    malformed_metadata_lines: int


def _asin(index: int) -> str:
    return f"B{index:09d}"


def generate_synthetic_raw(
    raw_dir: str | os.PathLike,
    category: str = "Electronics",
    num_bundles: int = 80,
    items_per_line: int = 6,
    shoppers_per_bundle: int = 400,
    cross_bundle_rate: float = 0.15,
    image_size: int = 64,
    noise_purchase_rate: float = 0.05,
    bad_row_rate: float = 0.01,
    compress: bool = False,
    num_eras: int = 1,
    seed: int = 0,
) -> SyntheticRawSummary:
    """Write `review_categories/<category>.jsonl`, `meta_categories/meta_<category>.jsonl`, `images/` and
    `synthetic_truth.jsonl` under `raw_dir` (see the module docstring for the model).

    Args:
        raw_dir: output folder (the release's `raw/` level).
        category: the file stem, as in the release (`Electronics`, `Video_Games`, ...).
        num_bundles: complement bundles; each holds one line of each of its department's three product types.
        items_per_line: items per product line.
        shoppers_per_bundle: shoppers who buy within each bundle.
        cross_bundle_rate: chance that a shopper also buys from the next bundle (links bundles, 3-hop pairs).
        image_size: side of the rendered images.
        noise_purchase_rate: chance that a shopper also buys one random item.
        bad_row_rate: share of items (and of reviews) turned into each kind of bad row.
        compress: gzip the two JSON-lines files, as the release does for large categories.
        num_eras: eras of the time dimension (see the module docstring); 1: no change over time.
        seed: everything is a function of it.

    Returns:
        A [`SyntheticRawSummary`].
    """
    if num_bundles < 1 or items_per_line < 1 or num_eras < 1:
        raise ValueError("num_bundles, items_per_line and num_eras must be >= 1.")
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    for folder in ("review_categories", "meta_categories", "images"):
        (raw_dir / folder).mkdir(parents=True, exist_ok=True)
    departments = list(DEPARTMENTS)
    lines_per_bundle = 3
    num_lines = num_bundles * lines_per_bundle
    num_items = num_lines * items_per_line

    # Lines: a bundle is one department's three product types (a phone, its case, its charger), so
    # co-purchase neighbours share the level-1 label but not the product type or the line.
    line_department = np.repeat(rng.integers(0, len(departments), size=num_bundles), lines_per_bundle)
    line_type = np.tile(np.arange(lines_per_bundle), num_bundles)
    line_brand = rng.integers(0, len(BRANDS), size=num_lines)
    line_series = rng.integers(0, len(SERIES), size=num_lines)
    line_shape = rng.integers(0, len(SHAPES), size=num_lines)
    item_line = np.repeat(np.arange(num_lines), items_per_line)
    color_names = list(COLORS)
    item_color = rng.integers(0, len(color_names), size=num_items)
    popularity = 1.0 / np.arange(1, items_per_line + 1) ** 0.5
    popularity /= popularity.sum()

    def pick(line: int) -> int:
        return int(line * items_per_line + rng.choice(items_per_line, p=popularity))

    # Eras: which lines are on sale when, and which lines make up a bundle (see the module docstring).
    launch, retire = np.zeros(num_lines, dtype=np.int64), np.full(num_lines, num_eras, dtype=np.int64)
    if num_eras > 1:
        order = rng.permutation(num_lines)
        late, early = order[: round(num_lines / 3)], order[round(num_lines / 3) : round(num_lines / 2)]
        launch[late] = rng.integers(1, num_eras, size=late.size)
        retire[early] = rng.integers(1, num_eras, size=early.size)

    def on_sale(lines, era: int):
        return (launch[lines] <= era) & (era < retire[lines])

    def bundle_lines(bundle: int, era: int) -> np.ndarray:
        """The lines (one per product type) of `bundle` in `era`."""
        types = np.arange(lines_per_bundle)
        return ((bundle + era * types) % num_bundles) * lines_per_bundle + types

    # Shoppers: one item from each of two or three lines of a bundle; sometimes one from the next bundle, or
    # a random item.
    baskets: list[list[int]] = []
    basket_eras: list[int] = []
    for bundle in range(num_bundles):
        for _ in range(shoppers_per_bundle):
            era = int(rng.integers(0, num_eras)) if num_eras > 1 else 0
            lines = bundle_lines(bundle, era)[rng.permutation(lines_per_bundle)[: 2 if rng.random() < 0.5 else 3]]
            lines = lines[on_sale(lines, era)]
            if lines.size < 2:
                continue
            basket_eras.append(era)
            basket = [pick(line) for line in lines]
            if rng.random() < cross_bundle_rate:
                line = int(bundle_lines((bundle + 1) % num_bundles, era)[int(rng.integers(0, lines_per_bundle))])
                if on_sale(line, era):
                    basket.append(pick(line))
            extra = int(rng.integers(0, num_items))
            if rng.random() < noise_purchase_rate and extra not in basket and on_sale(int(item_line[extra]), era):
                basket.append(extra)
            baskets.append(basket)
    num_bad = max(1, int(round(bad_row_rate * num_items)))
    # Items beyond the catalogue, each co-bought with one catalogue item by three shoppers (so it gets an edge):
    # the first `num_bad` have no metadata line, the last one a metadata line that is not valid JSON.
    extra_items = list(range(num_items, num_items + num_bad + 1))
    def item_on_sale_last() -> int:
        """A random catalogue item on sale in the last era (where the planted rows go)."""
        while not on_sale(int(item_line[item := int(rng.integers(0, num_items))]), num_eras - 1):
            pass
        return item

    for extra in extra_items:
        anchor = item_on_sale_last()
        baskets += [[anchor, extra] for _ in range(3)]
    single_users = max(1, int(round(bad_row_rate * len(baskets))))
    baskets += [[item_on_sale_last()] for _ in range(single_users)]
    basket_eras += [num_eras - 1] * (len(baskets) - len(basket_eras))  # planted rows: the last era

    reviews, repeated, unverified, without_user = _write_reviews(
        raw_dir, category, baskets, basket_eras, num_eras, bad_row_rate, compress, rng
    )

    # Metadata and images, with the planted bad rows.
    bad = rng.permutation(num_items)[: 5 * num_bad].reshape(5, num_bad)
    blank_title, no_images, missing_file, not_image, cut_off = (set(row.tolist()) for row in bad)
    meta_lines, truth_lines = [], []
    for item in tqdm(range(num_items), desc="synthetic items", leave=False):
        line = item_line[item]
        department = departments[line_department[line]]
        product_type = DEPARTMENTS[department][line_type[line]]
        color = color_names[item_color[item]]
        series = f"{SERIES[line_series[line]]}-{line:03d}"
        title = f"{BRANDS[line_brand[line]]} {series} {color} {product_type.lower()}, model {item % items_per_line + 1}"
        image_path = raw_dir / "images" / f"{_asin(item)}.jpg"
        if item in not_image:
            image_path.write_bytes(b"<html>this is not an image</html>")
        elif item not in missing_file and item not in no_images:
            image = render_product_image(
                SHAPES[line_shape[line]], COLORS[color], BACKGROUNDS[line_department[line]], image_size, rng
            )
            image.save(image_path, format="JPEG", quality=92)
            if item in cut_off:
                image_path.write_bytes(image_path.read_bytes()[:200])
        url = image_path.resolve().as_uri()
        images = [] if item in no_images else [{"thumb": url, "large": url, "variant": "MAIN", "hi_res": None}]
        meta = {
            "main_category": "All Electronics",
            "title": "   " if item in blank_title else title,
            "average_rating": round(float(rng.uniform(3, 5)), 1),
            "rating_number": int(rng.integers(1, 500)),
            "features": [f"{color} finish", f"{series} series", f"fits {product_type.lower()} setups"],
            "description": [f"The {series} {product_type.lower()} by {BRANDS[line_brand[line]]}, in {color}."],
            "price": None if rng.random() < 0.3 else round(float(rng.uniform(5, 500)), 2),
            "images": images,
            "videos": [],
            "store": BRANDS[line_brand[line]].capitalize(),
            "categories": [category.replace("_", " "), department, product_type],
            "details": {"Brand": BRANDS[line_brand[line]], "Color": color, "Series": series},
            "parent_asin": _asin(item),
            "bought_together": None,
        }
        meta_lines.append(json.dumps(meta))
        truth = {"parent_asin": _asin(item), "product_line": int(line), "bundle": int(line // lines_per_bundle)}
        if num_eras > 1:
            truth.update(launch_era=int(launch[line]), retire_era=int(retire[line]))
        truth_lines.append(json.dumps(truth))
    meta_lines.insert(len(meta_lines) // 2, f'{{"parent_asin": "{_asin(extra_items[-1])}", "title": "broken line", ')
    _write_lines(raw_dir / "meta_categories" / f"meta_{category}.jsonl", meta_lines, compress)
    (raw_dir / "synthetic_truth.jsonl").write_text("\n".join(truth_lines) + "\n")

    return SyntheticRawSummary(
        category=category,
        items=num_items,
        product_lines=num_lines,
        users=len(baskets),
        reviews=reviews,
        reviews_without_user=without_user,
        unverified_reviews=unverified,
        repeated_reviews=repeated,
        single_purchase_users=single_users,
        items_without_metadata=num_bad,
        blank_titles=len(blank_title),
        items_without_images=len(no_images),
        missing_image_files=len(missing_file),
        non_image_files=len(not_image),
        cut_off_images=len(cut_off),
        malformed_metadata_lines=1,
    )


def _write_lines(path: Path, lines: list[str], compress: bool) -> Path:
    if compress:
        path = path.with_suffix(path.suffix + ".gz")
        with gzip.open(path, "wt") as handle:
            handle.write("\n".join(lines) + "\n")
    else:
        path.write_text("\n".join(lines) + "\n")
    return path


def _write_reviews(
    raw_dir: Path, category: str, baskets: list[list[int]], basket_eras: list[int], num_eras: int, bad_row_rate: float,
    compress: bool, rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """One review per purchase (two for a planted repeat), plus reviews without a user; a basket starts at a
    random time of its era (three years cut into `num_eras`). Returns the counts of reviews, repeats,
    unverified reviews among the rows with a user, and rows without a user."""
    lines, repeated, unverified, without_user = [], 0, 0, 0
    start, era_length = 1_600_000_000_000, 3 * 365 * 86_400_000 // num_eras
    for user, (basket, era) in enumerate(zip(baskets, basket_eras)):
        when = start + era * era_length + int(rng.integers(0, era_length))
        for item in basket:
            when += int(rng.integers(60_000, 30 * 86_400_000))
            verified = bool(rng.random() >= bad_row_rate)
            unverified += not verified
            review = {
                "rating": float(rng.integers(1, 6)),
                "title": "Works as described",
                "text": "Bought this together with the rest of my setup.",
                "images": [],
                "asin": _asin(item),
                "parent_asin": _asin(item),
                "user_id": f"U{user:08d}",
                "timestamp": when,
                "helpful_vote": int(rng.integers(0, 10)),
                "verified_purchase": verified,
            }
            lines.append(json.dumps(review))
            if rng.random() < bad_row_rate:
                repeated += 1
                unverified += not verified
                lines.append(json.dumps({**review, "timestamp": when + 86_400_000, "text": "Second review."}))
            if rng.random() < bad_row_rate:
                without_user += 1
                lines.append(json.dumps({**review, "user_id": None}))
    _write_lines(raw_dir / "review_categories" / f"{category}.jsonl", lines, compress)
    return len(lines), repeated, unverified, without_user


def load_synthetic_truth(raw_dir: str | os.PathLike) -> dict[str, int] | None:
    """`parent_asin -> product_line` from `synthetic_truth.jsonl`, or `None` when `raw_dir` has none."""
    path = Path(raw_dir) / "synthetic_truth.jsonl"
    if not path.exists():
        return None
    with open(path) as handle:
        return {record["parent_asin"]: record["product_line"] for record in map(json.loads, handle)}


def write_power_law_reviews(
    path: str | os.PathLike,
    num_reviews: int,
    num_items: int | None = None,
    user_exponent: float = 2.5,
    item_exponent: float = 2.0,
    max_user_degree: int = 2000,
    seed: int = 0,
    chunk: int = 500_000,
) -> dict[str, int]:
    """Reviews in the Amazon 2023 schema with power-law user activity and item popularity (benchmarks).

    User activity follows a discrete power law P(d) ~ d^-user_exponent, capped at `max_user_degree` (a few
    users review hundreds of items, most one or two); each review's item follows a Zipf law with
    P(popularity >= x) ~ x^-(item_exponent - 1) over `num_items` (default `num_reviews // 10`) items. Review texts
    (~180 characters) come from a fixed pool, so writing is fast.

    Returns:
        `{"reviews", "users", "items"}`.
    """
    rng = np.random.default_rng(seed)
    num_items = num_items or max(10, num_reviews // 10)
    item_weights = 1.0 / np.arange(1, num_items + 1) ** (1.0 / (item_exponent - 1.0))
    item_weights /= item_weights.sum()
    item_permutation = rng.permutation(num_items)
    words = np.array("great good fine sound battery cable fits works fast slow price quality returned love".split())
    texts = [" ".join(words[rng.integers(0, words.size, size=30)]) for _ in range(1000)]
    written, user = 0, 0
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as handle, tqdm(total=num_reviews, unit=" reviews", unit_scale=True, desc="write reviews", leave=False) as bar:
        while written < num_reviews:
            size = min(chunk, num_reviews - written)
            degrees = np.minimum(np.floor(rng.pareto(user_exponent - 1.0, size=size) + 1).astype(np.int64), max_user_degree)
            degrees = degrees[np.cumsum(degrees) <= size]
            if degrees.size == 0:
                degrees = np.array([size])
            users = np.repeat(np.arange(user, user + degrees.size), degrees)
            user += degrees.size
            items = item_permutation[rng.choice(num_items, size=users.size, p=item_weights)]
            times = 1_400_000_000_000 + rng.integers(0, 9 * 365 * 86_400_000, size=users.size)
            verified = rng.random(users.size) < 0.9
            ratings = rng.integers(1, 6, users.size)
            text_ids = rng.integers(0, len(texts), users.size)
            handle.writelines(
                f'{{"rating": {r}.0, "title": "Review", "text": "{texts[x]}", "images": [], '
                f'"asin": "{_asin(i)}", "parent_asin": "{_asin(i)}", "user_id": "U{u:010d}", "timestamp": {ts}, '
                f'"helpful_vote": 0, "verified_purchase": {"true" if v else "false"}}}\n'
                for r, x, i, u, ts, v in zip(ratings.tolist(), text_ids.tolist(), items.tolist(), users.tolist(), times.tolist(), verified.tolist())
            )
            written += users.size
            bar.update(users.size)
    return {"reviews": written, "users": user, "items": num_items}


def write_power_law_meta(path: str | os.PathLike, num_items: int, category: str = "Electronics", seed: int = 0) -> None:
    """Metadata lines for the items of [`write_power_law_reviews`] (titles, an image URL, a category path)."""
    rng = np.random.default_rng(seed)
    departments = list(DEPARTMENTS)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as handle:
        for item in tqdm(range(num_items), desc="write meta", leave=False):
            department = departments[item % len(departments)]
            kind = DEPARTMENTS[department][int(rng.integers(0, 3))]
            url = f"https://example.invalid/{_asin(item)}.jpg"
            handle.write(
                json.dumps(
                    {
                        "main_category": "All Electronics",
                        "title": f"{kind} {item}",
                        "images": [{"thumb": url, "large": url, "variant": "MAIN", "hi_res": None}],
                        "categories": [category, department, kind],
                        "description": [],
                        "features": [],
                        "parent_asin": _asin(item),
                    }
                )
                + "\n"
            )


def summary_table(summary: SyntheticRawSummary) -> str:
    """The summary as a two-column markdown table."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in asdict(summary).items())
    return "| what | count |\n|---|---:|\n" + rows


__all__ = [
    "DEPARTMENTS",
    "SyntheticRawSummary",
    "generate_synthetic_raw",
    "load_synthetic_truth",
    "render_product_image",
    "summary_table",
    "write_power_law_meta",
    "write_power_law_reviews",
]
