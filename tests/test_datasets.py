"""Dataset readers on small fixtures written by the tests: IDX files, a folder of mixed and broken images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from train.data import FASHION_CLASSES, DataError, load_dataset, resize
from train.data.folder import load_folder
from train.data.idx import IdxError, read_idx, write_idx


def write_fake_fashion(folder, n_train=20, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", y)
        data[split] = (x, y)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, x)
    assert np.array_equal(read_idx(path), x)


def test_idx_rejects_bad_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(IdxError, match="bad magic"):
        read_idx(tmp_path / "junk")
    write_idx(tmp_path / "ok", np.zeros((4, 5), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(IdxError, match="expected 20 bytes"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path, gz):
    data = write_fake_fashion(tmp_path, gz=gz)
    s = load_dataset("fashion-mnist", tmp_path)
    assert s.train.shape == (20, 1, 28, 28) and s.test.shape == (10, 1, 28, 28)
    assert s.train.dtype == torch.uint8 and s.train_labels.dtype == torch.int64
    assert np.array_equal(s.train[:, 0].numpy(), data["train"][0])
    assert np.array_equal(s.test_labels.numpy(), data["t10k"][1])
    assert s.class_names == FASHION_CLASSES and not s.flip


def test_fashion_mnist_conversion_to_size_and_channels(tmp_path):
    write_fake_fashion(tmp_path)
    s = load_dataset("fashion-mnist", tmp_path, image_size=32, channels=3)
    assert s.train.shape == (20, 3, 32, 32)
    assert torch.equal(s.train[:, 0], s.train[:, 2])


def test_fashion_mnist_missing_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="dataset-fashion-mnist") as e:
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    assert "--data-dir" in str(e.value)


def test_digits():
    s = load_dataset("digits", test_fraction=0.2)
    assert s.train.shape[1:] == (1, 8, 8) and len(s.train) + len(s.test) == 1797
    assert abs(len(s.test) - 359) <= 1
    assert s.train.max() == 255 and s.train.min() == 0
    again = load_dataset("digits", test_fraction=0.2)
    assert torch.equal(s.test, again.test), "the split must not depend on anything but the fraction"


def test_resize_keeps_constant_images_constant():
    x = torch.full((3, 1, 28, 28), 77, dtype=torch.uint8)
    assert torch.equal(resize(x, 16), torch.full((3, 1, 16, 16), 77, dtype=torch.uint8))


def make_image_folder(root):
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "deep").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "cats" / f"c{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(root / "dogs" / f"d{i}.png")
    Image.fromarray(np.zeros((16, 16, 4), np.uint8)).save(root / "dogs" / "deep" / "alpha.png")
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (root / "dogs" / "not_an_image.png").write_bytes(b"hello")
    (root / "notes.txt").write_text("ignored: not an image suffix")


def test_folder_of_mixed_and_broken_images(tmp_path):
    make_image_folder(tmp_path)
    s = load_folder(tmp_path, image_size=16, channels=0, test_fraction=0.25)
    assert s.skipped == 2
    assert len(s.train) + len(s.test) == 9 and len(s.test) == 2
    assert s.train.shape[1:] == (3, 16, 16), "some images are colour, so the default is RGB"
    assert s.class_names == ["cats", "dogs"]
    labels = torch.cat([s.train_labels, s.test_labels])
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 5


def test_folder_grayscale_and_through_load_dataset(tmp_path):
    make_image_folder(tmp_path)
    s = load_dataset(f"folder:{tmp_path}", image_size=8, channels=1, flip=True)
    assert s.train.shape[1:] == (1, 8, 8) and s.flip


def test_folder_without_images(tmp_path):
    (tmp_path / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="1 unreadable skipped"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_training_resize_is_the_apps_crop_and_resize():
    import numpy as np
    from PIL import Image

    from nvp_core.images import to_array
    from train.data import resize

    x = torch.randint(0, 256, (2, 3, 31, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = resize(x, 14)
    for i in range(2):
        for c in range(3):
            assert np.array_equal(out[i, c].numpy(), to_array(Image.fromarray(x[i, c].numpy()), 1, 14)[0])


def test_fixed_split_is_one_rule_for_every_dataset():
    from train.data import fixed_split

    tr, te = fixed_split(1797, 0.2)
    assert len(te) == 359 and len(set(tr) | set(te)) == 1797 and not set(tr) & set(te)
    again = fixed_split(1797, 0.2)
    assert (again[0] == tr).all() and (again[1] == te).all()
    assert len(fixed_split(3, 0.01)[1]) == 1  # at least one test item


def test_the_validation_split_is_fixed_disjoint_and_never_in_training():
    from train.data import load_dataset, validation_indices

    whole = load_dataset("digits")
    held = load_dataset("digits", validation_images=50)
    idx = validation_indices(len(whole.train), 50)
    assert torch.equal(held.validation, whole.train[torch.from_numpy(idx)])
    assert torch.equal(held.validation_labels, whole.train_labels[torch.from_numpy(idx)])
    assert len(held.train) == len(whole.train) - 50 and torch.equal(held.test, whole.test)
    rest = np.setdiff1d(np.arange(len(whole.train)), idx)
    assert torch.equal(held.train, whole.train[torch.from_numpy(rest)])
    assert np.array_equal(idx, validation_indices(len(whole.train), 50))  # seed-independent


def test_a_validation_split_as_large_as_the_training_set_is_a_clear_error():
    from train.data import DataError, load_dataset

    with pytest.raises(DataError, match="validation-images"):
        load_dataset("digits", validation_images=10_000)
