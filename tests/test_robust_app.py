"""The app under hostile input (AppTest): every hostile image on Encode gives st.error or works, never an
exception; pickles offered as checkpoints (upload or models folder) are refused and never run; two
sessions with different settings, interleaved, both get the right results and the shared cached model is
never changed."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import APP, TIMEOUT, by_label, make_fixture_model, problems, record_latent_images
from hostile import corpus
from panel_driver import panel_change
from streamlit.testing.v1 import AppTest

from app.widgets import IMAGE_TYPES
from nvp_core import RealNVP, load_model
from nvp_core.latent import interpolate
from nvp_core.likelihood import fixed_noise_bits_per_dim

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
        ".bmp": "image/bmp", ".tif": "image/tiff"}  # fmt: skip
IMAGE_SUFFIXES = {f".{t}" for t in IMAGE_TYPES}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("robust_models")
    make_fixture_model(folder, "grey12", 1, 12, 2, seed=0)
    return folder


def _open(monkeypatch: pytest.MonkeyPatch, folder: Path, page: str) -> AppTest:
    monkeypatch.setenv("NVP_MODELS_DIR", str(folder))
    monkeypatch.setenv("NVP_APP_GALLERY_MAX", "40")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not problems(at), problems(at)
    at.switch_page(f"views/{page}.py").run()
    assert not problems(at), problems(at)
    return at


def _payload(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"state_dict": Payload()}, protocol=4)


@pytest.mark.timeout(600)
def test_every_hostile_image_uploaded_on_encode_errors_or_works(monkeypatch, models: Path) -> None:
    at = _open(monkeypatch, models, "encode")
    by_label(at.radio, "Image source").set_value("Upload").run()
    outcomes = {}
    for case in corpus():
        # The uploader only takes its listed suffixes (Streamlit enforces them); other files go in as .png.
        name = case.filename if Path(case.filename).suffix in IMAGE_SUFFIXES else f"{case.filename}.png"
        mime = MIME.get(Path(name).suffix, "application/octet-stream")
        by_label(at.file_uploader, "An image file").set_value((name, case.data, mime)).run()
        assert not at.exception, (case.name, [e.message for e in at.exception])
        errors = [e.value for e in at.error]
        outcomes[case.name] = "error" if errors else "ok"
        if case.expect == "error":
            assert len(errors) == 1 and errors[0].startswith(f"Cannot use {name}"), (case.name, errors)
        else:
            assert not errors, (case.name, errors)
            assert any(m.label == "bits/dim" for m in at.metric), case.name
    assert outcomes == {c.name: c.expect for c in corpus()}


@pytest.mark.timeout(300)
def test_a_pickle_uploaded_as_a_checkpoint_is_refused_and_never_runs(monkeypatch, models: Path, tmp_path) -> None:
    marker = tmp_path / "pwned"
    blob = _payload(marker)
    at = _open(monkeypatch, models, "encode")
    for name in ("model.pt", "model.pkl", "model.safetensors", "model.SAFETENSORS"):
        by_label(at.sidebar.file_uploader, "checkpoint").set_value((name, blob, "application/octet-stream")).run()
        assert not at.exception, [e.message for e in at.exception]
        assert any(name in e.value for e in at.error), (name, [e.value for e in at.error])
        assert at.selectbox(key="model_choice").value == str(models / "grey12.safetensors")
    # A torch.save archive renamed .safetensors is refused the same way.
    zip_path = tmp_path / "zip.safetensors"
    torch.save({"x": torch.zeros(1)}, zip_path)
    by_label(at.sidebar.file_uploader, "checkpoint").set_value(("zip.safetensors", zip_path.read_bytes(), "")).run()
    assert not at.exception and any("zip.safetensors" in e.value for e in at.error)
    assert not marker.exists()


@pytest.mark.timeout(300)
def test_pickles_in_the_models_folder_are_never_offered_or_run(monkeypatch, models: Path, tmp_path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for f in models.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    marker = tmp_path / "pwned"
    for name in ("evil.pt", "evil.pkl", "evil.pth", "evil.safetensors"):
        (folder / name).write_bytes(_payload(marker))
    monkeypatch.setenv("NVP_MODELS_DIR", str(folder))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    choice = at.selectbox(key="model_choice")
    assert sorted(choice.options) == ["evil", "grey12"]  # labels: no .pt, .pkl or .pth offered
    # Whichever is picked first, the pickle only ever gets a clear refusal.
    choice.set_value(str(folder / "evil.safetensors")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("not a .safetensors checkpoint" in e.value for e in at.error), [e.value for e in at.error]
    at.selectbox(key="model_choice").set_value(str(folder / "grey12.safetensors")).run()
    at.switch_page("views/encode.py").run()
    assert not problems(at), problems(at)
    assert not marker.exists()


def _fingerprint(model: RealNVP) -> tuple[str, bool, bool]:
    """A hash of every parameter and buffer, the training flag, and whether any parameter wants gradients."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest(), model.training, any(p.requires_grad for p in model.parameters())


@pytest.mark.timeout(600)
def test_two_interleaved_sessions_get_their_own_results_and_never_change_the_shared_model(
    monkeypatch, models: Path
) -> None:
    import app.state as app_state

    ckpt = models / "grey12.safetensors"
    fresh, _ = load_model(ckpt)  # an independent copy to compute the expected results with
    fresh.eval().set_channels_last(True)  # the layout the app runs its model in
    monkeypatch.setenv("NVP_FASTPATH", "fp32-cl")  # pinned: the app's measured choice depends on the machine
    loads = []
    real_load = app_state.load_model
    monkeypatch.setattr(app_state, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    drawn = record_latent_images(monkeypatch)  # the latents behind each latent image, in drawing order

    a = _open(monkeypatch, models, "sample")
    b = _open(monkeypatch, models, "sample")
    # The object both sessions use once its preparation is done (an earlier test may have started it in the
    # background; the prepared copy then replaces the model as loaded).
    shared, _ = app_state.app_model(ckpt, wait_s=600)
    assert len(loads) <= 1, "the model must be loaded once and shared"
    before = _fingerprint(shared)
    assert before[1:] == (False, False)
    assert before[0] == _fingerprint(fresh)[0]

    def expect_samples(at: AppTest, seed: int, n: int, temps: list[float]) -> None:
        key, (frames, _), _ = at.session_state["_memo:sample"]  # (key, value, model key)
        assert key[:3] == (seed, n, tuple(temps)), key
        zs = fresh.sample_latents(n * n, temps, generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            want = (fresh.inverse(zs) * 256).floor().clamp(0, 255).to(torch.uint8).numpy()
        np.testing.assert_array_equal(frames, want)

    def expect_encoding(at: AppTest, index: int) -> None:
        g = np.load(models / "grey12.gallery.npz")
        x = (torch.from_numpy(g["images"][index : index + 1]).float() + 0.5) / 256
        with torch.inference_mode():
            zs, _ = fresh(x)
        images = torch.from_numpy(g["images"][index : index + 1])  # bits/dim: nvp_core's one convention
        bpd = float(fixed_noise_bits_per_dim(fresh, images, first_index=index)[0])
        assert next(m.value for m in at.metric if m.label == "bits/dim") == f"{bpd:.3f}"
        np.testing.assert_allclose(drawn[-fresh.num_levels], zs[0][0].numpy(), atol=1e-4)

    def expect_path(at: AppTest, ia: int, ib: int, steps: int, method: str, weights: list[float]) -> None:
        key, value, _ = at.session_state["_memo:interp"]
        frames = value[1] if isinstance(value, tuple) else value  # (latent path, frames) or frames
        assert key[1:] == (method, steps, tuple(weights)), key
        g = np.load(models / "grey12.gallery.npz")
        x = (torch.from_numpy(g["images"][[ia, ib]]).float() + 0.5) / 256
        with torch.inference_mode():
            zs, _ = fresh(x)
            path = interpolate([z[:1] for z in zs], [z[1:] for z in zs], steps, method=method, level_weights=weights)
            want = (fresh.inverse(path) * 256).floor().clamp(0, 255).to(torch.uint8).numpy()
        np.testing.assert_array_equal(frames, want)

    def ok(at: AppTest) -> None:
        assert not problems(at), problems(at)

    # Interleaved: each step changes one session, then the other, and checks both.
    by_label(a.number_input, "Seed").set_value(11).run()
    by_label(b.number_input, "Seed").set_value(22).run()
    by_label(b.slider, "T, level 1").set_value(0.3).run()
    ok(a), ok(b)
    expect_samples(a, 11, 3, [0.8, 0.8])
    expect_samples(b, 22, 3, [0.3, 0.8])
    by_label(a.slider, "Grid side").set_value(5).run()
    by_label(b.slider, "T, level 2").set_value(1.1).run()
    ok(a), ok(b)
    expect_samples(a, 11, 5, [0.8, 0.8])
    expect_samples(b, 22, 3, [0.3, 1.1])

    a.switch_page("views/encode.py").run()
    b.switch_page("views/interpolate.py").run()
    ok(a), ok(b)
    by_label(a.number_input, "Gallery image").set_value(5).run()
    panel_change(b, weights=[0.25, 1.0])
    panel_change(b, method="spherical")
    ok(a), ok(b)
    expect_encoding(a, 5)
    gb = b.session_state["_memo:interp"][0]
    ia, ib = 0, int(np.load(models / "grey12.gallery.npz")["labels"].tolist().index(1))
    expect_path(b, ia, ib, 9, "spherical", [0.25, 1.0])
    by_label(a.number_input, "Gallery image").set_value(7).run()
    expect_encoding(a, 7)
    expect_path(b, ia, ib, 9, "spherical", [0.25, 1.0])
    assert b.session_state["_memo:interp"][0] == gb  # b's results did not move when a changed

    after = _fingerprint(shared)
    assert after == before, "a session changed the shared model"
    assert app_state.app_model(ckpt)[0] is shared
    assert len(loads) <= 1


@pytest.mark.timeout(300)
def test_hostile_files_beside_a_model_are_refused_or_ignored(monkeypatch, models: Path, tmp_path) -> None:
    """A gallery holding a pickled object array, a binary metrics file and a model card with HTML/script:
    the pages still work, the gallery gets a warning, nothing is unpickled, no script is rendered."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "grey12.safetensors").write_bytes((models / "grey12.safetensors").read_bytes())
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    objects = np.empty(2, dtype=object)
    objects[:] = [Payload(), Payload()]
    np.savez(folder / "grey12.gallery.npz", images=objects, labels=np.zeros(2, np.int64))
    (folder / "grey12.metrics.jsonl").write_bytes(
        b'\x00\xff garbage\n{"step": 1, "test_bpd": NaN}\n[1, 2]\n{"step": 2, "test_bpd": 1e308}\n{"step": '
    )
    (folder / "README.md").write_text("# card\n<script>document.title='pwned'</script><img src=x onerror=alert(1)>")
    monkeypatch.setenv("NVP_MODELS_DIR", str(folder))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    for page in ("encode", "how_it_works"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.message for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
    cards = [m for m in at.markdown if "<script>" in m.value]  # How it works shows the model card
    assert cards and not any(m.proto.allow_html for m in cards)
    at.switch_page("views/encode.py").run()
    assert any("gallery" in w.value.lower() or "grey12.gallery.npz" in w.value for w in at.warning), [
        w.value for w in at.warning
    ]
    assert not marker.exists()


HOSTILE_TEXT = [
    "²",
    "9" * 5000,
    "-1",
    "1e3",
    "٣",
    " , ;; ,",
    "3, 17, 99999999999999999999",
    "\x00",
    "<script>x</script>",
]


@pytest.mark.timeout(300)
def test_hostile_text_in_every_text_box_gives_a_message_not_an_exception(monkeypatch, models: Path) -> None:
    """Attributes takes gallery indices as free text ("3, 17, 42"): superscript digits (str.isdigit() is
    true, int() fails) and 5000-digit numbers (beyond int()'s limit) must be reported, not crash."""
    at = _open(monkeypatch, models, "attributes")
    by_label(at.radio, "Direction from").set_value("Your own sets").run()
    boxes = [t.label for t in at.text_input]
    assert boxes
    crashes = []
    for label in boxes:
        for text in HOSTILE_TEXT:
            by_label(at.text_input, label).set_value(text).run()
            if at.exception:
                crashes.append(f"{label!r} <- {text[:12]!r}: {at.exception[0].message[:120]}")
        by_label(at.text_input, label).set_value("").run()
    assert not crashes, crashes


@pytest.mark.timeout(300)
def test_sessions_share_results_that_are_the_same_and_cannot_change_them(monkeypatch, models: Path) -> None:
    """Two sessions asking for the same samples decode them once; the shared arrays are read-only, and a
    session asking for something else still gets its own result."""
    from app import compute

    calls: list[int] = []
    real = compute.decode_fine  # the call that makes the grid's pixels (widgets.decode_levels)
    monkeypatch.setattr(compute, "decode_fine", lambda model, h, zs: calls.append(len(h)) or real(model, h, zs))
    a = _open(monkeypatch, models, "sample")
    b = _open(monkeypatch, models, "sample")
    calls.clear()  # the default grid may or may not be another test's shared result already
    seed = 424_242  # not used by any other test: the shared results live as long as the process
    by_label(a.number_input, "Seed").set_value(seed).run()
    assert calls == [9], calls
    by_label(b.number_input, "Seed").set_value(seed).run()
    assert calls == [9], "the second session must reuse the first one's grid"
    frames_a, frames_b = a.session_state["_memo:sample"][1][0], b.session_state["_memo:sample"][1][0]
    assert frames_a is frames_b and not frames_a.flags.writeable
    with pytest.raises(ValueError):
        frames_a[0, 0, 0, 0] = 1
    by_label(b.number_input, "Seed").set_value(seed + 1).run()
    assert calls == [9, 9]
    assert not (b.session_state["_memo:sample"][1][0] == frames_a).all()
    assert not problems(a) and not problems(b)
