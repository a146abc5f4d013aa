"""The `nxbar` command line (click). Every command is a thin layer over the package's functions.

Bad input ends with a one-line error and exit status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import click
import numpy as np

import nxbar


def _fail_cleanly(command):
    """Turn the package's ValueError/OSError (bad input, bad file) into a click usage error (exit 2)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, OSError) as err:
            raise click.UsageError(str(err)) from None

    return wrapper


def _progress(iterable, label, length=None):
    """A progress bar on stderr (so stdout stays a clean table)."""
    return click.progressbar(iterable, length=length, label=label, file=sys.stderr, show_pos=True)


def _load_model(model: str, dataset: str, weights: str | None):
    from nxbar.weights import load_model, resolve_weights, weight_paths

    path = weights or resolve_weights(model, dataset)
    if weights is None and not weight_paths(path)[1].exists():
        raise ValueError(
            f"no shipped weights for --model {model} --dataset {dataset} (looked for {path}.json); "
            f"train them with tools/train_export.py or pass --weights PATH"
        )
    net, meta = load_model(path)
    if weights is None and net.arch != model:
        raise ValueError(f"{path}.json holds arch {net.arch!r}, not {model!r}")
    return net, meta


def _load_data(data: str, split: str, n: int | None, model):
    from nxbar.data import load_dataset

    ds = load_dataset(data, split=split)
    if n is not None:
        if n < 1 or n > len(ds.labels):
            raise ValueError(f"--n {n} is out of range: the data set {ds.source} has {len(ds.labels)} images")
        ds = dataclasses.replace(ds, images=ds.images[:n], labels=ds.labels[:n], source=f"{ds.source}, first {n}")
    if ds.images.shape[1] != model.input_size:
        raise ValueError(
            f"the data set {ds.source} has {ds.images.shape[1]}x{ds.images.shape[2]} images, "
            f"the model expects {model.input_size}x{model.input_size}"
        )
    if len(ds.class_names) != model.num_classes:
        raise ValueError(f"the data set has {len(ds.class_names)} classes, the model {model.num_classes}")
    return ds


MODEL = click.option("--model", default="vgg8", show_default=True, type=click.Choice(["vgg8", "vgg16"]))
DATASET = click.option("--dataset", default="cifar10", show_default=True, help="Data set the weights were trained on.")
WEIGHTS = click.option("--weights", default=None, help="Weight file (stem, .npz or .json) instead of the shipped one.")
DATA = click.option(
    "--data",
    default="embedded",
    show_default=True,
    help="'embedded' (first 1,000 CIFAR-10 test images) or a path: CIFAR-10/100 python archive or folder, "
    "image folder (dir or .zip), Tiny ImageNet.",
)
SPLIT = click.option("--split", default="test", show_default=True, help="Split of --data to read.")
N_IMAGES = click.option("--n", "n", type=int, default=None, help="Use the first N images (default: all).")


@click.group()
@click.version_option(nxbar.__version__, prog_name="nxbar")
def main():
    """nxbar: VGG networks on simulated memristive crossbars under FGSM/PGD attacks."""


@main.command()
@_fail_cleanly
def info():
    """Models, shipped weight files with their recorded accuracies, data sources, cache location."""
    import json

    from nxbar.cache import cache_dir
    from nxbar.data import embedded_path
    from nxbar.models.arch import ARCHITECTURES, param_shapes
    from nxbar.weights import shipped_weights_dir

    click.echo(f"nxbar {nxbar.__version__} (numpy {np.__version__})")
    click.echo("\nModels (SPEC section 2):")
    for arch, table in ARCHITECTURES.items():
        n = sum(int(np.prod(s)) for s in param_shapes(arch, 10, 32).values())
        feats = " ".join(str(c) for c in table["features"])
        click.echo(f"  {arch:6s} conv {feats} | FC {' '.join(map(str, table['hidden_fc'] + ('classes',)))}"
                   f"  ({n / 1e6:.2f} M parameters at 10 classes, 32x32)")
    wdir = shipped_weights_dir()
    click.echo(f"\nWeight files in {wdir}:")
    found = sorted(wdir.glob("*.json"))
    for path in found:
        meta = json.loads(path.read_text())
        acc = meta.get("accuracy", {})
        accs = ", ".join(f"{k} {v['accuracy'] * 100:.2f}%" if isinstance(v, dict) else f"{k} {v}" for k, v in acc.items())
        click.echo(f"  {path.stem:16s} {meta.get('arch')} {meta.get('dataset')} {accs or '(no recorded accuracy)'}")
    if not found:
        click.echo("  none (train and export with tools/train_export.py)")
    click.echo("\nData sources:")
    click.echo(f"  embedded   first 1,000 CIFAR-10 test images, lossless: {embedded_path()}")
    click.echo("  --data PATH  CIFAR-10/100 python archive (.tar.gz or folder), image folder (dir or .zip),")
    click.echo("               Tiny ImageNet (tiny-imagenet-200 folder or .zip)")
    click.echo(f"\nCache of mapped models: {cache_dir()}")


@main.command()
@MODEL
@DATASET
@WEIGHTS
@DATA
@SPLIT
@N_IMAGES
@click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True)
@_fail_cleanly
def accuracy(model, dataset, weights, data, split, n, batch_size):
    """Clean accuracy of the software model."""
    net, _ = _load_model(model, dataset, weights)
    ds = _load_data(data, split, n, net)
    correct = 0
    starts = range(0, len(ds.labels), batch_size)
    with _progress(starts, "classifying") as bar:
        for s in bar:
            pred = net.predict(ds.images[s : s + batch_size])
            correct += int(np.sum(pred == ds.labels[s : s + batch_size]))
    total = len(ds.labels)
    click.echo(f"{net.arch} on {ds.source}: {correct}/{total} correct, clean accuracy {100 * correct / total:.2f}%")


if __name__ == "__main__":
    main()
