"""AppTest (streamlit.testing.v1) tests of every page, on fixture models (grey and colour) and the shipped ones."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import (
    APP,
    PAGES,
    SHIPPED,
    TIMEOUT,
    astronaut_png,
    by_label,
    image_urls,
    make_fixture_model,
    panel_data,
    plotly_array,
    plotly_specs,
    png_bytes,
    problems,
    record_latent_images,
)
from panel_driver import panel_change
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import compute, link, state
from nvp_core import load_model
from nvp_core.images import load_image, to_array
from nvp_core.latent import interpolate

FIXTURES = {"grey12": (1, 12, 2), "rgb16": (3, 16, 3)}
SHIPPED_STEMS = ["digits", "fashion_mnist"]


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("app_models")
    for seed, (stem, (c, size, scales)) in enumerate(FIXTURES.items()):
        make_fixture_model(folder, stem, c, size, scales, seed=seed)
    return folder


def target_path(fixture_dir: Path, target: str) -> Path:
    kind, stem = target.split(":")
    folder = fixture_dir if kind == "fixture" else SHIPPED
    path = folder / f"{stem}.safetensors"
    if kind == "shipped" and not path.is_file():
        pytest.skip(f"shipped model {path} is not there yet (train/ writes it; see models/README.md)")
    return path


TARGETS = [f"fixture:{s}" for s in FIXTURES] + [f"shipped:{s}" for s in SHIPPED_STEMS]


def open_app(monkeypatch: pytest.MonkeyPatch, ckpt: Path) -> AppTest:
    """The app with ``ckpt``'s folder as the models folder and ``ckpt`` picked in the sidebar."""
    monkeypatch.setenv("NVP_MODELS_DIR", str(ckpt.parent))
    monkeypatch.setenv("NVP_APP_GALLERY_MAX", "64")  # keeps gallery encoding short in tests
    monkeypatch.setenv("NVP_APP_OOD_MAX", "40")  # and the Out-of-distribution page's scoring
    monkeypatch.setenv("NVP_LATENTS_CACHE", tempfile.mkdtemp())  # each test encodes its galleries itself
    if "NVP_RUNS_DIR" not in os.environ:  # the Runs page: never the repository's runs/ (a run may be training)
        monkeypatch.setenv("NVP_RUNS_DIR", str(ckpt.parent))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not problems(at), problems(at)
    choice = at.selectbox(key="model_choice")
    if choice.value != str(ckpt):
        choice.set_value(str(ckpt)).run()
    assert not problems(at), problems(at)
    state.app_model(ckpt, wait_s=120)  # the fast path measured in the background: tests compare with that model
    return at.run()


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"views/{page}.py").run()
    assert not problems(at), (page, problems(at))
    return at


@pytest.mark.parametrize("target", TARGETS)
def test_upload_then_every_page(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path, target: str) -> None:
    """Uploading a photograph on Encode gives the latents nvp_core computes and an exact reconstruction; then
    every page renders without an exception or error, using that image where a page takes the current one."""
    ckpt = target_path(fixture_dir, target)
    at = goto(open_app(monkeypatch, ckpt), "encode")
    by_label(at.radio, "Image source").set_value("Upload").run()
    data = astronaut_png()
    drawn = record_latent_images(monkeypatch)
    by_label(at.file_uploader, "An image file").set_value(("astronaut.png", data, "image/png")).run()
    assert not problems(at), problems(at)
    caps = image_urls(at)
    assert any(c.startswith("x: astronaut.png") for c in caps), caps
    assert "f⁻¹(f(x)): reconstruction" in caps

    # The heatmaps show the latents nvp_core computes for the same converted image.
    model, _ = load_model(ckpt)
    invert = by_label(at.checkbox, "Invert").value
    arr = to_array(load_image(data), model.config.in_channels, model.config.image_size, invert=invert)
    x = (torch.from_numpy(arr[None]).float() + 0.5) / 256
    with torch.inference_mode():
        zs, _ = model(x)
    assert len(drawn) == model.num_levels
    for level, (shown, z) in enumerate(zip(drawn, zs, strict=True), start=1):
        np.testing.assert_allclose(shown, z[0].numpy(), atol=1e-4, err_msg=f"level {level}")
        assert any(c.startswith(f"level {level}") for c in image_urls(at)), list(image_urls(at))
    # The interactive heatmaps (a toggle) show the same values, centred at 0.
    at.toggle(key=next(t.key for t in at.toggle if t.label == "Interactive heatmaps")).set_value(True).run()
    assert not problems(at), problems(at)
    specs = [s for s in plotly_specs(at) if s["layout"].get("title", {}).get("text", "").startswith("level ")]
    assert len(specs) == model.num_levels
    for level, (spec, z) in enumerate(zip(specs, zs, strict=True), start=1):
        shown = plotly_array(spec["data"][0]["z"])
        np.testing.assert_allclose(shown, z[0, 0].numpy(), atol=1e-4, err_msg=f"level {level}")
        assert spec["data"][0]["zmid"] == 0
    err = float(next(m for m in at.metric if m.label.startswith("max |x")).value)
    assert err < 1e-3

    titles = {"latent_map": "Latent map", "how_it_works": "How it works", "ood": "Out of distribution"}
    for page in PAGES[1:]:
        goto(at, page)
        assert at.title[0].value == titles.get(page, page.capitalize())
        if page == "runs":  # the run folders next to these models, or where it looked
            from app.runs import find_runs

            if find_runs(Path(os.environ["NVP_RUNS_DIR"])):
                assert not any("No runs found" in i.value for i in at.info)
            else:
                assert any("No runs found" in i.value for i in at.info)
            continue
        assert at.image or at.get("plotly_chart"), f"{page} shows nothing"
        if page == "how_it_works":
            assert any("astronaut.png" in c.value for c in at.caption), "How it works uses the Encode page's image"


def test_upload_that_is_not_an_image_gets_an_error(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path) -> None:
    at = goto(open_app(monkeypatch, fixture_dir / "grey12.safetensors"), "encode")
    by_label(at.radio, "Image source").set_value("Upload").run()
    by_label(at.file_uploader, "An image file").set_value(("notes.png", b"this is text, not a PNG", "image/png")).run()
    assert not at.exception
    assert any("Cannot use notes.png" in e.value for e in at.error)


def test_checkpoint_upload_refuses_anything_but_a_model(
    monkeypatch: pytest.MonkeyPatch, fixture_dir: Path, tmp_path: Path
) -> None:
    at = open_app(monkeypatch, fixture_dir / "grey12.safetensors")
    up = by_label(at.sidebar.file_uploader, "checkpoint")
    up.set_value(("model.pt", b"\x80\x04\x95 pickled", "application/octet-stream")).run()
    assert not at.exception and any("not a .safetensors checkpoint" in e.value for e in at.error)
    up = by_label(at.sidebar.file_uploader, "checkpoint")
    fake = b"\x80\x04\x95 pickled data that is long enough"
    up.set_value(("fake.safetensors", fake, "application/octet-stream")).run()
    assert not at.exception and any("Refused fake.safetensors" in e.value for e in at.error)
    digest = hashlib.sha256(fake).hexdigest()[:16]
    stored = Path(tempfile.gettempdir()) / "nvp_app_checkpoints" / f"{digest}.safetensors"
    assert not stored.exists(), "a refused upload must not stay on the server's disk"
    # A real checkpoint made by nvp_core is accepted and becomes the current model.
    other = make_fixture_model(tmp_path, "other", 3, 8, 2, seed=5)
    up = by_label(at.sidebar.file_uploader, "checkpoint")
    up.set_value(("other.safetensors", other.read_bytes(), "application/octet-stream")).run()
    assert not problems(at), problems(at)
    assert at.selectbox(key="model_choice").format_func(at.selectbox(key="model_choice").value).startswith("uploaded")
    assert any("3×8×8 images" in c.value for c in at.sidebar.caption)


def test_checkpoint_uploads_are_bounded_can_be_turned_off_and_uploaders_have_the_apps_limits(
    monkeypatch: pytest.MonkeyPatch, fixture_dir: Path, tmp_path: Path
) -> None:
    from app.uploads import MAX_CHECKPOINT_MB
    from app.widgets import IMAGE_UPLOAD_MB
    from nvp_core.images import MAX_BYTES

    folder = tmp_path / "uploads"
    monkeypatch.setenv("NVP_APP_UPLOAD_DIR", str(folder))
    monkeypatch.setenv("NVP_APP_UPLOADS_MB", "1")
    at = open_app(monkeypatch, fixture_dir / "grey12.safetensors")
    up = by_label(at.sidebar.file_uploader, "checkpoint")
    assert up.proto.max_upload_size_mb == MAX_CHECKPOINT_MB
    for seed in range(5):  # 0.27 MB each: together over the 1 MB bound
        ckpt = make_fixture_model(tmp_path / f"m{seed}", "big", 3, 16, 2, seed=seed)
        by_label(at.sidebar.file_uploader, "checkpoint").set_value(
            ("big.safetensors", ckpt.read_bytes(), "application/octet-stream")
        ).run()
        assert not problems(at), problems(at)
        assert sum(p.stat().st_size for p in folder.glob("*.safetensors")) <= 2**20
    assert len(list(folder.glob("*.safetensors"))) < 5, "the oldest uploads are removed"
    assert any("3×16×16 images" in c.value for c in at.sidebar.caption)
    goto(at, "encode")
    by_label(at.radio, "Image source").set_value("Upload").run()
    assert by_label(at.file_uploader, "An image file").proto.max_upload_size_mb == IMAGE_UPLOAD_MB == MAX_BYTES // 2**20
    monkeypatch.setenv("NVP_APP_CHECKPOINT_UPLOADS", "off")  # a public server
    at = open_app(monkeypatch, fixture_dir / "grey12.safetensors")
    assert not [u for u in at.sidebar.file_uploader if "checkpoint" in u.label]
    assert not problems(at)


def test_teaching_polish_says_things_in_words(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path) -> None:
    """Issue 13's polish: an exact reconstruction is said in words (not a black square); level ranges read "2",
    not "2–2"; choosing a class says the numbering restarts; Manifold's corner pickers do not wrap and its grid
    names φ and φ′; Sample has a new-seed button; the invertibility table has levels only."""
    at = goto(open_app(monkeypatch, fixture_dir / "grey12.safetensors"), "encode")  # 2 levels
    assert not [c for c in image_urls(at) if c.startswith("pixels that differ")]
    assert any("Pixels that differ between x and f⁻¹(f(x)): none" in c.value for c in at.caption)
    by_label(at.selectbox, "Class").set_value(1).run()
    assert by_label(at.number_input, "Gallery image").label == "Gallery image (0–19 of the 20 ring images)"
    goto(at, "scales")
    table = at.dataframe[0].value
    assert list(table["kept levels"]) == ["1–2", "2", "none"]
    assert list(table["drawn afresh"]) == ["none", "1", "1–2"]
    assert any("kept levels: 1–2, 2, none" in c for c in image_urls(at))
    assert any(c.startswith("A | 1 from B | B (all levels)") for c in image_urls(at)), list(image_urls(at))
    goto(at, "manifold")
    assert not by_label(at.radio, "top left").proto.horizontal  # three options in a narrow column would wrap
    assert any("rows φ = 0 … π/2" in c and "columns φ′" in c for c in image_urls(at))
    goto(at, "sample")
    by_label(at.button, "New seed").click().run()
    assert by_label(at.number_input, "Seed").value != 0
    goto(at, "how_it_works")
    inv = next(d.value for d in at.dataframe if "max |z − f(f⁻¹(z))|" in d.value.columns)
    assert list(inv["level"]) == ["level 1 (finest)", "level 2 (coarsest)"]
    assert any("max |x − f⁻¹(f(x))|" in c.value for c in at.caption)


def test_latent_map_classes_visible_and_the_low_variance_explained(
    monkeypatch: pytest.MonkeyPatch, fixture_dir: Path
) -> None:
    import plotly

    at = goto(open_app(monkeypatch, fixture_dir / "grey12.safetensors"), "latent_map")
    spec = plotly_specs(at)[0]
    colours = [t["marker"].get("color") for t in spec["data"] if t.get("name") in ("blob", "ring")]
    assert colours == list(plotly.colors.qualitative.D3[:2])  # no pale yellow dots on white
    assert any("nearly isotropic" in c.value and "of the variance" in c.value for c in at.caption)


def test_a_pages_link_carries_its_settings_to_a_fresh_session(
    monkeypatch: pytest.MonkeyPatch, fixture_dir: Path
) -> None:
    """A teacher's view lives in the address: a fresh session opened on the same link shows the same settings
    and the same pictures; a link whose settings do not fit gets a warning and the defaults, never a traceback."""
    at = goto(open_app(monkeypatch, fixture_dir / "rgb16.safetensors"), "sample")
    by_label(at.number_input, "Seed").set_value(11).run()
    by_label(at.slider, "Grid side").set_value(5).run()
    by_label(at.slider, "T, level 2").set_value(0.4).run()
    link = dict(at.query_params)
    assert link["model"] == "rgb16" and link["sa_seed"] == "11" and link["sa_n"] == "5", link
    frames = at.session_state["_memo:sample"][1][0]

    fresh = AppTest.from_file(str(APP), default_timeout=TIMEOUT)  # another browser: nothing in its session
    fresh.query_params.update(link)
    monkeypatch.setenv("NVP_MODELS_DIR", str(fixture_dir))
    fresh.switch_page("views/sample.py").run()
    assert not problems(fresh), problems(fresh)
    assert any("3×16×16 images" in c.value for c in fresh.sidebar.caption)  # the link's model, not the default
    assert by_label(fresh.number_input, "Seed").value == 11 and by_label(fresh.slider, "Grid side").value == 5
    assert by_label(fresh.slider, "T, level 2").value == pytest.approx(0.4)
    np.testing.assert_array_equal(fresh.session_state["_memo:sample"][1][0], frames)

    bad = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    bad.query_params.update({"model": "grey12", "sa_n": "99", "sa_seed": '"x"', "junk": "{"})
    bad.switch_page("views/sample.py").run()
    assert not bad.exception, [e.message for e in bad.exception]
    assert any("do not fit this model" in w.value for w in bad.warning)
    assert by_label(bad.slider, "Grid side").value == 3 and by_label(bad.number_input, "Seed").value == 0


def test_back_and_forward_show_the_view_of_that_history_entry(
    monkeypatch: pytest.MonkeyPatch, fixture_dir: Path
) -> None:
    """A run that the browser's Back or Forward asks for carries that entry's link, and the page shows its view
    (the settings and their pictures); any other run keeps the session's settings, whatever query string it
    carries (a click can leave before the browser has taken the last run's link)."""

    at = goto(open_app(monkeypatch, fixture_dir / "rgb16.safetensors"), "sample")
    by_label(at.number_input, "Seed").set_value(11).run()
    eleven = at.session_state["_memo:sample"][1][0]
    by_label(at.number_input, "Seed").set_value(12).run()
    assert dict(at.query_params)["sa_seed"] == "12"

    at.query_params["sa_seed"] = "5"  # a stale query string on an ordinary run changes nothing
    at.run()
    assert by_label(at.number_input, "Seed").value == 12

    at.query_params["sa_seed"] = "11"  # Back to the entry written when the seed was 11
    monkeypatch.setattr(link, "history_navigation", lambda: True)
    at.run()
    monkeypatch.setattr(link, "history_navigation", lambda: False)
    assert not problems(at), problems(at)
    assert by_label(at.number_input, "Seed").value == 11
    np.testing.assert_array_equal(at.session_state["_memo:sample"][1][0], eleven)
    at.run()  # and the view stays there
    assert by_label(at.number_input, "Seed").value == 11 and dict(at.query_params)["sa_seed"] == "11"

    at.query_params["sa_n"] = "99"  # an entry whose link was edited by hand: the warning and the defaults
    monkeypatch.setattr(link, "history_navigation", lambda: True)
    at.run()
    monkeypatch.setattr(link, "history_navigation", lambda: False)
    assert not at.exception, [e.message for e in at.exception]
    assert any("do not fit this model" in w.value for w in at.warning)
    assert by_label(at.slider, "Grid side").value == 3


def test_interpolate_link_carries_the_path_and_bad_messages_change_nothing(
    monkeypatch: pytest.MonkeyPatch, fixture_dir: Path
) -> None:
    """The path panel's settings live in the link like every widget's: a fresh session on the link shows the same
    frames; a link with settings that do not fit gets the warning and the defaults; a hand-made message from the
    browser that does not parse changes nothing and shows no error."""
    at = goto(open_app(monkeypatch, fixture_dir / "rgb16.safetensors"), "interpolate")
    panel_change(at, weights=[0.5, 1.0, 0.0], steps=5, method="spherical")
    assert not problems(at), problems(at)
    link = dict(at.query_params)
    assert (link["ip_w1"], link["ip_w3"], link["ip_steps"], link["ip_method"]) == ("0.5", "0.0", "5", '"spherical"')
    shown = panel_data(at)

    fresh = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    fresh.query_params.update(link)
    monkeypatch.setenv("NVP_MODELS_DIR", str(fixture_dir))
    fresh.switch_page("views/interpolate.py").run()
    assert not problems(fresh), problems(fresh)
    got = panel_data(fresh)
    assert got["settings"] == shown["settings"] and got["frames"] == shown["frames"]

    bad = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    bad.query_params.update({**link, "ip_steps": "99", "ip_w2": '"x"'})
    bad.switch_page("views/interpolate.py").run()
    assert not bad.exception, [e.message for e in bad.exception]
    assert any("do not fit this model" in w.value for w in bad.warning)
    assert panel_data(bad)["settings"] == {"method": "linear", "steps": 9, "weights": [1.0, 1.0, 1.0]}

    before = panel_data(at)
    for change in ({"steps": 99}, {"weights": [1.0]}, {"method": "cubic"}, {"weights": [2.0, 0, 0]}, {"seq": "x"}):
        panel_change(at, **change)
        assert not problems(at), (change, problems(at))
        assert panel_data(at)["settings"] == before["settings"] and panel_data(at)["frames"] == before["frames"]
    panel_change(at, steps=6)
    assert panel_data(at)["settings"]["steps"] == 6 and panel_data(at)["seq"] == before["seq"] + 1


def test_runs_page_shows_a_run_and_opens_its_checkpoint(
    monkeypatch: pytest.MonkeyPatch, fixture_dir: Path, tmp_path: Path
) -> None:
    """A run folder as train/ writes it: curve, sample grids by step, config; its checkpoint opens in the other
    pages, which start from samples (a run has no gallery)."""
    import json

    run = tmp_path / "runs" / "my_run"
    make_fixture_model(run, "best", 3, 8, 2, seed=4)
    (run / "best.gallery.npz").unlink()  # a run folder has no gallery
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "epoch": s // 10, "test_bpd": 6.0 - s / 100}) + "\n" for s in (10, 20))
    )
    grids = {s: np.random.default_rng(s).integers(0, 256, (20, 30, 3), dtype=np.uint8) for s in (10, 20)}
    (run / "samples").mkdir()
    for s, grid in grids.items():
        (run / "samples" / f"step_{s:07d}.png").write_bytes(png_bytes(grid))
    (run / "last.state.json").write_text(json.dumps({"counters": {"step": 20, "epoch": 2, "best_bpd": 5.8}}))
    monkeypatch.setenv("NVP_RUNS_DIR", str(tmp_path / "runs"))
    at = goto(open_app(monkeypatch, fixture_dir / "grey12.safetensors"), "runs")
    assert at.selectbox(key="runs_choice").value == "my_run"
    assert any(c.startswith("samples after step 20") for c in image_urls(at))
    assert any("best test bits/dim 5.800" in c.value for c in at.caption)
    curve = next(s for s in plotly_specs(at) if s["data"][0].get("name") == "test_bpd")["data"][0]
    assert list(plotly_array(curve["y"])) == [5.9, 5.8]
    by_label(at.button, "Explore best.safetensors").click().run()
    assert not problems(at), problems(at)
    assert any("3×8×8 images" in c.value for c in at.sidebar.caption)  # the run's model is now the current one
    goto(at, "encode")
    assert any(c.startswith("f⁻¹(f(x))") for c in image_urls(at))


def changed(at: AppTest, widget: object, value: object, caption_prefix: str) -> None:
    """Sets ``widget`` and asserts that the image whose caption starts with ``caption_prefix`` changed."""

    def url() -> str:
        urls = [u for c, us in image_urls(at).items() if c.startswith(caption_prefix) for u in us]
        assert urls, (caption_prefix, list(image_urls(at)))
        return urls[0]

    before = url()
    widget.set_value(value).run()  # type: ignore[attr-defined]
    assert not problems(at), problems(at)
    assert url() != before, f"{caption_prefix} did not change"


def player_frames(at: AppTest) -> np.ndarray:
    """The uint8 ``[N, C, H, W]`` frames the page's path panel carries (PNG ``data:`` addresses)."""
    srcs = [src.split(",", 1)[1] for src in panel_data(at)["frames"]]
    arrays = [np.asarray(Image.open(io.BytesIO(base64.b64decode(s)))) for s in srcs]
    return np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])


def test_interpolation_frames_stay_the_decoded_path_as_single_levels_move(
    monkeypatch: pytest.MonkeyPatch, fixture_dir: Path
) -> None:
    """A weight slider re-decodes only the scales at and below its level (the coarser part is memoised): after
    moves of each level in turn, the frames are still the whole inverse of the path, byte for byte."""
    ckpt = target_path(fixture_dir, "fixture:rgb16")
    at = goto(open_app(monkeypatch, ckpt), "interpolate")
    model, _ = state.app_model(ckpt)  # the app's model object (same fast path: open_app waited for it)
    za, zb = at.session_state["_memo:interp_za"][1], at.session_state["_memo:interp_zb"][1]
    L = model.num_levels
    assert L == 3
    weights = [1.0] * L
    for level, w in ((2, 0.3), (1, 0.6), (1, 0.2), (3, 0.5), (1, 0.9), (2, 0.0)):
        weights[level - 1] = w
        panel_change(at, weights=weights)
        assert not problems(at), problems(at)
        expected = compute.decode(model, interpolate(za, zb, 9, level_weights=weights))
        assert np.array_equal(player_frames(at), expected), (level, w)
    # The strip above the player is the same frames side by side, pixel for pixel.
    (src,) = next(us for c, us in image_urls(at).items() if c.startswith("A → B"))
    strip = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    assert np.array_equal(strip.transpose(2, 0, 1), compute.grid(expected, 9))


def test_samples_stay_the_decoded_draws_as_single_temperatures_move(
    monkeypatch: pytest.MonkeyPatch, fixture_dir: Path
) -> None:
    """The Sample page's temperature sliders re-decode only the scales at and below their level: after moves of
    each level in turn, the grid is still the whole inverse of the seeded draws, byte for byte."""
    ckpt = target_path(fixture_dir, "fixture:rgb16")
    at = goto(open_app(monkeypatch, ckpt), "sample")
    model, _ = state.app_model(ckpt)
    temps = [0.8] * model.num_levels
    for level, t in ((2, 0.3), (1, 0.6), (1, 1.0), (3, 0.5), (1, 0.1), (2, 1.2)):
        by_label(at.slider, f"T, level {level}").set_value(t).run()
        assert not problems(at), problems(at)
        temps[level - 1] = t
        zs = model.sample_latents(9, temps, generator=torch.Generator().manual_seed(0))
        shown = at.session_state["_memo:sample"][1][0]  # the frames the page's mosaic is made of
        assert np.array_equal(shown, compute.decode(model, zs)), (level, t)


@pytest.mark.parametrize("target", ["fixture:grey12", "shipped:digits"])
def test_main_widgets_change_the_output(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path, target: str) -> None:
    at = open_app(monkeypatch, target_path(fixture_dir, target))
    goto(at, "encode")
    changed(at, by_label(at.number_input, "Gallery image"), 3, "level 1")
    cls = by_label(at.selectbox, "Class")
    cls.set_value(1).run()  # the second class: every image offered is of that class
    name = cls.format_func(1)
    assert not problems(at) and any(c.startswith("x: gallery #") and f"({name})" in c for c in image_urls(at))

    goto(at, "interpolate")
    for change in ({"weights": [0.0] + panel_data(at)["settings"]["weights"][1:]}, {"method": "spherical"}):
        before = panel_data(at)
        panel_change(at, **change)
        after = panel_data(at)
        assert not problems(at) and after["strip"] != before["strip"] and after["frames"] != before["frames"], change

    goto(at, "manifold")
    changed(at, by_label(at.slider, "Grid size n"), 4, "Manifold")
    changed(at, by_label(at.multiselect, "Levels that follow the manifold"), [1], "Manifold")

    goto(at, "scales")
    changed(at, by_label(at.slider, "Temperature of the new draws"), 1.0, "columns:")
    changed(at, by_label(at.number_input, "Seed"), 7, "columns:")

    goto(at, "sample")
    changed(at, by_label(at.number_input, "Seed"), 3, "9 samples")
    changed(at, by_label(at.slider, "T, level 1"), 0.2, "9 samples")

    goto(at, "attributes")
    changed(at, by_label(at.slider, "Strength"), -1.0, "s = ")
    changed(at, by_label(at.selectbox, "To class"), 0, "s = ")

    goto(at, "latent_map")
    fig = plotly_specs(at)[0]
    by_label(at.get("button_group"), "Latents of").set_value(1).run()
    assert not problems(at) and plotly_specs(at)[0] != fig


def test_every_page_works_without_a_gallery(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path, tmp_path: Path) -> None:
    """A bare checkpoint (no gallery, no metrics, no card): pages start from model samples (uploads remain)."""
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes((fixture_dir / "grey12.safetensors").read_bytes())
    at = open_app(monkeypatch, bare)
    for page in PAGES:
        goto(at, page)
        if page == "latent_map":
            assert any("no gallery" in i.value for i in at.info)
    goto(at, "sample")
    assert any(c.startswith("9 samples") for c in image_urls(at))
    # No page that needs only images opens empty: they start from distinct model samples.
    goto(at, "interpolate")
    assert by_label(at.radio, "Image A").value == "Sample" and not any("Upload a photo" in i.value for i in at.info)
    assert any(c.startswith("A → B") for c in image_urls(at))
    assert at.session_state["_memo:interp"][1][1][0].tolist() != at.session_state["_memo:interp"][1][1][-1].tolist()
    goto(at, "manifold")
    assert any(c.startswith("Manifold,") for c in image_urls(at))
    goto(at, "encode")
    assert any(c.startswith("f⁻¹(f(x))") for c in image_urls(at))


def test_interpolation_presets_set_the_level_weights(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path) -> None:
    """The panel offers the three presets (a click sets the sliders in the browser and sends them, as the e2e
    test checks); sending a preset's weights draws that path."""
    at = goto(open_app(monkeypatch, fixture_dir / "rgb16.safetensors"), "interpolate")
    data = panel_data(at)
    assert data["levels"] == ["level 1 (finest)", "level 2", "level 3 (coarsest)"]
    presets = dict((name, values) for name, values in data["presets"])
    assert presets == {"all levels": [1, 1, 1], "coarsest only": [0, 0, 1], "finest only": [1, 0, 0]}
    before = image_urls(at)
    panel_change(at, weights=presets["coarsest only"])
    assert not problems(at) and not at.warning, (problems(at), [w.value for w in at.warning])
    assert panel_data(at)["settings"]["weights"] == [0, 0, 1]
    strip = next(c for c in image_urls(at) if c.startswith("A → B"))
    assert strip.endswith("level weights 0, 0, 1)") and strip not in before


def test_attribute_direction_from_your_own_sets(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path) -> None:
    at = goto(open_app(monkeypatch, fixture_dir / "grey12.safetensors"), "attributes")
    by_label(at.radio, "Direction from").set_value("Your own sets").run()
    assert any("at least one image" in i.value for i in at.info)
    rng = np.random.default_rng(1)
    files = [(f"a{i}.png", png_bytes(rng.integers(0, 255, (20, 30), dtype=np.uint8)), "image/png") for i in range(2)]
    by_label(at.file_uploader, "Images of the 'from' set").set_value(files).run()
    by_label(at.text_input, "gallery indices for 'to'").set_value("1, 3, 99999, x").run()
    assert not at.exception
    assert sum("is not a gallery index" in e.value for e in at.error) == 2  # 99999 and x, the rest is used
    assert any("your set (2) → your set (2)" in m.value for m in at.markdown)
    assert any(c.startswith("s = ") for c in image_urls(at))


def test_how_it_works_numbers_match_nvp_core(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path) -> None:
    """The waterfall ends at nvp_core's bits/dim (its one convention) and the by-level bars are its prior terms."""
    from app.models import load_gallery
    from nvp_core.likelihood import fixed_noise_bits_per_dim, fixed_noise_breakdown, fixed_noise_dequantize

    ckpt = fixture_dir / "rgb16.safetensors"
    at = goto(open_app(monkeypatch, ckpt), "how_it_works")
    model, _ = load_model(ckpt)
    image = torch.from_numpy(load_gallery(ckpt.with_name("rgb16.gallery.npz"), 3, 16).images[:1].copy())
    specs = plotly_specs(at)
    water = next(s for s in specs if s["data"][0]["type"] == "waterfall")["data"][0]
    total = plotly_array(water["y"])[-1]
    # One bar per scale (and the logit layer), the priors, +8 and the total, which is printed on its bar.
    assert len(water["x"]) == 1 + model.config.num_scales + model.num_levels + 2
    assert water["text"][-1] == f"{total:.3f}"
    bpd = float(fixed_noise_bits_per_dim(model, image)[0])
    parts = fixed_noise_breakdown(model, image)
    assert total == pytest.approx(bpd, abs=1e-3)
    bars = next(s for s in specs if s["data"][0]["type"] == "bar")["data"][0]
    expected = [float(parts[f"prior level {lv}"][0]) for lv in range(1, model.num_levels + 1)]
    np.testing.assert_allclose(plotly_array(bars["y"]), expected, rtol=1e-4)
    # The architecture table is nvp_core's RealNVP.trace_layers, displayed (the page walks no layers itself).
    table = next(d.value for d in at.dataframe if "log-det (nats)" in d.value.columns)
    with torch.inference_mode():
        _, rows = model.trace_layers(fixed_noise_dequantize(image))
    assert list(table["layer"]) == [r.layer for r in rows]
    assert list(table["parameters"]) == [r.parameters for r in rows]
    np.testing.assert_allclose(table["log-det (nats)"], [float(r.logdet[0]) for r in rows], rtol=1e-4, atol=1e-4)
    assert not any("✓" in c.value for c in at.caption)


def test_encode_how_it_works_and_histogram_show_one_bits_per_dim(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """For the same gallery image, Encode's number, How it works' total and the image's value in the test-image
    histogram are one number (nvp_core's convention, named on screen); the sidebar names it too."""
    from nvp_core import gallery_latents
    from nvp_core.likelihood import CONVENTION_SHORT, fixed_noise_bits_per_dim

    ckpt = make_fixture_model(tmp_path, "agree", 1, 12, 2, seed=5)  # its own file: the gallery is encoded here
    encoded: list[np.ndarray] = []
    real = gallery_latents.compute

    def recorded(model: object, images: np.ndarray, labels: np.ndarray) -> gallery_latents.GalleryLatents:
        out = real(model, images, labels)  # type: ignore[arg-type]
        encoded.append(out.bpd)
        return out

    monkeypatch.setattr(gallery_latents, "compute", recorded)
    at = goto(open_app(monkeypatch, ckpt), "encode")
    k = 3
    by_label(at.number_input, "Gallery image").set_value(k).run()
    encode_value = float(next(m for m in at.metric if m.label == "bits/dim").value)
    assert any(CONVENTION_SHORT in c.value for c in at.caption)
    assert any(CONVENTION_SHORT in c.value for c in at.sidebar.caption)
    (histogram,) = encoded  # the gallery's values, encoded once
    goto(at, "how_it_works")
    how_value = float(next(m for m in at.metric if m.label == "bits/dim of this image").value)
    water = next(s for s in plotly_specs(at) if s["data"][0]["type"] == "waterfall")["data"][0]
    model, _ = load_model(ckpt)
    from app.models import load_gallery

    image = load_gallery(ckpt.with_name("agree.gallery.npz"), 1, 12).images[k : k + 1]
    direct = float(fixed_noise_bits_per_dim(model, torch.from_numpy(image.copy()), first_index=k)[0])
    assert encode_value == how_value == pytest.approx(direct, abs=5e-4)
    assert float(histogram[k]) == pytest.approx(direct, abs=1e-4)
    assert plotly_array(water["y"])[-1] == pytest.approx(direct, abs=1e-3)


def test_encode_reads_a_gallery_images_bits_per_dim_from_the_gallery_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A gallery image's bits/dim and terms come from the gallery's file (the histogram's numbers): one pass of the
    flow fewer; an image the file does not hold is computed. The round trip is always computed on one path."""
    from app.models import load_gallery
    from nvp_core import gallery_latents

    ckpt = make_fixture_model(tmp_path, "known", 1, 12, 2, seed=7)
    gallery = ckpt.with_name("known.gallery.npz")
    model, _ = load_model(ckpt)
    g = load_gallery(gallery, 1, 12)
    shipped = gallery_latents.compute(model, g.images[:30], g.labels[:30], latents=10)  # bits/dim of 30 of 40
    gallery_latents.save(gallery_latents.shipped_path(ckpt), shipped, gallery_latents.key(ckpt, gallery))
    computed: list[int] = []
    real = compute.bits_per_dim_and_breakdown

    def recorded(model: object, image: np.ndarray, index: int = 0) -> tuple[float, dict[str, float]]:
        computed.append(index)
        return real(model, image, index)  # type: ignore[arg-type]

    encoded: list[np.ndarray] = []
    real_encode = compute.encode

    def encode(model: object, images: np.ndarray) -> list[torch.Tensor]:
        encoded.append(images)
        return real_encode(model, images)  # type: ignore[arg-type]

    at = open_app(monkeypatch, ckpt)
    monkeypatch.setenv("NVP_APP_GALLERY_MAX", "10")  # the histogram's share (open_app asks for more than the file has)
    monkeypatch.setattr(compute, "bits_per_dim_and_breakdown", recorded)
    monkeypatch.setattr(compute, "encode", encode)
    goto(at, "encode")
    for k in (3, 25, 35):
        by_label(at.number_input, "Gallery image").set_value(k).run()
        assert not problems(at), problems(at)
        shown = next(m for m in at.metric if m.label == "bits/dim").value
        want = shipped.bpd[k] if k < 30 else real(model, g.images[k], k)[0]
        assert shown == f"{want:.3f}"
        assert any("every pixel is reconstructed exactly" in c.value for c in at.caption)
        assert np.array_equal(encoded[-1], g.images[k : k + 1])  # the latents of the round trip: this path's
    assert computed == [35]


def test_switching_between_models_that_share_a_gallery_shows_the_new_models_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two runs on one dataset share a gallery, so every page's settings (image digests, weights, seeds) are
    equal on both; after switching models the page must show model B's frames, not the memoised ones of A."""
    import shutil

    from app import compute, state
    from app.models import load_gallery
    from nvp_core.latent import interpolate

    a = make_fixture_model(tmp_path, "run_a", 1, 12, 2, seed=0)
    b = make_fixture_model(tmp_path, "run_b", 1, 12, 2, seed=1)
    shutil.copy(tmp_path / "run_a.gallery.npz", tmp_path / "run_b.gallery.npz")
    at = goto(open_app(monkeypatch, a), "interpolate")
    frames_a = at.session_state["_memo:interp"][1][1]
    by_label(at.selectbox, "Model").set_value(str(b)).run()
    assert not problems(at), problems(at)
    frames_b = at.session_state["_memo:interp"][1][1]
    model_b, _ = state.app_model(b, wait_s=120)  # the very model object the app used
    images = load_gallery(tmp_path / "run_b.gallery.npz", 1, 12).images
    labels = load_gallery(tmp_path / "run_b.gallery.npz", 1, 12).labels
    ib = int(np.flatnonzero(labels != labels[0])[0])  # the page's default image B: another class
    za, zb = compute.encode(model_b, images[[0]]), compute.encode(model_b, images[[ib]])
    want = compute.decode(model_b, interpolate(za, zb, 9, method="linear", level_weights=[1.0, 1.0]))
    assert not np.array_equal(frames_a, want), "the two fixture models must decode differently"
    np.testing.assert_array_equal(frames_b, want)


def test_model_card_images_are_shown_by_the_page_not_linked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A model card's ``![](samples.png)`` would make the browser ask the app's server for a file it does not
    serve (a broken image); the page shows the local file as a picture and fetches nothing remote."""
    from app import compute

    ckpt = make_fixture_model(tmp_path, "card", 1, 8, 2)
    grid = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    (tmp_path / "card.samples.png").write_bytes(png_bytes(grid))
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="2"/></svg>\n'
    (tmp_path / "card.curve.svg").write_text(svg)
    (tmp_path / "README.md").write_text(
        "# card\n\n![card samples](card.samples.png)\n\ntext ![remote](https://example.com/x.png) "
        "![outside](../secret.png) ![card curve](card.curve.svg)\n"
    )
    shown: list[np.ndarray] = []
    real = compute.png_bytes
    monkeypatch.setattr(compute, "png_bytes", lambda image, *a, **k: shown.append(image) or real(image, *a, **k))
    at = goto(open_app(monkeypatch, ckpt), "how_it_works")
    assert not any("![" in m.value for m in at.markdown)
    assert "card samples" in image_urls(at)
    assert any(np.array_equal(im, grid.transpose(2, 0, 1)) for im in shown), "the card's picture, pixel for pixel"
    assert image_urls(at)["card curve"] == ["data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()]
    captions = [c.value for c in at.caption]
    assert "(image not shown: remote)" in captions and "(image not shown: outside)" in captions


def test_every_result_offers_png_and_npz_through_one_widget(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path) -> None:
    """Every page's downloads come from widgets.result_downloads: a lossless PNG of what is shown, the latents
    as a pickle-free .npz (made only when asked for), and the animation on Interpolate."""
    import io
    import zipfile

    from app import widgets

    offered: dict[str, list[tuple[str, object, str, str]]] = {}
    real = widgets.downloads
    monkeypatch.setattr(
        widgets, "downloads", lambda items, key: offered.setdefault(key, list(items)) and real(items, key)
    )
    at = open_app(monkeypatch, fixture_dir / "grey12.safetensors")
    for page in PAGES:
        goto(at, page)
    kinds = {key.split("|")[-1]: [name.rsplit(".", 1)[-1] for _, _, name, _ in items] for key, items in offered.items()}
    assert kinds == {
        "reconstruction_dl": ["png", "npz"],
        "interpolation_dl": ["png", "gif", "npz"],
        "manifold_dl": ["png", "npz"],
        "scales_dl": ["png", "npz"],
        "mix_dl": ["png", "npz"],
        "samples_dl": ["png", "npz"],
        "attribute_dl": ["png", "npz"],
    }, kinds
    for items in offered.values():
        for _, make, name, mime in items:
            data = make()  # type: ignore[operator]
            if name.endswith(".npz"):
                with np.load(io.BytesIO(data), allow_pickle=False) as f:
                    assert "level_1" in f.files
                assert zipfile.is_zipfile(io.BytesIO(data))
            else:
                assert mime == f"image/{name.rsplit('.', 1)[-1]}" and data[:4] in (b"\x89PNG", b"GIF8")


def test_settings_survive_a_visit_to_another_page(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path) -> None:
    """Streamlit forgets the widgets of a page that is not drawn; the app keeps them, so coming back shows the
    same settings and results, and no widget that cannot be set (buttons, uploads, downloads) is touched."""
    at = goto(open_app(monkeypatch, fixture_dir / "grey12.safetensors"), "sample")
    by_label(at.number_input, "Seed").set_value(11).run()
    by_label(at.slider, "Grid side").set_value(5).run()
    goto(at, "interpolate")
    panel_change(at, weights=[1.0, 0.0])
    panel_change(at, steps=5)
    memo = at.session_state["_memo:interp"][0]
    goto(at, "encode")
    by_label(at.number_input, "Gallery image").set_value(4).run()
    for page in PAGES:  # every page, with buttons, uploaders and downloads drawn along the way
        goto(at, page)
    goto(at, "sample")
    assert by_label(at.number_input, "Seed").value == 11 and by_label(at.slider, "Grid side").value == 5
    assert any(c.startswith("25 samples, seed 11") for c in image_urls(at)), list(image_urls(at))
    goto(at, "interpolate")
    assert panel_data(at)["settings"] == {"method": "linear", "steps": 5, "weights": [1.0, 0.0]}
    assert at.session_state["_memo:interp"][0] == memo, "the memoised path is reused, not recomputed"
    goto(at, "encode")
    assert by_label(at.number_input, "Gallery image").value == 4


def test_sample_rows_of_temperatures_are_the_trainers_grid(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path) -> None:
    """The Sample page's temperature rows are the draws of the trainer's (and the model card's) sample grid."""
    from train.evaluate import sample_grid

    at = goto(open_app(monkeypatch, fixture_dir / "grey12.safetensors"), "sample")
    by_label(at.number_input, "Seed").set_value(3).run()
    by_label(at.toggle, "Rows of temperatures").set_value(True).run()
    assert not problems(at), problems(at)
    rows = at.session_state["_memo:sample_rows"][1]
    assert rows.shape == (40, 1, 12, 12)
    model, _ = load_model(fixture_dir / "grey12.safetensors")
    card = sample_grid(model, (1.0, 0.85, 0.7, 0.5), 10, seed=3)  # uint8 [H', W', 1], cells upscaled and padded
    k, pad = -(-32 // 12), 2
    for r in range(4):
        for j in range(10):
            top, left = pad + r * (12 * k + pad), pad + j * (12 * k + pad)
            cell = card[top : top + 12 * k : k, left : left + 12 * k : k, 0]
            assert np.abs(cell.astype(int) - rows[r * 10 + j, 0].astype(int)).max() <= 1  # fast path: ≤ 1 grey level
    assert any("T = 1, 0.85, 0.7, 0.5" in c for c in image_urls(at))
