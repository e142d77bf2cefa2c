"""An Omniglot-like few-shot dataset rendered from real fonts (Debian `fonts-noto-core`).

Each writing system is an alphabet, each letter a class, and each class has 20
instances (as in Omniglot), every one the letter's glyph with its own seeded random
distortion: stroke thickness (erode/dilate), a smooth elastic warp (the wobble of a hand),
then an affine transform (rotation, shear, scale, aspect, translation). Black on white,
grayscale, 28x28 (and optionally 84x84).

How the letters are chosen (all from the installed fonts, nothing downloaded):
- fonts: every `Noto*-Regular.ttf` under /usr/share/fonts/truetype/noto/; the letters a
  font actually has a glyph for come from its cmap (fontTools);
- a letter is a code point of Unicode category L* without a canonical decomposition
  (no precomposed accented forms) whose name reads `<SCRIPT> [CAPITAL|SMALL] LETTER|
  SYLLABLE|SYLLABICS|CHARACTER ...`; the script is the part before that word;
- one font per script: the one that covers most of its letters (NotoSans before
  NotoSerif on ties); for a cased script the capitals are dropped (one case, as in
  Omniglot); only the script's first 128-code-point page with at least 14 letters is
  kept, its core block (Latin a-z, Greek alpha-omega, basic Arabic; not the IPA,
  archaic or extension blocks);
- a letter must render with ink and differ from every other letter of its alphabet
  once rendered (identical bitmaps are dropped);
- scripts with fewer than `min_letters` letters are dropped; of the rest,
  `max_alphabets` are chosen (seeded), and at most `max_letters` letters per alphabet
  (seeded choice, kept in code-point order).
The alphabets are split (seeded) into disjoint meta-train / meta-val / meta-test sets.

Layout of a built dataset (reused when complete: `.complete.json` records the parameters):
    <root>/<key>/manifest.json                       alphabets -> classes, splits, fonts, parameters
    <root>/<key>/images<size>/<Alphabet>__U<hex>/NN.png
    <root>/<key>/arrays<size>.npz                    decoded uint8 images + labels (made on first load)

    .venv/bin/python bench/fonts_dataset.py                  # build (about 3 min on 2 cores, once), print a summary
    .venv/bin/python bench/fonts_dataset.py --sizes 28 84    # also 84x84
    .venv/bin/python bench/fonts_dataset.py --preview /tmp/fonts_preview.png   # a contact sheet

Needs `fonts-noto-core` (`make bench-data`), Pillow, fontTools, numpy and scipy (all in
the project's environment).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

import numpy as np

FONT_DIR = Path("/usr/share/fonts/truetype/noto")
DEFAULT_ROOT = Path("/tmp/metatune-bench/fonts")
DATA_VERSION = 1
MASTER = 112  # working resolution: 4 x 28; every instance is drawn here, then downsampled
GLYPH_BOX = 0.68  # the glyph's longer side fills this share of the master canvas (before distortion)
MAX_UPSCALE = 1.6  # small glyphs (dots, short marks) grow at most this much past the reference size
RENDER_PT = 64  # font size of the reference rendering
NAME_WORDS = (" LETTER ", " SYLLABLE ", " SYLLABICS ", " CHARACTER ")
NOT_SCRIPTS = {"MODIFIER"}  # "MODIFIER LETTER ...": phonetic marks, not a writing system
MIN_PAGE_LETTERS = 14
SPLITS = ("meta_train", "meta_val", "meta_test")
DEFAULTS = {
    "instances": 20, "max_alphabets": 50, "min_letters": 14, "max_letters": 40, "seed": 0,
    "split_fractions": (0.6, 0.1, 0.3), "sizes": (28,),
    # distortion (units: fraction of the canvas / degrees)
    "rotation_deg": 12.0, "shear": 0.2, "scale": (0.85, 1.1), "aspect": (0.9, 1.1), "translate": 0.07,
    "elastic_px": 3.0, "elastic_grid": 5,
}


def font_preference(path: Path) -> tuple:
    """Sort key: NotoSans<Script> first, then NotoSerif, then the rest (Looped, Kufi, Rashi...)."""
    stem = path.stem
    rank = 0 if stem.startswith("NotoSans") else 1 if stem.startswith("NotoSerif") else 2
    return (rank, stem)


def script_of(name: str) -> tuple[str, str] | None:
    """('ARMENIAN', 'SMALL') for 'ARMENIAN SMALL LETTER AYB'; None if the name is not a letter's."""
    for word in NAME_WORDS:
        if word in name:
            head = name.split(word)[0]
            case = ""
            match = re.search(r" (MTAVRULI CAPITAL|CAPITAL|SMALL)$", head)
            if match:
                case = "SMALL" if match.group(1) == "SMALL" else "CAPITAL"
                head = head[:match.start()]
            return head, case
    return None


def alphabet_name(script: str) -> str:
    return "_".join(part.capitalize() for part in re.split(r"[ -]+", script))


def discover_scripts(font_dir: Path = FONT_DIR) -> dict[str, dict]:
    """script -> {"font": path, "codepoints": [...]} after the cmap, case and page rules."""
    from fontTools.ttLib import TTFont

    fonts = sorted(font_dir.glob("Noto*-Regular.ttf"), key=font_preference)
    if not fonts:
        raise SystemExit(f"No Noto fonts under {font_dir}. Install them: `make bench-data` "
                         "(apt-get install -y fonts-noto-core).")
    coverage: dict[str, dict[Path, list[tuple[int, str]]]] = defaultdict(dict)
    for path in fonts:
        cmap = TTFont(str(path), lazy=True)["cmap"].getBestCmap() or {}
        found = defaultdict(list)
        for cp in cmap:
            char = chr(cp)
            if not unicodedata.category(char).startswith("L") or unicodedata.decomposition(char):
                continue
            parsed = script_of(unicodedata.name(char, ""))
            if parsed and parsed[0] not in NOT_SCRIPTS:
                found[parsed[0]].append((cp, parsed[1]))
        for script, letters in found.items():
            coverage[script][path] = letters
    scripts = {}
    for script, by_font in coverage.items():
        # Most letters wins; sorted() is stable, so ties keep the font preference order.
        path = max(sorted(by_font, key=font_preference), key=lambda p: len(by_font[p]))
        letters = by_font[path]
        if any(case == "SMALL" for _, case in letters):
            letters = [(cp, case) for cp, case in letters if case != "CAPITAL"]
        pages = defaultdict(list)
        for cp, _ in letters:
            pages[cp >> 7].append(cp)
        # The script's first page with enough letters is its core block (Latin a-z rather than
        # Latin Extended-B, basic Arabic rather than its extensions); else the densest page.
        enough = [p for p in sorted(pages) if len(pages[p]) >= MIN_PAGE_LETTERS]
        page = enough[0] if enough else max(sorted(pages), key=lambda p: len(pages[p]))
        scripts[script] = {"font": str(path), "codepoints": sorted(pages[page])}
    return scripts


# ------------------------------------------------------------------------- rendering
def reference_glyph(font, char: str) -> np.ndarray | None:
    """The glyph scaled into the master canvas: float32 ink in [0, 1] (1 = ink), or None if blank."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (RENDER_PT * 4, RENDER_PT * 4), 0)
    ImageDraw.Draw(canvas).text((RENDER_PT * 2, RENDER_PT * 2), char, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    if np.asarray(glyph, dtype=np.float32).sum() / 255.0 < 12:  # a few stray pixels: no real glyph
        return None
    width, height = glyph.size
    target = GLYPH_BOX * MASTER
    scale = min(target / width, target / height, MAX_UPSCALE * target / RENDER_PT)
    glyph = glyph.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.LANCZOS)
    master = Image.new("L", (MASTER, MASTER), 0)
    master.paste(glyph, ((MASTER - glyph.size[0]) // 2, (MASTER - glyph.size[1]) // 2))
    return np.asarray(master, dtype=np.float32) / 255.0


def glyph_signature(ink: np.ndarray) -> bytes:
    """Coarse bitmap (28x28, thresholded) for spotting letters that render identically."""
    small = ink.reshape(28, MASTER // 28, 28, MASTER // 28).mean(axis=(1, 3))
    return np.packbits(small > 0.35).tobytes()


def distort(ink: np.ndarray, rng: np.random.Generator, params: dict) -> np.ndarray:
    """One instance: stroke thickness, elastic warp and affine transform of the master ink image."""
    from PIL import Image, ImageFilter
    from scipy import ndimage

    # Stroke: dilate or erode the ink (MaxFilter grows ink, which is white here).
    stroke = rng.choice(["thin", "none", "bold", "bolder"], p=[0.2, 0.3, 0.3, 0.2])
    if stroke != "none":
        image = Image.fromarray(np.uint8(np.round(ink * 255)))
        filtered = {"thin": ImageFilter.MinFilter(3), "bold": ImageFilter.MaxFilter(3),
                    "bolder": ImageFilter.MaxFilter(5)}[stroke]
        candidate = np.asarray(image.filter(filtered), dtype=np.float32) / 255.0
        # Thinning must not erase hairlines: keep it only if most of the ink survives.
        if stroke != "thin" or candidate.sum() > 0.45 * ink.sum():
            ink = candidate

    # Coordinates: output pixel -> input pixel = affine^-1(output) + a smooth random displacement.
    n = MASTER
    centre = (n - 1) / 2.0
    angle = np.deg2rad(rng.uniform(-params["rotation_deg"], params["rotation_deg"]))
    shear = rng.uniform(-params["shear"], params["shear"])
    scale = rng.uniform(*params["scale"])
    aspect = rng.uniform(*params["aspect"])
    shift = rng.uniform(-params["translate"], params["translate"], size=2) * n
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale * aspect, scale / aspect])
    inverse = np.linalg.inv(forward)  # acting on (y, x) offsets from the centre
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    offsets = np.stack([yy - centre - shift[0], xx - centre - shift[1]])  # [2, n, n]
    source = np.einsum("ij,jhw->ihw", inverse, offsets) + centre
    grid = params["elastic_grid"]
    if params["elastic_px"] > 0:
        coarse = rng.normal(0.0, params["elastic_px"], size=(2, grid, grid))
        field = np.stack([ndimage.zoom(c, n / grid, order=3) for c in coarse])[:, :n, :n]
        source = source + field
    warped = ndimage.map_coordinates(ink, source, order=1, mode="constant", cval=0.0)
    return np.clip(warped, 0.0, 1.0)


def to_png_sizes(ink: np.ndarray, sizes) -> dict:
    """Black on white uint8 PIL images at each size (area downsampling = anti-aliasing)."""
    from PIL import Image

    image = Image.fromarray(np.uint8(np.round(255.0 * (1.0 - ink))))
    return {size: image.resize((size, size), Image.BOX if MASTER % size == 0 else Image.LANCZOS) for size in sizes}


def _render_alphabet(job: tuple) -> tuple[str, int]:
    """Worker: all instances of one alphabet's letters (own seeded generator per instance)."""
    from PIL import ImageFont

    alphabet, font_path, letters, out_dir, params = job
    font = ImageFont.truetype(font_path, RENDER_PT)
    count = 0
    for cp in letters:
        ink = reference_glyph(font, chr(cp))
        class_name = f"{alphabet}__U{cp:04X}"
        for instance in range(params["instances"]):
            rng = np.random.default_rng([params["seed"], cp, instance, DATA_VERSION])
            images = to_png_sizes(distort(ink, rng, params), params["sizes"])
            for size, image in images.items():
                folder = Path(out_dir) / f"images{size}" / class_name
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{instance:02d}.png", optimize=False)
            count += 1
    return alphabet, count


# ---------------------------------------------------------------------- the dataset
def dataset_key(params: dict) -> str:
    payload = json.dumps({k: params[k] for k in sorted(params) if k != "sizes"} | {"version": DATA_VERSION},
                         sort_keys=True, default=list)
    return f"v{DATA_VERSION}-" + hashlib.sha256(payload.encode()).hexdigest()[:10]


def choose_letters(scripts: dict, params: dict) -> dict[str, dict]:
    """alphabet -> {"script", "font", "codepoints"}: renderable, distinct letters; seeded choices."""
    from PIL import ImageFont

    rng = np.random.default_rng([params["seed"], 1])
    chosen = {}
    for script in sorted(scripts):
        info = scripts[script]
        if len(info["codepoints"]) < params["min_letters"]:
            continue
        font = ImageFont.truetype(info["font"], RENDER_PT)
        seen, letters = set(), []
        for cp in info["codepoints"]:
            ink = reference_glyph(font, chr(cp))
            if ink is None:
                continue
            signature = glyph_signature(ink)
            if signature in seen:
                continue
            seen.add(signature)
            letters.append(cp)
        if len(letters) >= params["min_letters"]:
            chosen[alphabet_name(script)] = {"script": script, "font": info["font"], "codepoints": letters}
    names = sorted(chosen)
    if len(names) > params["max_alphabets"]:
        names = sorted(rng.choice(names, size=params["max_alphabets"], replace=False).tolist())
    result = {}
    for name in names:
        letters = chosen[name]["codepoints"]
        if len(letters) > params["max_letters"]:
            letters = sorted(rng.choice(letters, size=params["max_letters"], replace=False).tolist())
        result[name] = chosen[name] | {"codepoints": [int(cp) for cp in letters]}
    return result


def split_alphabets(names: list[str], fractions, seed: int) -> dict[str, list[str]]:
    """Seeded, disjoint meta_train / meta_val / meta_test alphabets (each at least one)."""
    order = np.random.default_rng([seed, 2]).permutation(sorted(names)).tolist()
    n = len(order)
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    return {"meta_train": sorted(order[n_val + n_test:]), "meta_val": sorted(order[:n_val]),
            "meta_test": sorted(order[n_val:n_val + n_test])}


def build_dataset(root: Path | str = DEFAULT_ROOT, workers: int | None = None, verbose: bool = True,
                  **overrides) -> Path:
    """Render the dataset (or reuse a complete one with the same parameters); returns its folder."""
    params = dict(DEFAULTS) | overrides
    params["sizes"] = tuple(sorted(int(s) for s in params["sizes"]))
    params["split_fractions"] = tuple(float(f) for f in params["split_fractions"])
    folder = Path(root) / dataset_key(params)
    marker = folder / ".complete.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        missing = [s for s in params["sizes"] if s not in done.get("sizes", [])]
        if not missing:
            return folder
        params_to_render = params | {"sizes": tuple(missing)}
    else:
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted build
        params_to_render = params
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    scripts = discover_scripts()
    alphabets = choose_letters(scripts, params)
    splits = split_alphabets(list(alphabets), params["split_fractions"], params["seed"])
    jobs = [(name, info["font"], info["codepoints"], str(folder), params_to_render) for name, info in alphabets.items()]
    # Largest alphabets first so the pool's last jobs are short.
    jobs.sort(key=lambda job: -len(job[2]))
    workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        total = sum(count for _, count in pool.imap_unordered(_render_alphabet, jobs))
    manifest = {
        "version": DATA_VERSION,
        "source": "Debian fonts-noto-core, " + str(FONT_DIR),
        "params": params,
        "instances_per_class": params["instances"],
        "splits": splits,
        "split_seed": params["seed"],
        "alphabets": {name: {
            "script": info["script"], "font": Path(info["font"]).name,
            "classes": [f"{name}__U{cp:04X}" for cp in info["codepoints"]],
            "letters": "".join(chr(cp) for cp in info["codepoints"]),
        } for name, info in alphabets.items()},
        "num_alphabets": len(alphabets),
        "num_classes": sum(len(info["codepoints"]) for info in alphabets.values()),
        "num_images": sum(len(info["codepoints"]) for info in alphabets.values()) * params["instances"],
        "split_classes": {s: sum(len(alphabets[a]["codepoints"]) for a in splits[s]) for s in SPLITS},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    marker.write_text(json.dumps({"sizes": list(params["sizes"]), "images_rendered": total,
                                  "seconds": round(time.perf_counter() - started, 1)}))
    if verbose:
        print(f"rendered {total} instances x {len(params_to_render['sizes'])} size(s) of {manifest['num_classes']} "
              f"letters from {len(alphabets)} alphabets in {time.perf_counter() - started:.0f} s -> {folder}",
              file=sys.stderr)
    return folder


def read_manifest(folder: Path | str) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def load_arrays(folder: Path | str, size: int = 28) -> dict:
    """All images decoded once: {"images": uint8 [n, size, size], "labels": int32 [n] (class ids),
    "class_names": [...], "class_alphabet": [...], "split_of_class": [...]}.

    Classes are in manifest order (alphabet, then code point); the decoded arrays are
    cached next to the PNGs (`arrays<size>.npz`).
    """
    from PIL import Image

    folder = Path(folder)
    manifest = read_manifest(folder)
    class_names, class_alphabet, split_of_class = [], [], []
    split_of = {a: s for s, names in manifest["splits"].items() for a in names}
    for alphabet in sorted(manifest["alphabets"]):
        for name in manifest["alphabets"][alphabet]["classes"]:
            class_names.append(name)
            class_alphabet.append(alphabet)
            split_of_class.append(split_of[alphabet])
    cache = folder / f"arrays{size}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            images, labels = data["images"], data["labels"]
    else:
        instances = manifest["instances_per_class"]
        images = np.empty((len(class_names) * instances, size, size), np.uint8)
        labels = np.repeat(np.arange(len(class_names), dtype=np.int32), instances)
        for c, name in enumerate(class_names):
            for i in range(instances):
                with Image.open(folder / f"images{size}" / name / f"{i:02d}.png") as image:
                    images[c * instances + i] = np.asarray(image.convert("L"))
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, cache)
    return {"images": images, "labels": labels, "class_names": class_names, "class_alphabet": class_alphabet,
            "split_of_class": split_of_class}


def preview(folder: Path, out: Path, per_alphabet: int = 6, instances: int = 6, size: int = 28) -> None:
    """Contact sheet: for each alphabet, `per_alphabet` letters x `instances` instances."""
    from PIL import Image

    manifest = read_manifest(folder)
    names = sorted(manifest["alphabets"])
    cell = size + 2
    sheet = Image.new("L", (cell * per_alphabet * instances // 2, cell * len(names) * 2), 128)
    for row, alphabet in enumerate(names):
        classes = manifest["alphabets"][alphabet]["classes"][:per_alphabet]
        for j, name in enumerate(classes):
            for i in range(instances):
                with Image.open(folder / f"images{size}" / name / f"{i:02d}.png") as image:
                    k = j * instances + i
                    x, y = (k % (per_alphabet * instances // 2)) * cell, (row * 2 + k // (per_alphabet * instances // 2)) * cell
                    sheet.paste(image, (x, y))
    sheet.save(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="cache folder (default %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULTS["sizes"]), help="image sizes (28, 84)")
    parser.add_argument("--max-alphabets", type=int, default=DEFAULTS["max_alphabets"])
    parser.add_argument("--max-letters", type=int, default=DEFAULTS["max_letters"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--preview", default=None, help="write a contact sheet PNG here")
    args = parser.parse_args(argv)
    folder = build_dataset(args.root, workers=args.workers, sizes=tuple(args.sizes), max_alphabets=args.max_alphabets,
                           max_letters=args.max_letters, seed=args.seed)
    manifest = read_manifest(folder)
    print(f"{folder}: {manifest['num_alphabets']} alphabets, {manifest['num_classes']} classes, "
          f"{manifest['num_images']} images per size")
    for split in SPLITS:
        print(f"  {split}: {len(manifest['splits'][split])} alphabets, {manifest['split_classes'][split]} classes: "
              + ", ".join(manifest["splits"][split]))
    if args.preview:
        preview(folder, Path(args.preview))
        print(f"preview -> {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
