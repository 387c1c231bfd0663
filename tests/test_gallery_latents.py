"""nvp_core.gallery_latents: the gallery's latents and bits/dim, computed once and kept in a keyed file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import make_fixture_model

from app import compute
from nvp_core import gallery_latents as gla
from nvp_core import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("latents")
    ckpt = make_fixture_model(folder, "grey8", 1, 8, 2)
    return ckpt, folder / "grey8.gallery.npz"


def _gallery(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as g:
        return g["images"], g["labels"]


def test_the_file_holds_what_the_app_computes_and_serves_any_prefix(fixture, tmp_path: Path) -> None:
    ckpt, gallery = fixture
    model, _ = load_model(ckpt)
    images, labels = _gallery(gallery)
    gl = gla.compute(model, images, labels)
    zs, bpd = compute.encode_with_bpd(model, images)  # the app's own functions, image by image the same
    np.testing.assert_array_equal(gl.bpd, bpd)
    for a, b in zip(gl.levels, zs, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    i = 5  # what Encode shows for one image: its bits/dim and terms, as computed for it alone
    bpd_i, parts_i = gl.bits(i)
    want_bpd, want_parts = compute.bits_per_dim_and_breakdown(model, images[i], i)
    assert bpd_i == pytest.approx(want_bpd, abs=1e-5) and list(parts_i) == list(want_parts)
    assert parts_i == pytest.approx(want_parts, abs=1e-5) and sum(parts_i.values()) == pytest.approx(bpd_i, abs=1e-4)
    fewer = gla.compute(model, images, labels, latents=9)  # the latents of 9 images, the bits/dim of all
    assert fewer.encoded == 9 and len(fewer) == len(images) and np.array_equal(fewer.bpd, gl.bpd)
    with pytest.raises(ValueError):
        fewer.head(10)
    k = gla.key(ckpt, gallery)
    path = gla.save(tmp_path / "x.npz", gl, k)
    back = gla.load(path, k, len(images))
    assert back is not None and np.array_equal(back.bpd, gl.bpd) and np.array_equal(back.labels, labels)
    for name, v in gl.parts.items():
        np.testing.assert_array_equal(back.parts[name], v)
    every = gla.load(path, k, 7)  # a file of N images serves any first n <= N
    assert every is not None and len(every) == every.encoded == len(images)
    first = every.head(7)
    head = gla.compute(model, images[:7], labels[:7])  # an image's numbers do not depend on the others
    assert len(first) == 7 and all(len(v) == 7 for v in (*first.levels, first.labels, *first.parts.values()))
    np.testing.assert_allclose(first.bpd, head.bpd, rtol=0, atol=1e-5)
    for a, b in zip(first.levels, head.levels, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert gla.load(path, k, len(images) + 1) is None  # fewer images than asked for
    part = gla.save(tmp_path / "part.npz", fewer, k)
    back = gla.load(part, k, 9)
    assert back is not None and back.encoded == 9 and np.array_equal(back.bpd, gl.bpd)
    assert gla.load(part, k, 10) is None  # the latents of 10 images are not there


def test_a_file_for_other_content_or_a_broken_file_is_ignored(fixture, tmp_path: Path) -> None:
    ckpt, gallery = fixture
    model, _ = load_model(ckpt)
    images, labels = _gallery(gallery)
    k = gla.key(ckpt, gallery)
    path = gla.save(tmp_path / "x.npz", gla.compute(model, images[:4], labels[:4]), k)
    other = tmp_path / "other.npz"
    other.write_bytes(gallery.read_bytes() + b"\0")
    assert gla.load(path, gla.key(ckpt, other), 4) is None  # another gallery
    assert gla.load(path, {**k, "format": gla.FORMAT + 1}, 4) is None
    for content in (b"", b"not a zip", path.read_bytes()[:100]):
        broken = tmp_path / "broken.npz"
        broken.write_bytes(content)
        assert gla.load(broken, k, 4) is None
    assert gla.load(tmp_path / "missing.npz", k, 4) is None


@pytest.mark.parametrize("stem", ["digits", "fashion_mnist"])
def test_the_shipped_models_ship_their_latents(stem: str) -> None:
    """The app reads the shipped file instead of encoding the gallery at its first start (its key matches the
    shipped checkpoint and gallery), and the file holds what the shipped model computes."""
    ckpt = ROOT / "models" / f"{stem}.safetensors"
    gallery = ckpt.with_name(f"{stem}.gallery.npz")
    if not ckpt.is_file():
        pytest.skip("the shipped model is not in models/")
    images, labels = _gallery(gallery)
    n = min(gla.DEFAULT_COUNT, len(images))
    gl = gla.load(gla.shipped_path(ckpt), gla.key(ckpt, gallery), n)
    assert gl is not None, f"models/{stem}.latents.npz is missing or stale: python -m train.export --latents {ckpt}"
    assert gl.encoded == n and len(gl) == len(images)  # the bits/dim of the whole gallery, for Encode
    model, _ = load_model(ckpt)
    torch.set_num_threads(2)
    head = gla.compute(model, images[:8], labels[:8])
    np.testing.assert_allclose(gl.bpd[:8], head.bpd, rtol=0, atol=1e-4)  # shown with 3 decimals
    for a, b in zip(gl.levels, head.levels, strict=True):
        np.testing.assert_allclose(a[:8], b, rtol=0, atol=1e-4)
    for name, v in gl.parts.items():
        np.testing.assert_allclose(v[:8], head.parts[name], rtol=0, atol=1e-4)
    last = len(images) - 1  # what Encode shows for the last image, as computed for it alone
    bpd, parts = gl.bits(last)
    want_bpd, want_parts = compute.bits_per_dim_and_breakdown(model, images[last], last)
    assert bpd == pytest.approx(want_bpd, abs=1e-4) and parts == pytest.approx(want_parts, abs=1e-4)
    np.testing.assert_array_equal(gl.labels, labels)


def test_the_app_encodes_a_gallery_once_and_then_reads_it_from_disk(fixture, tmp_path: Path, monkeypatch) -> None:
    import streamlit as st
    from app_helpers import APP, TIMEOUT, problems
    from streamlit.testing.v1 import AppTest

    ckpt, _ = fixture
    monkeypatch.setenv("NVP_MODELS_DIR", str(ckpt.parent))
    monkeypatch.setenv("NVP_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv(gla.ENV_CACHE, str(tmp_path / "cache"))
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not problems(at) and "bits/dim" in " ".join(m.value for m in [*at.markdown, *at.caption])
    (cached,) = (tmp_path / "cache").glob("*.npz")
    st.cache_resource.clear()  # a new server: only the disk cache is left

    def refuse(*args, **kwargs):
        raise AssertionError("the gallery was encoded again")

    monkeypatch.setattr(gla, "compute", refuse)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not problems(at), problems(at)
    assert list((tmp_path / "cache").glob("*.npz")) == [cached]
