"""Hostile images against nvp_core.images: each is converted as documented or refused with one ImageError;
nothing hangs, nothing leaks a warning, and memory stays bounded on bombs and huge declared sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hostile import Case, by_name, corpus
from PIL import Image

from nvp_core.images import MAX_SIDE, ImageError, load_image, to_array

ROOT = Path(__file__).resolve().parents[1]
CASES = corpus()
IDS = [c.name for c in CASES]


def _outcome(source: bytes | Path) -> tuple[str, object]:
    """("ok", (mode, size, pixels)) or ("error", message)."""
    try:
        img = load_image(source)
    except ImageError as e:
        return "error", str(e)
    return "ok", (img.mode, img.size, np.asarray(img).tobytes())


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("error")  # a RuntimeWarning from a conversion is a bug too
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_hostile_image_converts_or_gives_one_clear_error(case: Case) -> None:
    if case.expect == "error":
        with pytest.raises(ImageError) as info:
            load_image(case.data)
        msg = str(info.value)
        assert msg and "\n" not in msg and "Traceback" not in msg, msg
        return
    img = load_image(case.data)
    assert img.mode in ("L", "RGB")
    assert case.check is not None
    case.check(img)
    for channels in (1, 3):
        for size in (8, 28):
            arr = to_array(img, channels, size)
            assert arr.shape == (channels, size, size) and arr.dtype == np.uint8 and arr.flags.c_contiguous
            assert (to_array(img, channels, size, invert=True) == 255 - arr).all()


@pytest.mark.timeout(60)
def test_the_file_name_never_matters(tmp_path: Path) -> None:
    """Decoding goes by content: bytes and a file named with the (possibly lying) suffix give the same result."""
    for case in CASES:
        path = tmp_path / case.filename
        path.write_bytes(case.data)
        kind, value = _outcome(path)
        assert kind == case.expect, f"{case.name}: {kind} {value if kind == 'error' else ''}"
        assert (kind, value) == _outcome(case.data), case.name


def test_exif_rotation_and_animation_are_applied() -> None:
    """Spelled out because they are silent when wrong: a phone photo must not come out sideways."""
    img = load_image(by_name("exif_rotated_jpeg").data)
    arr = to_array(img, 1, 8)[0].astype(int)
    assert arr[:4].mean() < 60 < 190 < arr[4:].mean()  # the dark half is on top after rotation
    first = to_array(load_image(by_name("animated_gif").data), 3, 4)
    assert (first[2] == 255).all() and (first[:2] == 0).all()  # frame 0 is blue


@pytest.mark.timeout(60)
def test_concurrent_decoding_matches_serial() -> None:
    """The app decodes uploads from several sessions' threads at once: same results as one at a time."""
    serial = [_outcome(c.data) for c in CASES]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            assert list(pool.map(lambda c: _outcome(c.data), CASES)) == serial


@pytest.mark.parametrize("action", ["default", "error", "ignore"])
def test_bombs_are_refused_whatever_the_warning_filters_and_the_filters_are_left_alone(action: str) -> None:
    """100 megapixels is between Pillow's warning and error limits: refused by our header check whether the
    caller's filters print, raise or ignore warnings; and decoding never edits the process-wide filters
    (``warnings.catch_warnings`` does, which races when several sessions decode at once)."""
    import warnings

    from hostile import _png_1bit

    bomb = _png_1bit(10_000, 10_000, rows=8)
    with warnings.catch_warnings():
        warnings.simplefilter(action)
        before = list(warnings.filters)
        with pytest.raises(ImageError, match="pixels"):
            load_image(bomb)
        with ThreadPoolExecutor(max_workers=4) as pool:
            outcomes = list(pool.map(lambda _: _outcome(bomb)[0], range(8)))
        assert outcomes == ["error"] * 8
        assert warnings.filters == before


def test_large_images_are_reduced_with_their_aspect() -> None:
    wide = Image.new("L", (MAX_SIDE * 2 + 10, 40), 200)
    from io import BytesIO

    buf = BytesIO()
    wide.save(buf, "PNG")
    img = load_image(buf.getvalue())
    assert max(img.size) == MAX_SIDE and img.size[1] == round(40 * MAX_SIDE / wide.size[0])
    assert np.asarray(img).min() >= 199


_PROBE = """
import importlib.util, json, resource, sys
from pathlib import Path
# nvp_core.images alone (numpy + Pillow), without the package's torch import: a lean, fast interpreter.
spec = importlib.util.spec_from_file_location("images", Path("nvp_core") / "images.py")
images = importlib.util.module_from_spec(spec)
spec.loader.exec_module(images)
ImageError, load_image, to_array = images.ImageError, images.load_image, images.to_array
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base, out = peak(), {}
for p in sys.argv[1:]:
    try:
        to_array(load_image(Path(p)), 3, 28); out[p] = "ok"
    except ImageError as e:
        out[p] = "error"
out["_delta_mb"] = peak() - base
print(json.dumps(out))
"""


def _peak_delta(paths: list[Path]) -> dict[str, object]:
    """Decodes ``paths`` in a fresh interpreter; returns outcomes and the growth of its peak RSS (MB)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, paths)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(150)
def test_bombs_and_huge_declared_sizes_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    heavy = [c for c in CASES if c.heavy]
    assert len(heavy) >= 5
    paths = []
    for c in heavy:
        paths.append(tmp_path / f"{c.name}_{c.filename}")
        paths[-1].write_bytes(c.data)
    result = _peak_delta(paths)
    assert all(result[str(p)] == "error" for p in paths), result
    # Decoding any of them would take 0.4–10 GB; refusing from the header takes next to nothing.
    assert result["_delta_mb"] < 64, result


@pytest.mark.timeout(150)
def test_an_image_just_under_the_pixel_limit_decodes_in_bounded_memory(tmp_path: Path) -> None:
    # 36 megapixels of RGBA (the costliest mode: alpha is composited): 144 MB decoded. Without the
    # early reduction to MAX_SIDE, the conversions held ~690 MB at once (435 MB with it).
    path = tmp_path / "big_rgba.png"
    Image.new("RGBA", (6000, 6000), (0, 0, 0, 0)).save(path, compress_level=1)
    result = _peak_delta([path])
    assert result[str(path)] == "ok", result
    assert result["_delta_mb"] < 560, result


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore")  # Pillow warns about the corrupt metadata it skips, by design
def test_mutated_images_only_ever_raise_image_error() -> None:
    """A small deterministic fuzz: byte flips, deletions and insertions in every decodable case of the corpus.
    (It found Pillow raising TypeError and IndexError from corrupt TIFF and GIF frames.)"""
    rng = np.random.default_rng(0)
    seeds = [c.data for c in CASES if c.expect == "ok"]
    escaped = []
    for _ in range(3000):
        data = bytearray(seeds[rng.integers(len(seeds))])
        for _ in range(rng.integers(1, 6)):
            op, i = rng.integers(3), int(rng.integers(max(1, len(data))))
            if op == 0 and i < len(data):
                data[i] = rng.integers(256)
            elif op == 1:
                del data[i : i + rng.integers(1, 16)]
            else:
                data[i:i] = rng.integers(0, 256, rng.integers(1, 8), dtype=np.uint8).tobytes()
        try:
            img = load_image(bytes(data))
            to_array(img, 3, 8)
        except ImageError:
            pass
        except Exception as e:  # noqa: BLE001 - the point of the test
            escaped.append(f"{type(e).__name__}: {e}")
    assert not escaped, escaped[:5]
