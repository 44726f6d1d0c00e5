"""trompe.evaluation.data: listing and reading the data sets that an evaluation runs on."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trompe.errors import ImageError, InvalidArgumentError, MissingDependencyError, TrompeError
from trompe.evaluation.data import EvalData, load_data
from trompe.images import center_crop_resize, load_image, quantize
from trompe.models import Classifier, load_model
from trompe.models.digits import DigitsData


@pytest.fixture(scope="module")
def robust() -> Classifier:
    """The shipped adversarially trained digits CNN: 8x8 input, classes "0".."9"."""
    return load_model("digits_robust")


def write_image(path: Path, size: tuple[int, int] = (8, 8), seed: int = 0) -> np.ndarray:
    """A random RGB image saved losslessly (PNG) or as the extension says; returns its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def digit_folder(root: Path, per_class: int = 2, classes: int = 10) -> Path:
    for c in range(classes):
        for k in range(per_class):
            write_image(root / str(c) / f"img{k}.png", seed=c * 100 + k)
    return root


def read_all(data: EvalData, batch_size: int = 7) -> tuple[torch.Tensor, list[str], list]:
    images, ids, skipped = [], [], []
    for k in range(data.num_chunks(batch_size)):
        chunk = data.chunk(k, batch_size)
        images.append(chunk.images)
        ids.extend(chunk.ids)
        skipped.extend(chunk.skipped)
    return torch.cat(images), ids, skipped


def rand(*shape: int) -> torch.Tensor:
    """Uniform floats in [0, 1), from a fixed seed (the global generator is left alone)."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def one_line(error: pytest.ExceptionInfo[BaseException], *words: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


# -- folders -----------------------------------------------------------------------------------


def test_folder_by_index_lists_sorted_and_reads_chunks(tmp_path: Path, robust: Classifier) -> None:
    root = digit_folder(tmp_path / "val")
    (root / "3" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    write_image(root / ".hidden" / "x.png")
    write_image(root / "9" / ".x.png")
    data = load_data(root, robust)
    assert len(data) == 20
    assert list(data.ids) == sorted(data.ids)
    assert data.ids[0] == "0/img0.png"
    assert data.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert data.description["kind"] == "folder"
    assert data.description["n"] == 20 and data.description["classes"] == 10
    assert data.num_chunks(7) == 3
    chunk = data.chunk(2, 7)
    assert chunk.positions == tuple(range(14, 20)) and len(chunk) == 6
    assert chunk.labels.tolist() == data.labels[14:].tolist()
    # 8x8 files at the model's input size are read unchanged, exactly.
    expected = load_image(root / chunk.ids[0])
    assert torch.equal(chunk.images[0], expected)


def test_folder_images_resized_as_the_model_says_on_the_8bit_grid(
    tmp_path: Path, robust: Classifier
) -> None:
    write_image(tmp_path / "d" / "4" / "big.png", size=(30, 20))
    data = load_data(tmp_path / "d", robust)
    image = data.chunk(0, 4).images[0]
    assert image.shape == (3, 8, 8)
    raw = load_image(tmp_path / "d" / "4" / "big.png")
    expected = quantize(
        center_crop_resize(
            raw,
            robust.input_size,
            crop_fraction=robust.crop_fraction,
            interpolation=robust.interpolation,
        )
    )
    assert torch.equal(image, expected)
    assert torch.equal(image, torch.round(image * 255) / 255)


def test_folder_names_matched_against_imagenet_labels(
    tmp_path: Path, imagenet_clf: Classifier
) -> None:
    write_image(tmp_path / "v" / "tabby" / "a.jpg", size=(40, 30))
    write_image(tmp_path / "v" / "281" / "b.png", size=(30, 40))
    write_image(tmp_path / "v" / "German shepherd" / "c.png", size=(30, 30))
    data = load_data(tmp_path / "v", imagenet_clf)
    assert dict(zip(data.ids, data.labels.tolist(), strict=True)) == {
        "281/b.png": 281,
        "German shepherd/c.png": 235,
        "tabby/a.jpg": 281,
    }
    chunk = data.chunk(0, 8)
    assert chunk.images.shape == (3, 3, 224, 224)


def test_folder_unknown_or_ambiguous_class_name(tmp_path: Path, imagenet_clf: Classifier) -> None:
    write_image(tmp_path / "v" / "crane" / "a.png")
    with pytest.raises(InvalidArgumentError) as error:
        load_data(tmp_path / "v", imagenet_clf)
    one_line(error, "class folder 'crane'", "ambiguous", "134", "517", "name the folder by")
    os.rename(tmp_path / "v" / "crane", tmp_path / "v" / "lemmon")
    with pytest.raises(InvalidArgumentError) as error:
        load_data(tmp_path / "v", imagenet_clf)
    one_line(error, "'lemmon'", "lemon (951)", "trompe labels")


def test_folder_labels_outside_the_models_classes(tmp_path: Path, robust: Classifier) -> None:
    digit_folder(tmp_path / "d", classes=2)
    write_image(tmp_path / "d" / "12" / "x.png")
    with pytest.raises(InvalidArgumentError) as error:
        load_data(tmp_path / "d", robust)
    one_line(error, "'12'", "10 classes")
    os.rename(tmp_path / "d" / "12", tmp_path / "d" / "cat")
    with pytest.raises(InvalidArgumentError) as error:
        load_data(tmp_path / "d", robust)
    one_line(error, "'cat'", "trompe labels --model digits_robust cat")


def test_empty_folder_and_folders_without_images(tmp_path: Path, robust: Classifier) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError) as error:
        load_data(tmp_path / "empty", robust)
    one_line(error, "empty")
    (tmp_path / "noimg" / "3").mkdir(parents=True)
    (tmp_path / "noimg" / "3" / "a.txt").write_text("x")
    with pytest.raises(InvalidArgumentError) as error:
        load_data(tmp_path / "noimg", robust)
    one_line(error, "no images")
    write_image(tmp_path / "flat" / "a.png")
    with pytest.raises(InvalidArgumentError) as error:
        load_data(tmp_path / "flat", robust)
    one_line(error, "no class subfolders")
    with pytest.raises(InvalidArgumentError) as error:
        load_data(tmp_path / "missing", robust)
    one_line(error, "no such folder", "digits")


def test_loose_images_listed_as_skipped(tmp_path: Path, robust: Classifier) -> None:
    digit_folder(tmp_path / "d", classes=1)
    write_image(tmp_path / "d" / "stray.png")
    data = load_data(tmp_path / "d", robust)
    assert len(data) == 2
    assert data.skipped == (("stray.png", "not in a class folder"),)
    assert data.description["skipped"] == 1


def test_corrupt_image_skipped_and_listed_or_strict_error(
    tmp_path: Path, robust: Classifier
) -> None:
    root = digit_folder(tmp_path / "d", per_class=2, classes=2)
    (root / "1" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "1" / "empty.jpg").write_bytes(b"")
    data = load_data(root, robust)
    assert len(data) == 6
    images, ids, skipped = read_all(data, batch_size=4)
    assert images.shape == (4, 3, 8, 8)
    assert "1/bad.png" not in ids
    assert [(p, i) for p, i, _ in skipped] == [
        (data.ids.index("1/bad.png"), "1/bad.png"),
        (data.ids.index("1/empty.jpg"), "1/empty.jpg"),
    ]
    assert all(reason and "\n" not in reason for _, _, reason in skipped)
    chunk = data.chunk(0, 4)  # positions 0..3: 0/img0, 0/img1, 1/bad, 1/empty
    assert len(chunk) == 2 and len(chunk.skipped) == 2
    nothing = data.chunk(1, 2)  # positions 2, 3: both unreadable
    assert nothing.images.shape == (0, 3, 8, 8) and nothing.labels.shape == (0,)
    assert [p for p, _, _ in nothing.skipped] == [2, 3]
    with pytest.raises(ImageError) as error:
        load_data(root, robust, strict=True)
    one_line(error, "bad.png")
    # strict also fails at reading time when a file turns bad after listing
    (root / "1" / "bad.png").unlink()
    (root / "1" / "empty.jpg").unlink()
    data = load_data(root, robust, strict=True)
    (root / "1" / "img0.png").write_bytes(b"garbage")
    with pytest.raises(ImageError):
        data.chunk(0, 4)


def test_chunk_arguments_checked(tmp_path: Path, robust: Classifier) -> None:
    data = load_data(digit_folder(tmp_path / "d", classes=1), robust)
    for bad in (-1, 1, True):
        with pytest.raises(InvalidArgumentError):
            data.chunk(bad, 2)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        data.chunk(0, 0)


def test_model_without_input_size_keeps_sizes_but_chunk_must_agree(tmp_path: Path) -> None:
    net = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2)
    )
    clf = Classifier(net, labels=["a", "b"])
    write_image(tmp_path / "d" / "a" / "x.png", size=(5, 4))
    write_image(tmp_path / "d" / "b" / "y.png", size=(5, 4))
    data = load_data(tmp_path / "d", clf)
    assert data.chunk(0, 2).images.shape == (2, 3, 4, 5)
    write_image(tmp_path / "d" / "b" / "z.png", size=(6, 6))
    data = load_data(tmp_path / "d", clf)
    with pytest.raises(InvalidArgumentError) as error:
        data.chunk(0, 3)
    one_line(error, "different sizes", "input_size")


# -- subsets and fingerprints ------------------------------------------------------------------


def test_subset_deterministic_spread_and_nested(tmp_path: Path, robust: Classifier) -> None:
    root = digit_folder(tmp_path / "d", per_class=5)
    first = load_data(root, robust, n=20)
    again = load_data(root, robust, n=20)
    assert first.ids == again.ids
    assert first.description["fingerprint"] == again.description["fingerprint"]
    assert torch.bincount(first.labels, minlength=10).tolist() == [2] * 10
    assert list(first.ids) == sorted(first.ids)  # listing order kept
    smaller = load_data(root, robust, n=7)
    assert set(smaller.ids) < set(first.ids)
    assert len(set(smaller.labels.tolist())) == 7  # one per class before any second
    assert smaller.description["n"] == 7 and smaller.description["total"] == 50
    everything = load_data(root, robust, n=10_000)
    assert len(everything) == 50 and everything.description["total"] == 50
    assert everything.description["requested_n"] == 10_000
    for bad in (0, -3, True, 2.5):
        with pytest.raises(InvalidArgumentError) as error:
            load_data(root, robust, n=bad)  # type: ignore[arg-type]
        one_line(error, "n must be")


def test_subset_fills_in_from_larger_classes(robust: Classifier) -> None:
    images = torch.zeros(12, 3, 8, 8)
    labels = torch.tensor([0] * 10 + [1, 2])
    data = load_data((images, labels), robust, n=6)
    assert sorted(data.labels.tolist()) == [0, 0, 0, 0, 1, 2]


def test_fingerprint_changes_with_labels_and_ids(robust: Classifier) -> None:
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    a = load_data((images, torch.tensor([0, 1, 2, 3])), robust)
    b = load_data((images, torch.tensor([0, 1, 2, 4])), robust)
    c = load_data((images[:3], torch.tensor([0, 1, 2])), robust)
    prints = {d.description["fingerprint"] for d in (a, b, c)}
    assert len(prints) == 3
    assert len(a.description["fingerprint"]) == 64
    json.dumps(a.description)  # JSON-ready


# -- manifests ---------------------------------------------------------------------------------


def test_csv_and_jsonl_manifests(tmp_path: Path, imagenet_clf: Classifier) -> None:
    write_image(tmp_path / "m" / "imgs" / "a.png", size=(20, 20))
    write_image(tmp_path / "m" / "b.jpg", size=(30, 20))
    (tmp_path / "m" / "list.csv").write_text("path,label\nimgs/a.png,tabby\nb.jpg,951\n")
    data = load_data(tmp_path / "m" / "list.csv", imagenet_clf)
    assert data.ids == ("imgs/a.png", "b.jpg")
    assert data.labels.tolist() == [281, 951]
    assert data.description["kind"] == "manifest"
    assert data.chunk(0, 2).images.shape == (2, 3, 224, 224)
    lines = [{"path": "imgs/./a.png", "label": 281}, {"path": "b.jpg", "label": "lemon"}]
    (tmp_path / "m" / "list.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    data = load_data(tmp_path / "m" / "list.jsonl", imagenet_clf)
    assert data.ids == ("imgs/a.png", "b.jpg")
    assert data.labels.tolist() == [281, 951]


def test_manifest_missing_fields_and_bad_labels(tmp_path: Path, robust: Classifier) -> None:
    write_image(tmp_path / "a.png")
    cases = {
        "no_header.csv": ("a.png,3\n", "header"),
        "no_label.csv": ("path,label\na.png,\n", "row 2: no label"),
        "short.csv": ("path,label\na.png\n", "row 2: no label"),
        "empty.csv": ("path,label\n", "no images"),
        "range.csv": ("path,label\na.png,12\n", "row 2"),
        "name.csv": ("path,label\na.png,cat\n", "'cat'"),
        "nopath.jsonl": ('{"label": 3}\n', "row 1: no path"),
        "notjson.jsonl": ("{oops\n", "line 1 is not JSON"),
        "list.jsonl": ("[1, 2]\n", "line 1"),
    }
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InvalidArgumentError) as error:
            load_data(tmp_path / name, robust)
        one_line(error, words, name)


def test_manifest_paths_outside_its_folder_refused(tmp_path: Path, robust: Classifier) -> None:
    inside = tmp_path / "m"
    write_image(inside / "ok.png")
    write_image(tmp_path / "secret.png")
    (inside / "link.png").symlink_to(tmp_path / "secret.png")
    (inside / "dirlink").symlink_to(tmp_path)
    rows = {
        "absolute": str(tmp_path / "secret.png"),
        "dotdot": "../secret.png",
        "sneaky": "sub/../../secret.png",
        "symlink": "link.png",
        "dirlink": "dirlink/secret.png",
    }
    for name, path in rows.items():
        manifest = inside / f"{name}.csv"
        manifest.write_text(f"path,label\nok.png,1\n{path},2\n")
        with pytest.raises(InvalidArgumentError) as error:
            load_data(manifest, robust)
        one_line(error, "row 3", "outside" if name != "absolute" else "absolute")
    # a link that stays inside is fine, and so is ".." that stays inside
    (inside / "alias.png").symlink_to(inside / "ok.png")
    manifest = inside / "fine.csv"
    manifest.write_text("path,label\nalias.png,1\nsub/../ok.png,2\n")
    assert load_data(manifest, robust).ids == ("alias.png", "ok.png")


def test_manifest_missing_file_is_skipped(tmp_path: Path, robust: Classifier) -> None:
    write_image(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,1\ngone.png,2\n")
    chunk = load_data(tmp_path / "m.csv", robust).chunk(0, 10)
    assert chunk.ids == ("a.png",)
    assert [(p, i) for p, i, _ in chunk.skipped] == [(1, "gone.png")]


# -- built-ins ---------------------------------------------------------------------------------


def test_builtin_digits(robust: Classifier, digits: DigitsData) -> None:
    data = load_data("digits", robust)
    assert len(data) == 360 and data.ids[17] == "digits#17"
    assert torch.equal(data.labels, digits.test_labels)
    chunk = data.chunk(1, 100)
    assert torch.equal(chunk.images, digits.test_images[100:200])
    with torch.no_grad():
        accuracy = (robust(chunk.images).argmax(1) == chunk.labels).float().mean()
    assert accuracy > 0.9
    assert data.description["kind"] == "builtin" and data.description["source"] == "digits"


def test_builtin_foolbox_imagenet(imagenet_clf: Classifier) -> None:
    data = load_data("foolbox:imagenet", imagenet_clf)
    assert len(data) == 20 and data.ids[0] == "foolbox:imagenet#0"
    assert data.labels[0] == 243 and int(data.labels.max()) < 1000
    chunk = data.chunk(0, 5)
    assert chunk.images.shape == (5, 3, 224, 224)
    with torch.no_grad():
        right = (imagenet_clf(chunk.images).argmax(1) == chunk.labels).sum()
    assert right >= 3


def test_builtin_foolbox_grey_and_label_range(robust: Classifier) -> None:
    imported = "foolbox" in sys.modules
    data = load_data("foolbox:mnist", robust)
    assert ("foolbox" in sys.modules) == imported  # files read by path, foolbox not imported
    chunk = data.chunk(0, 20)
    assert chunk.images.shape == (20, 3, 8, 8)
    assert torch.equal(chunk.images[:, 0], chunk.images[:, 2])  # grey made RGB
    with pytest.raises(InvalidArgumentError) as error:
        load_data("foolbox:cifar100", robust)
    one_line(error, "foolbox:cifar100", "10 classes")


def test_unknown_builtin(robust: Classifier) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        load_data("foolbox:svhn", robust)
    one_line(error, "foolbox:svhn", "digits", "foolbox:imagenet")
    assert load_data("foolbox:FashionMnist", robust).description["source"] == (
        "foolbox:fashionMNIST"
    )


def test_foolbox_missing_names_the_install(
    robust: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def without_foolbox(name: str, package: str | None = None) -> object:
        return None if name == "foolbox" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_foolbox)
    with pytest.raises(MissingDependencyError) as error:
        load_data("foolbox:mnist", robust)
    one_line(error, "pip install foolbox")


# -- tensors, datasets, loaders ----------------------------------------------------------------


def test_tensor_pairs(robust: Classifier) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 10, 12), dtype=torch.uint8, generator=generator)
    data = load_data((images, torch.tensor([1, 2, 3, 4, 5])), robust)
    assert data.ids == ("#0", "#1", "#2", "#3", "#4")
    chunk = data.chunk(0, 5)
    assert chunk.images.shape == (5, 3, 8, 8)
    assert torch.equal(chunk.images, torch.round(chunk.images * 255) / 255)
    floats = load_data((images.float() / 255, [1, 2, 3, 4, "5"]), robust)
    assert torch.equal(floats.chunk(0, 5).images, chunk.images)
    assert floats.labels.tolist() == [1, 2, 3, 4, 5]
    grey = load_data((rand(2, 1, 8, 8), torch.tensor([0, 1])), robust).chunk(0, 2)
    assert grey.images.shape == (2, 3, 8, 8)


def test_tensor_pairs_refused(robust: Classifier) -> None:
    bad = {
        "channels-last": (rand(2, 8, 8, 3), torch.tensor([0, 1])),
        "[0, 1]": (rand(2, 3, 8, 8) * 2 - 1, torch.tensor([0, 1])),
        "2 labels": (rand(3, 3, 8, 8), torch.tensor([0, 1])),
        "10 classes": (rand(2, 3, 8, 8), torch.tensor([0, 12])),
        "shape": (rand(3, 8, 8), torch.tensor([0, 1, 2])),
    }
    for words, source in bad.items():
        with pytest.raises(InvalidArgumentError) as error:
            load_data(source, robust)
        one_line(error, words)


class _Pairs(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Items (image, label) as PIL images or tensors; item 2 stands for a corrupt file."""

    def __init__(self, pil: bool, broken: int | None = None) -> None:
        self.pil, self.broken = pil, broken
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (6, 3, 9, 9), dtype=torch.uint8, generator=generator)

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> tuple[object, int]:
        if i == self.broken:
            raise OSError("image file is truncated")
        image = self.images[i]
        if self.pil:
            return Image.fromarray(image.permute(1, 2, 0).numpy()), i
        return image.float() / 255, i


def test_dataset_of_pil_and_tensors(robust: Classifier) -> None:
    pil = load_data(_Pairs(pil=True), robust)
    tensors = load_data(_Pairs(pil=False), robust)
    assert pil.description["kind"] == "dataset" and pil.description["source"] == "_Pairs"
    assert pil.labels.tolist() == list(range(6))
    assert torch.equal(pil.chunk(0, 6).images, tensors.chunk(0, 6).images)


def test_dataset_corrupt_item_skipped(robust: Classifier) -> None:
    dataset = _Pairs(pil=True, broken=None)
    dataset.targets = list(range(6))  # labels without reading the items
    data = load_data(dataset, robust)
    dataset.broken = 2
    chunk = data.chunk(0, 6)
    assert chunk.positions == (0, 1, 3, 4, 5)
    assert chunk.skipped[0][:2] == (2, "#2")


def test_subset_of_a_dataset_with_targets(robust: Classifier) -> None:
    dataset = _Pairs(pil=False)
    dataset.targets = [9, 8, 7, 6, 5, 4]  # not what the items say: proves targets are used
    data = load_data(torch.utils.data.Subset(dataset, [5, 1]), robust)
    assert data.labels.tolist() == [4, 8]
    assert torch.equal(
        data.chunk(0, 2).images, load_data(dataset, robust).chunk(0, 6).images[[5, 1]]
    )


def test_dataset_unreadable_item_without_targets(robust: Classifier) -> None:
    data = load_data(_Pairs(pil=False, broken=4), robust)
    assert data.ids == ("#0", "#1", "#2", "#3", "#5")
    assert data.labels.tolist() == [0, 1, 2, 3, 5]
    assert data.skipped == (("#4", "image file is truncated"),)
    assert data.chunk(1, 3).ids == ("#3", "#5")
    with pytest.raises(ImageError) as error:
        load_data(_Pairs(pil=False, broken=4), robust, strict=True)
    one_line(error, "item 4")


def test_dataloaders(robust: Classifier) -> None:
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(10)
    direct = load_data((images, labels), robust).chunk(0, 10).images
    plain = load_data(DataLoader(TensorDataset(images, labels), batch_size=3), robust)
    assert plain.description["kind"] == "dataloader"
    assert torch.equal(plain.chunk(0, 10).images, direct)
    collated = DataLoader(
        TensorDataset(images, labels),
        batch_size=4,
        collate_fn=lambda b: tuple(map(torch.stack, zip(*b, strict=True))),
    )
    held = load_data(collated, robust)
    assert torch.equal(held.chunk(0, 10).images, direct)
    assert held.labels.tolist() == labels.tolist()
    single = load_data(DataLoader(TensorDataset(images, labels), batch_size=None), robust)
    assert torch.equal(single.chunk(0, 10).images, direct)
    dropped = load_data(
        DataLoader(TensorDataset(images, labels), batch_size=4, drop_last=True), robust
    )
    assert dropped.labels.tolist() == list(range(8))
    with pytest.raises(InvalidArgumentError) as error:
        load_data(DataLoader(TensorDataset(images, labels), shuffle=True), robust)
    one_line(error, "shuffle")
    sharded = DistributedSampler(
        TensorDataset(images, labels), num_replicas=2, rank=0, shuffle=False
    )
    with pytest.raises(InvalidArgumentError) as error:
        load_data(DataLoader(TensorDataset(images, labels), sampler=sharded), robust)
    one_line(error, "DistributedSampler")


def test_other_sources_refused(robust: Classifier) -> None:
    with pytest.raises(TrompeError):
        load_data(42, robust)
    with pytest.raises(InvalidArgumentError):
        load_data("digits", robust, max_pixels=0)
