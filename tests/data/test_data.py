"""The data-source resolver on every kind of source, made in the test."""

import pickle

import numpy as np
import pytest
import torch
from conftest import SHARED_CIFAR, needs_shared_cifar
from PIL import Image

from deconvviz import DeconvvizError, load_data
from deconvviz.data.builtin import BUILTIN_CLASSES, synthetic_images
from deconvviz.data.resolve import resolve_source
from deconvviz.data.source import ImageDataset, normalize


def _write_batch(path, images, labels):
    with open(path, "wb") as f:
        pickle.dump({"data": images.reshape(len(images), -1), "labels": list(labels)}, f)


def test_official_cifar_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8) for _ in range(5)]
    for i, imgs in enumerate(train, 1):
        _write_batch(root / f"data_batch_{i}", imgs, [i % 10] * 4)
    test = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    _write_batch(root / "test_batch", test, [7, 8, 9])
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    src = resolve_source(str(tmp_path), split="test")  # the parent folder works too
    assert len(src) == 3 and src.labels.tolist() == [7, 8, 9]
    assert torch.equal(src.read(0, 3), torch.from_numpy(test))
    assert src.class_names[0] == "c0"
    tr = resolve_source(str(root), split="train")
    assert len(tr) == 20
    assert torch.equal(tr.read(4, 8), torch.from_numpy(train[1]))
    assert tr.labels[4:8].tolist() == [2, 2, 2, 2]


def test_official_missing_batch_is_clear(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    _write_batch(root / "test_batch", np.zeros((1, 3, 32, 32), np.uint8), [0])
    with pytest.raises(DeconvvizError, match="has no data_batch_1 .needed for split 'train'."):
        resolve_source(str(root), split="train")


def test_download_offline_fails_with_one_line(tmp_path, offline):
    with pytest.raises(DeconvvizError) as err:
        resolve_source(str(tmp_path / "dl"), split="test", download=True)
    msg = str(err.value)
    assert msg.startswith(f"could not download CIFAR-10 into {tmp_path / 'dl'}")
    assert "point --data at an existing copy" in msg and "\n" not in msg


def _image_tree(root, classes=("cat", "dog"), per=3, size=32):
    rng = np.random.default_rng(1)
    arrays = {}
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per):
            a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i:02d}.png")
            arrays[(c, i)] = a
    return arrays


def test_imagefolder_order_labels_and_cache(tmp_path, monkeypatch):
    arrays = _image_tree(tmp_path / "tree")
    src = resolve_source(str(tmp_path / "tree"))
    assert src.class_names == ["cat", "dog"]
    assert src.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(src.read(4, 5)[0].permute(1, 2, 0).numpy(), arrays[("dog", 1)])
    # The same order as torchvision's ImageFolder.
    from torchvision.datasets import ImageFolder

    assert [s[0] for s in ImageFolder(str(tmp_path / "tree")).samples] == src.paths
    # A second resolve reads the cache and decodes nothing.
    import deconvviz.data.folders as data_mod

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data_mod, "_decode", no_decode)
    again = resolve_source(str(tmp_path / "tree"))
    assert torch.equal(again.read(0, 6), src.read(0, 6))
    assert again.fingerprint == src.fingerprint


def test_the_decode_cache_notices_changed_added_and_removed_files(tmp_path):
    root = tmp_path / "tree"
    arrays = _image_tree(root)
    first = resolve_source(str(root))
    assert np.array_equal(first.read(1, 2)[0].permute(1, 2, 0).numpy(), arrays[("cat", 1)])
    rng = np.random.default_rng(7)
    # Rewritten in place: the same name, so the folder's entries do not change.
    changed = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    entries = sorted(p.name for p in (root / "cat").iterdir())
    Image.fromarray(changed).save(root / "cat" / "01.png")
    assert sorted(p.name for p in (root / "cat").iterdir()) == entries
    again = resolve_source(str(root))
    assert np.array_equal(again.read(1, 2)[0].permute(1, 2, 0).numpy(), changed)
    assert again.fingerprint != first.fingerprint
    added = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(added).save(root / "dog" / "03.png")
    more = resolve_source(str(root))
    assert len(more) == 7 and more.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert np.array_equal(more.read(6, 7)[0].permute(1, 2, 0).numpy(), added)
    (root / "cat" / "00.png").unlink()
    fewer = resolve_source(str(root))
    assert len(fewer) == 6 and fewer.labels.tolist() == [0, 0, 1, 1, 1, 1]
    assert np.array_equal(fewer.read(0, 1)[0].permute(1, 2, 0).numpy(), changed)
    assert np.array_equal(fewer.read(2, 3)[0].permute(1, 2, 0).numpy(), arrays[("dog", 0)])


def test_train_test_parent_folder(tmp_path):
    _image_tree(tmp_path / "d" / "train", per=2)
    _image_tree(tmp_path / "d" / "test", per=1)
    assert len(resolve_source(str(tmp_path / "d"), split="train")) == 4
    assert len(resolve_source(str(tmp_path / "d"), split="test")) == 2


def test_loose_images_converted_and_resized_with_notice(tmp_path, capsys):
    folder = tmp_path / "loose"
    folder.mkdir()
    Image.fromarray(np.full((40, 50), 128, np.uint8)).save(folder / "a_gray.png")
    Image.fromarray(np.zeros((32, 32, 4), np.uint8), "RGBA").save(folder / "b_rgba.png")
    src = resolve_source(str(folder))
    assert len(src) == 2 and src.shape == (3, 32, 32)
    assert src.labels.tolist() == [-1, -1]
    err = capsys.readouterr().err
    assert "converted 2 image(s) to RGB" in err and "resized 1 image(s) to 32x32" in err
    single = resolve_source(str(folder / "a_gray.png"))
    assert len(single) == 1 and int(single.read(0, 1).float().mean().round()) == 128


def test_builtin_is_deterministic_and_structured():
    a, la = synthetic_images(40, seed=3)
    b, lb = synthetic_images(40, seed=3)
    c, _ = synthetic_images(40, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert sorted(set(la.tolist())) == list(range(len(BUILTIN_CLASSES)))
    # Real structure, not noise: neighbouring pixels are strongly correlated.
    x = a.float()
    corr = torch.corrcoef(torch.stack([x[..., :, 1:].flatten(), x[..., :, :-1].flatten()]))[0, 1]
    assert corr > 0.8
    src = resolve_source("builtin", split="test")
    assert len(src) == 2000 and src.class_names == list(BUILTIN_CLASSES)


def test_load_data_is_a_normalised_dataset(tiny_checkpoint):
    from deconvviz import load_model

    model = load_model(tiny_checkpoint)
    ds = load_data("builtin", model)
    assert isinstance(ds, ImageDataset) and len(ds) == 2000
    img, label = ds[5]
    raw = ds.source.read(5, 6)
    assert torch.allclose(img, normalize(raw, [0.5] * 3, [0.25] * 3)[0])
    assert label == int(ds.source.labels[5])


@pytest.mark.parametrize(
    "bad,msg",
    [
        ("{tmp}/nope", "data path {tmp}/nope does not exist"),
        ("{tmp}/empty", "no images found in {tmp}/empty"),
    ],
)
def test_bad_paths_are_clear(tmp_path, bad, msg):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeconvvizError, match="^" + msg.format(tmp=tmp_path)):
        resolve_source(bad.format(tmp=tmp_path))


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DeconvvizError, match=r"^cannot read image .*broken\.jpg: "):
        resolve_source(str(tmp_path / "t"))


@needs_shared_cifar()
def test_shared_cifar_test_split():
    src = resolve_source(str(SHARED_CIFAR), split="test")
    assert len(src) == 10000 and src.kind == "imagefolder"
    assert src.class_names[5] == "dog"
    assert torch.bincount(src.labels).tolist() == [1000] * 10


def test_image_folder_listing_is_torchvisions(tmp_path):
    """deconvviz lists folders itself (importing torchvision costs a second of start-up);
    the order and the files kept are torchvision's ImageFolder's."""
    from torchvision.datasets.folder import find_classes, make_dataset

    from deconvviz.data.folders import IMAGE_EXTENSIONS, imagefolder_entries

    root = tmp_path / "tree"
    for rel in [
        "b/z.png",
        "b/A.JPG",
        "b/sub/deeper/c.jpeg",
        "b/sub/a.txt",
        "a/x.webp",
        "a/.hidden.png",
        "a/10.png",
        "a/9.png",
        "a/notes.md",
        "c d/ü.tiff",
        "empty/readme.txt",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    (root / "stray.png").write_bytes(b"")  # a file at the top is not a class
    (root / "a" / "linked").symlink_to(root / "b" / "sub", target_is_directory=True)
    classes, samples = imagefolder_entries(root)
    want_classes, to_idx = find_classes(str(root))
    assert classes == want_classes == ["a", "b", "c d", "empty"]
    assert samples == make_dataset(str(root), to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True)
    assert any("linked" in p for p, _ in samples)
    with pytest.raises(DeconvvizError, match="cannot read image folder .*class folder"):
        imagefolder_entries(root / "empty")
