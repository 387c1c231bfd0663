"""Unit tests of the app's Streamlit-free parts: model discovery, galleries, metrics, image glue, launcher."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import make_fixture_model
from PIL import Image

from app import compute, launch
from app.models import (
    Gallery,
    GalleryError,
    find_checkpoint,
    gallery_path,
    list_checkpoints,
    load_gallery,
    metrics_path,
    model_card_path,
    models_dir,
    read_metrics,
)
from nvp_core import load_model
from nvp_core.latent import interpolate
from nvp_core.likelihood import fixed_noise_bits_per_dim


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_model(tmp_path_factory.mktemp("core"), "grey8", 1, 8, 2)


def test_models_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NVP_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path
    monkeypatch.delenv("NVP_MODELS_DIR")
    assert models_dir().name == "models"


def test_list_checkpoints_prefers_shipped_names_and_skips_resume_states(tmp_path: Path) -> None:
    for name in ("zeta.safetensors", "digits.safetensors", "fashion_mnist.safetensors", "last.state.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["fashion_mnist.safetensors", "digits.safetensors", "zeta.safetensors"]
    assert find_checkpoint("digits", tmp_path) == tmp_path / "digits.safetensors"
    assert find_checkpoint("nope", tmp_path) is None
    assert list_checkpoints(tmp_path / "missing") == []


def test_companion_files(ckpt: Path, tmp_path: Path) -> None:
    assert gallery_path(ckpt) == ckpt.with_name("grey8.gallery.npz")
    assert metrics_path(ckpt) == ckpt.with_name("grey8.metrics.jsonl")
    assert model_card_path(ckpt) is None
    # A train/ run folder: best.safetensors with metrics.jsonl beside it.
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"x")
    (run / "metrics.jsonl").write_text(
        '{"step": 1, "test_bpd": 3.5}\n{"broken\n{"step": 2, "test_bpd": 3.2, "note": "ok"}\n'
    )
    (run / "README.md").write_text("# card")
    assert metrics_path(run / "best.safetensors") == run / "metrics.jsonl"
    assert model_card_path(run / "best.safetensors") == run / "README.md"
    assert read_metrics(run / "metrics.jsonl") == [{"step": 1.0, "test_bpd": 3.5}, {"step": 2.0, "test_bpd": 3.2}]


def test_gallery_is_checked_against_the_model(ckpt: Path, tmp_path: Path) -> None:
    g = load_gallery(gallery_path(ckpt), 1, 8)
    assert g.images.shape[1:] == (1, 8, 8) and g.images.dtype == np.uint8
    assert g.label_name(0) == "blob" and g.label_name(1) == "ring"
    with pytest.raises(GalleryError, match="needs uint8"):
        load_gallery(gallery_path(ckpt), 3, 8)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(GalleryError, match="float32"):
        load_gallery(bad, 1, 8)
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(GalleryError, match="not a usable gallery"):
        load_gallery(pickled, 1, 8)


def test_encode_decode_round_trip_and_bpd(ckpt: Path) -> None:
    model, _ = load_model(ckpt)
    images = load_gallery(gallery_path(ckpt), 1, 8).images[:5]
    zs = compute.encode(model, images)
    assert [tuple(z.shape[1:]) for z in zs] == model.latent_shapes and len(zs[0]) == 5
    assert np.array_equal(compute.decode(model, zs), images)  # bin centres decode back to the same pixels
    zs2, bpd = compute.encode_with_bpd(model, images)
    for a, b in zip(zs, zs2, strict=True):
        assert torch.equal(a, b)
    # Bits/dim follow nvp_core's one convention (fixed dequantisation noise), not the bin centres of the latents.
    np.testing.assert_array_equal(bpd, fixed_noise_bits_per_dim(model, torch.from_numpy(images)).numpy())
    with torch.inference_mode():
        centres = model.bits_per_dim_of(model.log_prob(compute.model_input(images))).numpy()
    assert not np.allclose(bpd, centres, rtol=1e-6, atol=0)
    err, pix, rec = compute.reconstruction_error(model, images[0])
    assert err < 1e-4 and pix == 0 and np.array_equal(rec, images[0])


def test_encode_batches_like_one_call(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = load_model(ckpt)
    images = load_gallery(gallery_path(ckpt), 1, 8).images[:7]
    whole = compute.encode(model, images)
    monkeypatch.setattr(compute, "BATCH", 3)
    parts = compute.encode(model, images)
    for a, b in zip(whole, parts, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_app_never_changes_the_model(ckpt: Path) -> None:
    model, _ = load_model(ckpt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = load_gallery(gallery_path(ckpt), 1, 8).images[:4]
    zs = compute.encode(model, images)
    compute.encode_with_bpd(model, images)
    compute.decode(model, interpolate([z[:1] for z in zs], [z[1:2] for z in zs], 5))
    compute.bits_per_dim_and_breakdown(model, images[0])
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_level_table_and_keep_fractions(ckpt: Path) -> None:
    model, _ = load_model(ckpt)
    img = load_gallery(gallery_path(ckpt), 1, 8).images[0]
    zs = compute.encode(model, img[None])
    bpd, parts = compute.bits_per_dim_and_breakdown(model, img)
    rows = compute.level_table(model, zs, parts)
    assert [r["dims"] for r in rows] == [int(np.prod(s)) for s in model.latent_shapes]
    assert rows[0]["level"].startswith("1 (finest)")
    assert compute.keep_fractions(model) == [(1, 1.0), (2, 0.5), (3, 0.0)]
    assert bpd == float(compute.encode_with_bpd(model, img[None])[1][0])  # one pass, the same number to the bit
    assert sum(parts.values()) == pytest.approx(bpd, abs=1e-4)


def test_pictures_and_downloads() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    mosaic = compute.grid(frames, 3, pad=1)
    assert mosaic.shape == (3, 2 * 5 + 1, 3 * 5 + 1)
    assert np.array_equal(mosaic[:, 1:5, 1:5], frames[0]) and np.array_equal(mosaic[:, 6:10, 6:10], frames[4])
    img = compute.to_pil(frames[0], 40)
    assert img.size == (40, 40) and img.getpixel((0, 0)) == tuple(frames[0][:, 0, 0])
    assert Image.open(io.BytesIO(compute.png_bytes(frames[0], 16))).size == (16, 16)
    gif = Image.open(io.BytesIO(compute.gif_bytes(frames[:, :1], 8)))
    assert gif.n_frames == 5 + 3  # there and back
    data = np.load(io.BytesIO(compute.npz_bytes([torch.ones(2, 3)], extra=np.arange(3))), allow_pickle=False)
    assert sorted(data.files) == ["extra", "level_1"] and data["level_1"].shape == (2, 3)


def test_latent_mosaic_is_a_faithful_picture_of_the_latents() -> None:
    """Each channel is a tile in row-major order; the colour of a value can be read back to within one step of
    the 256-colour scale; 0 is near-white, the scale is symmetric, and channels beyond the limit are left out."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 5, 7)).astype(np.float32)
    z[0, 0, 0], z[0, 0, 1] = 0.0, -np.abs(z).max()  # the most negative value shown, and an exact zero
    mosaic, lim = compute.latent_mosaic(z, max_channels=5, ncol=2)
    assert lim == pytest.approx(float(np.abs(z[:5]).max()))
    pad = 1
    assert mosaic.shape == (3, 3 * (5 + pad) + pad, 2 * (7 + pad) + pad) and mosaic.dtype == np.uint8
    lut = compute.DIVERGING_LUT.astype(int)
    for ch in range(5):
        r, q = divmod(ch, 2)
        tile = mosaic[:, pad + r * (5 + pad) : pad + r * (5 + pad) + 5, pad + q * (7 + pad) : pad + q * (7 + pad) + 7]
        rgb = tile.transpose(1, 2, 0).reshape(-1, 1, 3).astype(int)
        index = np.abs(rgb - lut[None]).sum(-1).argmin(-1)  # nearest colour of the scale
        read = (index / 255.0 - 0.5) * 2 * lim
        np.testing.assert_allclose(read, z[ch].ravel(), atol=2 * lim / 255 + 1e-6, err_msg=f"channel {ch}")
    assert (mosaic[:, pad, pad] > 240).all(), "0 should be drawn near-white"
    assert tuple(mosaic[:, pad, pad + 1]) == tuple(compute.DIVERGING_LUT[0]), "-lim gets the end of the scale"
    assert mosaic[2, pad, pad + 1] > mosaic[0, pad, pad + 1], "negative values are blue"
    # The empty sixth cell of the 3x2 layout stays background; a given limit is used as it is (and clips).
    assert (mosaic[:, -6:-1, -8:-1] == 255).all()
    clipped, lim2 = compute.latent_mosaic(z, max_channels=1, lim=0.5)
    assert lim2 == 0.5 and clipped.shape == (3, 5 + 2 * pad, 7 + 2 * pad)
    np.testing.assert_array_equal(
        compute.diverging_colors(np.array([-9.0, 0.0, 9.0, np.nan]), 0.5)[[0, 2, 3]],
        compute.DIVERGING_LUT[[0, 255, 128]],
    )


def test_gallery_classes_are_indexed_once() -> None:
    """``Gallery.by_class``: each class present, ascending, with its images' indices in order; what the image
    pickers' class filter, "a different class" default and distinct examples read on every rerun."""
    labels = np.array([3, 1, 3, 0, 1, 1, 3, 0])
    g = Gallery(images=np.zeros((8, 1, 2, 2), np.uint8), labels=labels, class_names=list("abcd"))
    by = g.by_class
    assert list(by) == [0, 1, 3]
    for c, ids in by.items():
        np.testing.assert_array_equal(ids, np.flatnonzero(labels == c))
    assert g.by_class is by  # computed once
    with pytest.raises(ValueError):
        by[1][0] = 5  # shared by every session: read-only


def test_checkpoint_listing_is_read_again_when_its_folder_changes(tmp_path: Path) -> None:
    """The sidebar lists the folder on every rerun: an unchanged folder's listing is kept (no directory read), and
    a checkpoint added or removed shows up at once."""
    (tmp_path / "a.safetensors").write_bytes(b"x")
    past = time.time_ns() - 60 * 10**9
    os.utime(tmp_path, ns=(past, past))  # changed a minute ago: its listing can be kept
    reads = []
    real_glob = Path.glob
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "glob", lambda self, pattern: reads.append(self) or real_glob(self, pattern))
        assert [p.name for p in list_checkpoints(tmp_path)] == ["a.safetensors"]
        assert [p.name for p in list_checkpoints(tmp_path)] == ["a.safetensors"]
        assert len(reads) <= 1, "an unchanged folder is not read again"
        (tmp_path / "b.safetensors").write_bytes(b"x")
        assert [p.name for p in list_checkpoints(tmp_path)] == ["a.safetensors", "b.safetensors"]
        (tmp_path / "a.safetensors").unlink()
        assert [p.name for p in list_checkpoints(tmp_path)] == ["b.safetensors"]
    assert list_checkpoints(tmp_path / "b.safetensors") == []  # a file, not a folder


def test_screen_pictures_are_kept_encoded_by_their_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """``compute.png`` encodes a small picture once for every session: the same pixels again give the same bytes
    without an encode; other pixels are encoded; large pictures are not kept."""
    calls = []
    real = compute.png_bytes
    monkeypatch.setattr(compute, "png_bytes", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (1, 13, 11), dtype=np.uint8)
    first = compute.png(img)
    again = compute.png(img.copy())
    assert again.data == first.data and again.width == 11 and len(calls) == 1
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(first.data))), img[0])  # lossless
    other = img.copy()
    other[0, 0, 0] ^= 1
    assert compute.png(other).data != first.data and len(calls) == 2
    big = rng.integers(0, 256, (3, 100, 100), dtype=np.uint8)  # 30 kB of pixels
    assert compute.png(big).data == compute.png(big).data and len(calls) == 4


def test_a_histogram_drawn_once_gives_each_marker_the_picture_drawn_afresh() -> None:
    """Encode draws the gallery's bars once per model and every session adds its image's marker to a copy: each
    picture has the pixels of a histogram drawn afresh for that marker, whatever was marked before."""
    values = np.random.default_rng(3).normal(3.0, 0.3, 500)
    bars = compute.Histogram(values, 2.0, 4.0)
    plain = bars.with_marker(float("nan"))
    for marker in (1.0, 2.0, 2.9, 3.5, 4.0, 9.0):
        np.testing.assert_array_equal(bars.with_marker(marker), compute.Histogram(values, 2.0, 4.0).with_marker(marker))
    np.testing.assert_array_equal(bars.with_marker(float("nan")), plain)


def test_histogram_picture_shows_the_counts_and_the_marker() -> None:
    """Bar heights follow the counts, the red marker sits at its value, and degenerate input (±inf or NaN values,
    an empty or zero-width range, a marker off the axis or NaN) still gives a picture instead of an exception."""
    values = np.array([1.0] * 10 + [2.0] * 5)
    img = compute.Histogram(values, 0.5, 2.5, bins=2, size=(210, 150)).with_marker(1.5)
    assert img.shape == (3, 150, 210) and img.dtype == np.uint8
    rgb = img.transpose(1, 2, 0).astype(int)
    bar = (np.abs(rgb - [141, 160, 203]).sum(-1) < 10).sum(0)  # bar pixels per column
    red = np.flatnonzero((np.abs(rgb - [214, 39, 40]).sum(-1) < 10).sum(0) > 50)  # the marker's columns
    assert bar[40:95].max() == pytest.approx(2 * bar[120:170].max(), rel=0.05), "10 vs 5 images"
    assert abs(red.mean() - 105) <= 2, red  # 1.5 is the middle of [0.5, 2.5] → the middle of the plot
    for args in [
        (np.array([1.0, np.inf, -np.inf, np.nan]), 1.0, 0.5, 1.5),
        (np.array([]), 3.0, 3.0, 3.0),
        (values, np.inf, -np.inf, np.inf),
        (values, np.nan, 0.0, 3.0),
        (values, 99.0, 0.0, 3.0),
    ]:
        vals, marker, lo, hi = args
        out = compute.Histogram(vals, lo, hi).with_marker(marker)
        assert out.shape == (3, 190, 600)


def test_launcher_command_runs_streamlit_on_the_app() -> None:
    cmd = launch.command(["--server.port", "8765"])
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(cmd[4]) == launch.APP and launch.APP.is_file()
    assert cmd[-2:] == ["--server.port", "8765"]
    # No Deploy button wherever nvp-app is started from (config.toml is read only from the working directory).
    i = cmd.index("--client.toolbarMode")
    assert cmd[i + 1] == "viewer" and i < cmd.index("--server.port")


def test_launcher_caps_malloc_arenas_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert launch.environment()["MALLOC_ARENA_MAX"] == "2"
    assert launch.environment({"MALLOC_ARENA_MAX": "8"})["MALLOC_ARENA_MAX"] == "8"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert launch.environment()["MALLOC_ARENA_MAX"] == "4"


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not made for Windows")
def test_the_server_gets_streamlits_performance_extra() -> None:
    # Streamlit runs its event loop on uvloop and parses HTTP with httptools when they are installed: every
    # session's messages and pictures pass through that one loop.
    import importlib.util

    assert importlib.util.find_spec("uvloop") is not None
    assert importlib.util.find_spec("httptools") is not None


def test_launcher_help_exits_cleanly() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app.launch", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(launch.APP).parent.parent,
    )
    assert out.returncode == 0 and "streamlit run" in out.stdout.lower() + out.stderr.lower()


def test_metrics_file_of_fixture_has_curves(ckpt: Path) -> None:
    rows = read_metrics(metrics_path(ckpt))
    assert [r["step"] for r in rows] == [10.0, 20.0, 30.0]
    assert json.loads(metrics_path(ckpt).read_text().splitlines()[0])["test_bpd"] == rows[0]["test_bpd"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_nvp_app_stops_the_server(tmp_path: Path, sig: signal.Signals) -> None:
    """A signal to ``nvp-app`` (here ``python -m app.launch``, what the console script runs) stops the Streamlit
    server: nothing keeps answering on its port afterwards."""
    if os.name != "posix":
        pytest.skip("signals to a process are a POSIX matter")
    make_fixture_model(tmp_path, "tiny", 1, 8, 2)
    port = launch.free_port()
    args = ["--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
            "--server.fileWatcherType", "none"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.launch", *args],
        cwd=launch.ROOT,
        env=launch.environment({"NVP_MODELS_DIR": str(tmp_path)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so that cleanup can reach a server left behind
    )
    url = f"http://127.0.0.1:{port}/_stcore/health"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        deadline = time.monotonic() + 180
        while not answers():
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while answers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not answers(), f"the server still answers after {sig.name} to nvp-app"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_checkpoint_uploads_stay_within_the_folders_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More uploads than the bound: the folder keeps the most recent ones within its total size, never the
    file just accepted; storing a file again leaves it as it is (its mtime is part of the model's cache key)."""
    from app import uploads

    size = 40_000
    limit = int(2.5 * size)
    blobs = [bytes([i]) * size for i in range(6)]
    kept = []
    for i, blob in enumerate(blobs):
        path = uploads.store(blob, tmp_path)
        os.utime(path, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))  # a clear order on any file system
        uploads.admit(path, limit)
        kept.append(path)
        total = sum(p.stat().st_size for p in tmp_path.glob("*.safetensors"))
        assert total <= limit and path.exists()
    assert sorted(tmp_path.glob("*.safetensors")) == sorted(kept[-2:])
    before = kept[-1].stat().st_mtime_ns
    assert uploads.store(blobs[-1], tmp_path) == kept[-1]  # content-addressed: the same file
    assert kept[-1].stat().st_mtime_ns == before
    # The bound is a setting; bad values fall back to the default.
    monkeypatch.setenv("NVP_APP_UPLOADS_MB", "3")
    assert uploads.folder_limit_bytes() == 3 * 2**20
    monkeypatch.setenv("NVP_APP_UPLOADS_MB", "lots")
    assert uploads.folder_limit_bytes() == uploads.DEFAULT_FOLDER_MB * 2**20
    for value, on in (("", True), ("1", True), ("off", False), ("0", False), ("No", False)):
        monkeypatch.setenv("NVP_APP_CHECKPOINT_UPLOADS", value)
        assert uploads.enabled() is on
