"""Data loaders: the real shared files (when present) and small files built here in the official layouts."""

import hashlib
import importlib
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nxbar.data import archive
from nxbar.data.cifar import load_cifar
from nxbar.data.dataset import Dataset, match_classes
from nxbar.data.image_folder import load_image_folder
from nxbar.data.load import embedded_path, load_dataset
from nxbar.data.tiny_imagenet import load_tiny_imagenet

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_SUBSET = SHARED / "cifar-10-subset-python.tar.gz"
CIFAR_JPEG = SHARED / "cifar-10-images-jpeg.zip"
TINY_VAL = SHARED / "tiny-imagenet-200-val.zip"
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Images per class (airplane .. truck) of the first 1,000 test and first 4,000 training images of CIFAR-10.
COUNTS_TEST_1000 = [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
COUNTS_TRAIN_4000 = [396, 366, 420, 384, 422, 393, 414, 385, 407, 413]
FIRST_TEN_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
FIRST_RED_PIXELS = [158, 159, 165, 166]  # row 0 of the red channel of test image 0 (a cat)


def needs(path):
    return pytest.mark.skipif(not path.exists(), reason=f"shared data file {path} not present")


# ---------------------------------------------------------------------------------------------- helpers


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 str opcodes (SHORT_BINSTRING/BINSTRING), as in the official archives."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    """A pickle as Python 2 + numpy 1 wrote the official CIFAR files (module numpy.core.multiarray)."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_rows(images):
    """Official row layout written element by element: row[c*1024 + y*32 + x] = image[y, x, c]."""
    rows = np.zeros((len(images), 3072), np.uint8)
    for c in range(3):
        for y in range(32):
            for x in range(32):
                rows[:, c * 1024 + y * 32 + x] = images[:, y, x, c]
    return rows


def random_images(rng, n, size=32):
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_tree(root: Path, files: dict):
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)


def write_zip(path: Path, files: dict):
    with zipfile.ZipFile(path, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)
    return path


def write_targz(path: Path, files: dict):
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


# ---------------------------------------------------------------------------------------------- real files


def test_embedded_set_is_the_known_first_test_images():
    ds = load_dataset()
    assert ds.images.shape == (1000, 32, 32, 3) and ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    assert ds.class_names == CIFAR10_NAMES
    assert ds.labels[:10].tolist() == FIRST_TEN_TEST_LABELS
    assert ds.images[0, 0, :4, 0].tolist() == FIRST_RED_PIXELS
    assert np.bincount(ds.labels, minlength=10).tolist() == COUNTS_TEST_1000
    assert embedded_path().stat().st_size < 3.5e6
    with np.load(embedded_path(), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["class_names", "images", "labels", "source"]
        assert all(npz[k].dtype != object for k in npz.files)


@needs(CIFAR_SUBSET)
def test_cifar_subset_test_split_and_embedded_copy():
    ds = load_cifar(CIFAR_SUBSET, "test")
    assert ds.images.shape == (1000, 32, 32, 3) and ds.images.flags.c_contiguous
    assert ds.class_names == CIFAR10_NAMES
    assert ds.labels[:10].tolist() == FIRST_TEN_TEST_LABELS
    assert ds.images[0, 0, :4, 0].tolist() == FIRST_RED_PIXELS
    assert np.bincount(ds.labels, minlength=10).tolist() == COUNTS_TEST_1000
    emb = load_dataset("embedded")
    for got, want in ((emb.images, ds.images[:1000]), (emb.labels, ds.labels[:1000])):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    assert emb.class_names == ds.class_names
    assert hashlib.sha256(CIFAR_SUBSET.read_bytes()).hexdigest() in emb.source


@needs(CIFAR_SUBSET)
def test_cifar_subset_train_split_has_only_data_batch_1():
    ds = load_dataset(str(CIFAR_SUBSET), "train")
    assert ds.images.shape == (4000, 32, 32, 3)
    assert np.bincount(ds.labels, minlength=10).tolist() == COUNTS_TRAIN_4000
    assert "data_batch_1 (4000 images)" in ds.source and "absent: data_batch_2" in ds.source


@needs(CIFAR_JPEG)
def test_cifar_jpeg_zip_test_split():
    ds = load_dataset(str(CIFAR_JPEG), "test")
    assert ds.images.shape == (10000, 32, 32, 3)
    assert ds.class_names == CIFAR10_NAMES
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    assert np.all(np.diff(ds.labels) >= 0)  # class by class, files by name
    assert "split 'test'" in ds.source


@needs(TINY_VAL)
def test_tiny_imagenet_val_zip():
    ds = load_dataset(str(TINY_VAL))  # split "test" means the labelled val images
    assert ds.images.shape == (10000, 64, 64, 3)
    assert len(ds.class_names) == 200 and np.bincount(ds.labels).tolist() == [50] * 200
    assert ds.class_names[0] == "n02124075: Egyptian cat"  # first line of wnids.txt, words from words.txt
    assert ds.class_names[ds.labels[0]].startswith("n03444034")  # val_0.JPEG in val_annotations.txt


# ---------------------------------------------------------------------------------------------- CIFAR layouts


def cifar100_files(rng, n_train=6, n_test=4, classes=5):
    """Official cifar-100-python layout: pickles train, test, meta (fine and coarse labels differ)."""
    sets = {}
    meta = {"fine_label_names": [f"fine{k}" for k in range(classes)], "coarse_label_names": ["c0", "c1"]}
    files = {"cifar-100-python/meta": py2_pickle(meta)}
    for split, n in (("train", n_train), ("test", n_test)):
        images, fine = random_images(rng, n), rng.integers(0, classes, n)
        sets[split] = images, fine
        batch = {"filenames": [f"x{i}.png" for i in range(n)], "batch_label": split, "fine_labels": fine.tolist(),
                 "coarse_labels": (1 - fine % 2).tolist(), "data": cifar_rows(images)}
        files[f"cifar-100-python/{split}"] = py2_pickle(batch)
    return files, sets


def test_cifar100_targz(tmp_path):
    files, sets = cifar100_files(np.random.default_rng(1))
    path = write_targz(tmp_path / "cifar-100-python.tar.gz", files)
    for split in ("train", "test"):
        ds = load_dataset(str(path), split)
        images, fine = sets[split]
        assert np.array_equal(ds.images, images) and ds.labels.tolist() == fine.tolist()
        assert ds.class_names == tuple(f"fine{k}" for k in range(5))
        assert ds.source.startswith(f"CIFAR-100 {split} split")


def cifar10_batch(images, labels, protocol):
    return pickle.dumps({b"batch_label": b"x", b"labels": list(labels), b"data": cifar_rows(images)}, protocol=protocol)


def write_cifar10_folder(folder, rng, labels_test=(3, 0, 9), protocol=2):
    """cifar-10-batches-py with Python 3 pickles, data_batch_1, data_batch_2 only (the rest absent)."""
    meta = pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_NAMES], b"num_vis": 3072}, protocol=protocol)
    parts = {"test_batch": (random_images(rng, len(labels_test)), list(labels_test))}
    parts["data_batch_1"] = (random_images(rng, 3), [1, 2, 3])
    parts["data_batch_2"] = (random_images(rng, 2), [4, 5])
    write_tree(folder, {"batches.meta": meta, **{k: cifar10_batch(*v, protocol) for k, v in parts.items()}})
    return parts


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_folder(tmp_path, protocol):
    parts = write_cifar10_folder(tmp_path / "cifar-10-batches-py", np.random.default_rng(2), protocol=protocol)
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the parent or the folder itself
        test = load_cifar(path, "test")
        assert np.array_equal(test.images, parts["test_batch"][0]) and test.labels.tolist() == [3, 0, 9]
        assert test.class_names == CIFAR10_NAMES
        train = load_dataset(str(path), "train")
        assert np.array_equal(train.images, np.concatenate([parts["data_batch_1"][0], parts["data_batch_2"][0]]))
        assert train.labels.tolist() == [1, 2, 3, 4, 5]
        assert "absent: data_batch_3, data_batch_4, data_batch_5" in train.source


def test_cifar_row_layout_is_channel_planes_of_row_major_images(tmp_path):
    row = (np.arange(3072) % 251).astype(np.uint8)
    batch = pickle.dumps({b"labels": [0], b"data": row[None]}, protocol=2)
    meta = pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2)
    write_tree(tmp_path, {"batches.meta": meta, "test_batch": batch})
    image = load_cifar(tmp_path).images[0]
    for y, x, c in ((0, 0, 0), (0, 5, 1), (7, 3, 2), (31, 31, 2), (12, 30, 0)):
        assert image[y, x, c] == (c * 1024 + y * 32 + x) % 251


# ---------------------------------------------------------------------------------------------- image folders


def image_folder_files(rng, prefix=""):
    """Classes 'cat' and 'ant' (given out of order), PNG images, file names out of order."""
    images = {name: random_images(rng, 1, 8)[0] for name in ("cat/b.png", "cat/a.png", "ant/z.PNG")}
    files = {prefix + name: png_bytes(im) for name, im in images.items()}
    files[prefix + "cat/notes.txt"] = b"not an image, ignored"
    expected = np.stack([images["ant/z.PNG"], images["cat/a.png"], images["cat/b.png"]])
    return files, expected


def test_image_folder_dir_and_zip(tmp_path):
    rng = np.random.default_rng(3)
    files, expected = image_folder_files(rng)
    write_tree(tmp_path / "dir", files)
    zipped, _ = image_folder_files(np.random.default_rng(3), prefix="myset/")  # a zipped folder: one top folder
    for path in (tmp_path / "dir", write_zip(tmp_path / "set.zip", zipped)):
        ds = load_image_folder(path)
        assert ds.class_names == ("ant", "cat") and ds.labels.tolist() == [0, 1, 1]
        assert np.array_equal(ds.images, expected)
        ds = load_image_folder(path, classes=["cat", "ant"])  # images class by class in the given order
        assert ds.class_names == ("cat", "ant") and ds.labels.tolist() == [0, 0, 1]
        assert np.array_equal(ds.images, expected[[1, 2, 0]])


def test_image_folder_zip_with_splits(tmp_path):
    rng = np.random.default_rng(4)
    train, _ = image_folder_files(rng, "train/")
    test, expected = image_folder_files(rng, "test/")
    path = write_zip(tmp_path / "splits.zip", {**train, **test})
    ds = load_dataset(str(path), "test")
    assert np.array_equal(ds.images, expected) and "split 'test'" in ds.source
    with pytest.raises(ValueError, match="no subfolder 'val'"):
        load_image_folder(path, "val")
    with pytest.raises(ValueError, match="no split 'val' in this image folder; it holds the splits train, test"):
        load_dataset(str(path), "val")
    with pytest.raises(ValueError, match="holds no images"):  # the root holds split folders, not classes
        load_image_folder(path)


def test_image_folder_decoded_in_worker_processes(tmp_path):
    n = archive.PARALLEL_MIN_IMAGES  # 2 * n images: enough for the process pool on two or more CPUs
    rng = np.random.default_rng(5)
    images = random_images(rng, 2 * n, 4)
    files = {f"{k % 2}/{k:05d}.png": png_bytes(im) for k, im in enumerate(images)}
    path = write_zip(tmp_path / "many.zip", files)
    ds = load_image_folder(path)
    assert np.array_equal(ds.images, np.concatenate([images[0::2], images[1::2]]))
    files[f"1/{2 * n - 1:05d}.png"] = png_bytes(random_images(rng, 1, 5)[0])  # last image, wrong size
    with pytest.raises(ValueError, match=rf"many2\.zip:1/{2 * n - 1:05d}\.png: image is 5x5 .* expected 4x4"):
        load_image_folder(write_zip(tmp_path / "many2.zip", files))


# ---------------------------------------------------------------------------------------------- Tiny ImageNet


def tiny_imagenet_files(rng):
    """tiny-imagenet-200/ layout, 3 classes. PNG content under the official .JPEG names, so that pixels compare
    exactly (Pillow detects the format from the content); val_1 is a grayscale image, as some official ones."""
    wnids = ["n002", "n001", "n003"]
    r = "tiny-imagenet-200/"
    files = {r + "wnids.txt": "\n".join(wnids).encode() + b"\n",
             r + "words.txt": b"n001\tbird\nn002\tcat, house cat\nn000\tunused\n"}
    train = {}
    for w in wnids:
        for k in (1, 0):
            train[f"{w}_{k}"] = random_images(rng, 1, 64)[0]
            files[f"{r}train/{w}/images/{w}_{k}.JPEG"] = png_bytes(train[f"{w}_{k}"])
        files[f"{r}train/{w}/{w}_boxes.txt"] = b"ignored"
    val = list(random_images(rng, 3, 64))
    val[1] = np.repeat(val[1][:, :, :1], 3, axis=2)  # gray: R = G = B
    files[r + "val/images/val_0.JPEG"] = png_bytes(val[0])
    files[r + "val/images/val_1.JPEG"] = png_bytes(val[1][:, :, 0])  # a one-channel file
    files[r + "val/images/val_2.JPEG"] = png_bytes(val[2])
    annotations = ["val_2.JPEG\tn001\t0\t0\t5\t5", "val_0.JPEG\tn003\t1\t1\t9\t9", "val_1.JPEG\tn002\t0\t0\t1\t1"]
    files[r + "val/val_annotations.txt"] = "\n".join(annotations).encode() + b"\n"
    expected = {"val": (np.stack([val[2], val[0], val[1]]), [1, 2, 0]),
                "train": (np.stack([train[f"{w}_{k}"] for w in wnids for k in (0, 1)]), [0, 0, 1, 1, 2, 2])}
    return files, expected


def test_tiny_imagenet_folder_and_zip(tmp_path):
    files, expected = tiny_imagenet_files(np.random.default_rng(6))
    write_tree(tmp_path / "dir", files)
    for path in (tmp_path / "dir", tmp_path / "dir" / "tiny-imagenet-200", write_zip(tmp_path / "t.zip", files)):
        for split in ("val", "train"):
            ds = load_tiny_imagenet(path, split)
            assert np.array_equal(ds.images, expected[split][0]) and ds.labels.tolist() == expected[split][1]
            assert ds.class_names == ("n002: cat, house cat", "n001: bird", "n003")
        assert load_dataset(str(path), "test").labels.tolist() == expected["val"][1]
    with pytest.raises(ValueError, match="no labels|allowed: train, val"):
        load_tiny_imagenet(tmp_path / "dir", "test")


# ---------------------------------------------------------------------------------------------- bad input


def test_corrupt_archives(tmp_path):
    files, _ = cifar100_files(np.random.default_rng(7))
    good = write_targz(tmp_path / "good.tar.gz", files).read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut\.tar\.gz: not a readable tar archive"):
        load_cifar(tmp_path / "cut.tar.gz")
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(ValueError, match=r"junk\.tar\.gz: neither a tar archive"):
        load_dataset(str(tmp_path / "junk.tar.gz"))
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04" + bytes(300))
    with pytest.raises(ValueError, match=r"junk\.zip: not a readable zip archive"):
        load_image_folder(tmp_path / "junk.zip")
    folder, _ = image_folder_files(np.random.default_rng(8))
    raw = bytearray(write_zip(tmp_path / "flip.zip", folder).read_bytes())
    start = raw.index(b"IDAT") + 8  # inside the first stored PNG: the zip CRC no longer matches
    raw[start : start + 8] = bytes(8)
    (tmp_path / "flip.zip").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"flip\.zip:.*\.png: cannot read: BadZipFile"):
        load_image_folder(tmp_path / "flip.zip")
    write_tree(tmp_path / "bad", {"a/x.png": b"\x89PNG not really"})
    with pytest.raises(ValueError, match=r"x\.png: not a readable image"):
        load_image_folder(tmp_path / "bad")
    write_tree(tmp_path / "badpickle", {"batches.meta": b"\x80\x02}q\x00(X", "test_batch": b""})
    with pytest.raises(ValueError, match=r"batches\.meta: not a readable CIFAR pickle"):
        load_cifar(tmp_path / "badpickle")


def test_wrong_image_size(tmp_path):
    rng = np.random.default_rng(9)
    sizes = {1: 8, 2: 9}
    write_tree(tmp_path / "f", {f"{k}/{k}.png": png_bytes(random_images(rng, 1, n)[0]) for k, n in sizes.items()})
    with pytest.raises(ValueError, match=r"2/2\.png: image is 9x9 \(height x width\), expected 8x8"):
        load_image_folder(tmp_path / "f")
    files, _ = tiny_imagenet_files(rng)
    files["tiny-imagenet-200/val/images/val_0.JPEG"] = png_bytes(random_images(rng, 1, 32)[0])
    with pytest.raises(ValueError, match=r"val_0\.JPEG: image is 32x32 .* expected 64x64"):
        load_tiny_imagenet(write_zip(tmp_path / "t.zip", files))
    write_tree(tmp_path / "c", {"batches.meta": pickle.dumps({b"label_names": [b"a", b"b"]}),
                                "test_batch": pickle.dumps({b"labels": [0], b"data": np.zeros((1, 1024), np.uint8)})})
    with pytest.raises(ValueError, match=r"test_batch: 'data' must be a uint8 array of shape \(N, 3072\)"):
        load_cifar(tmp_path / "c")


def test_labels_out_of_range(tmp_path):
    write_cifar10_folder(tmp_path, np.random.default_rng(10), labels_test=(3, 10, 9))
    with pytest.raises(ValueError, match=r"test_batch: label 10 of image 1 is out of range \[0, 9\]"):
        load_cifar(tmp_path, "test")
    files, _ = tiny_imagenet_files(np.random.default_rng(11))
    files["tiny-imagenet-200/val/val_annotations.txt"] += b"val_0.JPEG\tn999\t0\t0\t1\t1\n"
    with pytest.raises(ValueError, match=r"val_annotations\.txt line 4: .* wnid of wnids\.txt"):
        load_tiny_imagenet(write_zip(tmp_path / "t.zip", files))


def test_missing_class_and_empty_folder(tmp_path):
    files, _ = image_folder_files(np.random.default_rng(12))
    write_tree(tmp_path / "f", files)
    with pytest.raises(ValueError, match="missing: dog; not among them: none"):
        load_image_folder(tmp_path / "f", classes=["ant", "cat", "dog"])
    with pytest.raises(ValueError, match="missing: none; not among them: cat"):
        load_image_folder(tmp_path / "f", classes=["ant"])
    (tmp_path / "f" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty/?: class folder holds no images"):
        load_image_folder(tmp_path / "f")
    tiny, _ = tiny_imagenet_files(np.random.default_rng(13))
    tiny = {k: v for k, v in tiny.items() if "/train/n003/" not in k}
    with pytest.raises(ValueError, match=r"train/n003/images/?: missing class n003"):
        load_tiny_imagenet(write_zip(tmp_path / "t.zip", tiny), "train")
    write_tree(tmp_path / "nothing", {"readme.txt": b"x"})
    with pytest.raises(ValueError, match="no class folders"):
        load_image_folder(tmp_path / "nothing")


class Exploit:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func", ["os.system", "builtins.eval", "subprocess.getoutput"])
def test_malicious_pickle_refused(tmp_path, func):
    marker = tmp_path / "pwned"
    arg = f"open({str(marker)!r}, 'w')" if func == "builtins.eval" else f"touch {marker}"
    module, name = func.split(".")
    exploit = Exploit(getattr(importlib.import_module(module), name), arg)
    payload = pickle.dumps({b"labels": [0], b"data": exploit}, protocol=2)
    meta = pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2)
    write_tree(tmp_path / "c", {"batches.meta": meta, "test_batch": payload})
    refused = rf"test_batch: not a readable CIFAR pickle: UnpicklingError: refused global \w+\.{name}"
    with pytest.raises(ValueError, match=refused):
        load_cifar(tmp_path / "c")
    assert not marker.exists()


def test_codecs_other_than_latin1_refused(tmp_path):
    payload = pickle.dumps({b"labels": [0], b"data": b"x"}, protocol=2).replace(b"latin1", b"utf_16")
    write_tree(tmp_path, {"batches.meta": pickle.dumps({b"label_names": [b"a"]}, protocol=2), "test_batch": payload})
    with pytest.raises(ValueError, match="refused _codecs.encode with encoding 'utf_16'"):
        load_cifar(tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder; use 'embedded'"):
        load_dataset(str(tmp_path / "absent.tar.gz"))
    with pytest.raises(ValueError, match="allowed: 'test'"):
        load_dataset("embedded", "train")
    write_cifar10_folder(tmp_path, np.random.default_rng(14))
    with pytest.raises(ValueError, match="split 'val' is not a CIFAR split; allowed: train, test"):
        load_cifar(tmp_path, "val")


def test_dataset_validation():
    images, labels = np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1], np.int64)
    Dataset(images, labels, ("a", "b"), "src")
    with pytest.raises(ValueError, match="images must be a uint8 array"):
        Dataset(images.astype(np.float32), labels, ("a", "b"), "src")
    with pytest.raises(ValueError, match="C-contiguous"):
        Dataset(images[:, ::2], labels, ("a", "b"), "src")
    with pytest.raises(ValueError, match=r"labels must be an int64 array of shape \(2,\)"):
        Dataset(images, labels[:1], ("a", "b"), "src")
    with pytest.raises(ValueError, match=r"labels\[1\] = 1 \(1 out of range\)"):
        Dataset(images, labels, ("a",), "src")
    with pytest.raises(ValueError, match="unique"):
        Dataset(images, labels, ("a", "a"), "src")


# ---------------------------------------------------------------------------------------------- pixel formats

GRAY16 = np.array([[0, 128, 129, 32768], [32896, 65279, 65535, 257]], dtype=np.uint16)
GRAY16_AS_8BIT = [[0, 0, 1, 128], [128, 254, 255, 1]]  # round(v * 255 / 65535)


def image_bytes(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def test_16bit_grayscale_images_are_scaled_to_8bit(tmp_path):
    big_endian = Image.frombytes("I;16B", (4, 2), GRAY16.astype(">u2").tobytes())
    write_tree(tmp_path, {"png/a.png": image_bytes(Image.fromarray(GRAY16)),
                          "tiff/a.tif": image_bytes(big_endian, "TIFF"),
                          "pgm/a.pgm": image_bytes(Image.fromarray(GRAY16), "PPM")})
    modes = [Image.open(tmp_path / name).mode for name in ("png/a.png", "tiff/a.tif", "pgm/a.pgm")]
    assert modes == ["I;16", "I;16B", "I"]  # how Pillow reads them
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ("pgm", "png", "tiff")
    for image in ds.images:
        assert image.tolist() == [[[v] * 3 for v in row] for row in GRAY16_AS_8BIT]


def test_integer_pixels_beyond_16_bits_and_float_pixels_refused(tmp_path):
    write_tree(tmp_path / "i", {"c/a.tif": image_bytes(Image.fromarray(np.array([[0, 70000]], np.int32)), "TIFF")})
    with pytest.raises(ValueError, match=r"c/a\.tif: integer pixels \(Pillow mode I\) range over \[0, 70000\]; "
                                         r"only 16-bit grayscale values 0\.\.65535"):
        load_image_folder(tmp_path / "i")
    write_tree(tmp_path / "f", {"c/a.tif": image_bytes(Image.fromarray(np.array([[0, 0.5]], np.float32)), "TIFF")})
    with pytest.raises(ValueError, match=r"c/a\.tif: floating-point pixels \(Pillow mode F\) are not allowed; "
                                         "allowed: 8-bit images and 16-bit grayscale"):
        load_image_folder(tmp_path / "f")


def test_transparency_is_refused_unless_every_pixel_is_opaque(tmp_path):
    def load(name, image, **options):
        write_tree(tmp_path / name, {f"c/{name}.png": image_bytes(image, **options)})
        return load_image_folder(tmp_path / name).images[0].tolist()

    rgba = np.array([[[10, 20, 30, 255], [40, 50, 60, 255]]], np.uint8)
    la = np.array([[[7, 255], [200, 255]]], np.uint8)
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    assert load("rgba", Image.fromarray(rgba)) == [[[10, 20, 30], [40, 50, 60]]]
    assert load("la", Image.fromarray(la, "LA")) == [[[7, 7, 7], [200, 200, 200]]]
    assert load("p_unused", palette, transparency=2) == [[[10, 20, 30], [40, 50, 60]]]  # no pixel uses entry 2
    rgba[0, 1, 3], la[0, 0, 1] = 254, 0
    refused = [("rgba", Image.fromarray(rgba), {}), ("la", Image.fromarray(la, "LA"), {}),
               ("p", palette, {"transparency": 1}),
               ("rgb_key", Image.fromarray(rgba[..., :3]), {"transparency": (10, 20, 30)}),
               ("gray16_key", Image.fromarray(GRAY16), {"transparency": 257})]
    for name, image, options in refused:
        mode = Image.open(io.BytesIO(image_bytes(image, **options))).mode
        message = (rf"{name}_bad/c/{name}_bad\.png: 1 of \d pixels are not fully opaque \(Pillow mode {mode}\); "
                   "only opaque images are allowed")
        with pytest.raises(ValueError, match=message):
            load(f"{name}_bad", image, **options)


# ---------------------------------------------------------------------------------------------- class order


def test_match_classes_relabels_the_same_names_and_refuses_others(tmp_path):
    files, expected = image_folder_files(np.random.default_rng(20))
    write_tree(tmp_path, files)
    ds = load_image_folder(tmp_path)  # classes ant, cat: labels 0, 1, 1
    assert match_classes(ds, ["ant", "cat"]) is ds
    relabelled = match_classes(ds, ["cat", "ant"])
    assert relabelled.class_names == ("cat", "ant") and relabelled.labels.tolist() == [1, 0, 0]
    assert np.array_equal(relabelled.images, expected)
    assert relabelled.source.endswith(", relabelled to the model's class order")
    with pytest.raises(ValueError, match="are not the model's: only in the data set: ant; only in the model: dog, eel"):
        match_classes(ds, ["cat", "dog", "eel"])
    with pytest.raises(ValueError, match="only in the data set: none; only in the model: c0, c1, .*, c9 and 2 more$"):
        match_classes(ds, ["ant", "cat", *(f"c{i}" for i in range(12))])
