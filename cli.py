"""The `nxbar` command line (click). Every command is a thin layer over the package's functions.

Bad input ends with a one-line error and exit status 2, never a traceback; output paths are checked before
any computing. A file that cannot be read or written while a command runs ends with exit status 1, Ctrl-C
with 130 and a line on how to resume.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

import nxbar
from nxbar.attacks import APGD_STEPS, EPS_SPACES, PGD_ALPHA, PGD_STEPS, eps_label
from nxbar.evaluation import ATTACKS, CHIP_SEEDS, MODES, AttackConfig
from nxbar.files import atomic_write_text
from nxbar.threats import EOT_SEEDS, TRANSFER_SEED


RESUME = "nxbar.resume"  # key in click's context meta: how a command stopped by Ctrl-C goes on


def _fail_cleanly(command):
    """Turn the package's errors into one line: ValueError (bad input) into a click usage error (exit 2),
    OSError (a file that cannot be read or written) into an error without the usage text (exit 1), Ctrl-C into
    exit status 130 and the line of `_on_interrupt` (default: run the command again)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ValueError as err:
            raise click.UsageError(str(err)) from None
        except OSError as err:
            if err.errno == errno.EPIPE:  # stdout closed by a pager or `head`: click's own quiet exit
                raise
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            hint = click.get_current_context().meta.get(RESUME, "nothing was kept; run the command again")
            click.echo(f"\ninterrupted: {hint}", err=True)
            raise click.exceptions.Exit(130) from None

    return wrapper


def _on_interrupt(hint: str) -> None:
    """What `_fail_cleanly` says when Ctrl-C stops the running command: how its stored work is resumed."""
    click.get_current_context().meta[RESUME] = hint


def _output_path(path, what: str, folder: bool = False) -> Path:
    """Refuse, before any computing, an output that could not be written at the end: `path` is the file
    (folder=True: the folder, created with its parents if missing) that `what` (an option) names. A file's
    folder must exist; the folder written in must be writable; an existing path must be of the right kind and
    writable. Returns `path` made absolute."""
    path = Path(path).absolute()
    kind, allowed = ("folder", "a writable folder (missing ones are created)") if folder else \
        ("file", "a writable file in an existing folder")
    if path.exists():
        if path.is_dir() != folder:
            raise ValueError(f"{what} {path}: not a {kind}; allowed: {allowed}")
        if not os.access(path, os.W_OK | (os.X_OK if folder else 0)):
            raise ValueError(f"{what} {path}: not writable; allowed: {allowed}")
        return path
    parent = path.parent
    while folder and not parent.exists():
        parent = parent.parent
    if not parent.exists():
        raise ValueError(f"{what} {path}: the folder {parent} does not exist; allowed: {allowed}")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: {parent} is not a writable folder; allowed: {allowed}")
    return path


def _no_cells_with_cluster(scheduler, workers, computes: bool, uses: str) -> None:
    """Refuse --scheduler/--workers where the command computes no cell (`uses`: the options that compute none)."""
    given = [f"{o} {v}" for o, v in (("--scheduler", scheduler), ("--workers", workers)) if v is not None]
    if given and not computes:
        raise ValueError(f"{' and '.join(given)}: no cell is computed with {uses}; --scheduler and --workers are "
                         "allowed only where cells are computed")


def _check_cache() -> None:
    """The cache folder must be writable before a mapping is computed, since the mapping is stored there."""
    from nxbar.cache import cache_dir

    _output_path(cache_dir(), "cache folder (NXBAR_CACHE_DIR)", folder=True)


class _LogProgress:
    """Progress written to a log (stderr is not a terminal, e.g. a nohup'd run), where a bar's redraws are
    lost: a line `label: done/total (percent) elapsed, ETA` at most every `every_s` seconds and one at the end."""

    def __init__(self, iterable, label, length=None, every_s=60.0):
        self.iterable, self.label, self.every_s = iterable, label, every_s
        self.total, self.done = (length if length is not None else len(iterable)), 0

    def __enter__(self):
        self.t0 = self.last = time.monotonic()
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self._line()
        return False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n):
        self.done += n
        if time.monotonic() - self.last >= self.every_s and self.done < self.total:
            self.last = time.monotonic()
            self._line()

    def _line(self):
        elapsed = time.monotonic() - self.t0
        eta = f", ETA {elapsed * (self.total - self.done) / self.done:.0f} s" if 0 < self.done < self.total else ""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        click.echo(f"{self.label}: {self.done}/{self.total} ({pct:.0f}%) {elapsed:.0f} s{eta}", err=True)


def _progress(iterable, label, length=None):
    """A progress bar on stderr (so stdout stays a clean table); timed lines instead when stderr is a log."""
    if not sys.stderr.isatty():
        return _LogProgress(iterable, label, length)
    return click.progressbar(iterable, length=length, label=label, file=sys.stderr, show_pos=True)


def _bar(label, total):
    """A progress bar of `total` steps: the `progress` callback of the nxbar functions that run long loops."""
    return _progress(None, label, total)


def _load_model(model: str, dataset: str, weights: str | None):
    from nxbar.weights import load_model, resolve_weights, weight_paths

    path = weights or resolve_weights(model, dataset)
    if weights is None and not weight_paths(path)[1].exists():
        raise ValueError(
            f"no shipped weights for --model {model} --dataset {dataset} (looked for {path}.json); "
            f"train them with tools/train_export.py or pass --weights PATH"
        )
    net, meta = load_model(path)
    if weights is None and meta.get("model", net.arch) != model:
        raise ValueError(f"{path}.json holds model {meta.get('model', net.arch)!r}, not {model!r}")
    return net, meta


def _for_weights(config, meta):
    """The crossbar configuration for this weight file: a hybrid-precision file's layer_bits apply unless
    --bits/--layer-bits set a precision."""
    from nxbar.weights import layer_bits

    return config.with_weight_precision(layer_bits(meta))


def _load_data(data: str, split: str, n: int | None, model):
    from nxbar.data.load import model_dataset

    return model_dataset(data, split, n, model)


MODEL = click.option("--model", default="vgg8", show_default=True, type=click.Choice(["vgg8", "vgg16", "vgg8q", "vgg16q"]),
                     help="vgg8q/vgg16q: the QUANOS hybrid-precision networks (per-layer weight bits, "
                          "docs/protocol.md section 6.2).")
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
XBAR = click.option("--xbar", "size", type=int, default=32, show_default=True, help="Crossbar size (rows = columns).")


BATCH_SIZE = click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True,
                          help="Images per forward/backward pass.")
NO_CACHE = click.option("--no-cache", is_flag=True, help="Solve the crossbars again even if this mapping is cached.")


def cluster_options(command):
    """--scheduler and --workers: the command's cells as tasks of a Dask cluster (`nxbar.cluster`)."""
    options = [
        click.option("--scheduler", metavar="ADDRESS", default=None,
                     help="Send the cells as tasks to the running Dask scheduler at ADDRESS (e.g. "
                          "tcp://10.0.0.5:8786); this process writes the results as they come back. Needs "
                          "pip install 'nxbar[cluster]'."),
        click.option("--workers", type=int, default=None,
                     help="Start N Dask worker processes on this machine (threads split between them) and send "
                          "them the cells. Needs pip install 'nxbar[cluster]' [default: the cells in this process]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


QUERIES = click.option("--queries", type=click.IntRange(min=1), default=300, show_default=True,
                       help="Queries per image of the sanity checks' gradient-free random search.")


def pgd_options(command):
    """--steps, --alpha and --attack-seed: PGD's (and APGD's) settings, defaults from nxbar.attacks and
    AttackConfig; --read-noise-seed, the stochastic hardware option."""
    options = (click.option("--steps", type=int, default=None,
                            help=f"Gradient steps [default: {PGD_STEPS} for pgd, {APGD_STEPS} for apgd]."),
               click.option("--alpha", "alpha_text", default=eps_label("pgd", PGD_ALPHA), show_default=True,
                            help="PGD step size (same units as eps)."),
               click.option("--attack-seed", type=int, default=AttackConfig.seed, show_default=True,
                            help="Seed of the random start of PGD and APGD."),
               click.option("--read-noise-seed", "read_seed", type=click.IntRange(min=0), default=None,
                            help="Stochastic hardware: draw the device variation afresh at every read of the "
                                 "crossbars, from a stream seeded by this (docs/protocol.md section 13.2) "
                                 "[default: off, a fixed chip]."))
    for option in reversed(options):
        command = option(command)
    return command


def _steps(attack: str, steps: int | None) -> int:
    """--steps, or the attack's default: APGD_STEPS for apgd, PGD_STEPS otherwise."""
    return steps if steps is not None else APGD_STEPS if attack == "apgd" else PGD_STEPS


def _hardware(read_seed: int | None, use_cache: bool):
    """The function that makes the chip of (net, config): the fixed chip (`_map`), or with --read-noise-seed the
    stochastic one (`nxbar.crossbar.stochastic.StochasticChip`)."""
    if read_seed is None:
        return lambda net, config: _map(net, config, use_cache)

    def stochastic(net, config):
        from nxbar.crossbar.stochastic import StochasticChip

        if use_cache:
            _check_cache()
        return StochasticChip(net, config, read_seed, cache=use_cache)
    return stochastic


def model_and_data_options(command):
    """--model, --dataset, --weights, --data, --split and --n."""
    for option in reversed((MODEL, DATASET, WEIGHTS, DATA, SPLIT, N_IMAGES)):
        command = option(command)
    return command


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
    from nxbar.data.load import embedded_path
    from nxbar.models.arch import ARCHITECTURES, param_shapes
    from nxbar.weights import shipped_weights_dir

    click.echo(f"nxbar {nxbar.__version__} (numpy {np.__version__})")
    click.echo("\nModels (docs/protocol.md section 2):")
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
        bits = f" layer bits {'/'.join(map(str, meta['layer_bits']))}" if "layer_bits" in meta else ""
        click.echo(f"  {path.stem:16s} {meta.get('arch')} {meta.get('dataset')} {accs or '(no recorded accuracy)'}{bits}")
    if not found:
        click.echo("  none (train and export with tools/train_export.py)")
    click.echo("\nData sources:")
    click.echo(f"  embedded   first 1,000 CIFAR-10 test images, lossless: {embedded_path()}")
    click.echo("  --data PATH  CIFAR-10/100 python archive (.tar.gz or folder), image folder (dir or .zip),")
    click.echo("               Tiny ImageNet (tiny-imagenet-200 folder or .zip)")
    click.echo(f"\nCache of mapped models and shared PGD inputs: {cache_dir()}")


@main.command()
@model_and_data_options
@BATCH_SIZE
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



def _integers(text: str, option: str, what: str, example: str, low: int) -> tuple[int, ...]:
    """`option`'s comma-separated integers >= low (`what`, e.g. `example`); a one-line ValueError else."""
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected {what} such as {example}") from None
    if not values or min(values) < low:
        raise ValueError(f"{option} {text!r}: {what} must be integers >= {low}")
    return values


def physics_options(command):
    """The crossbar's physical parameters (docs/protocol.md section 3) as options; defaults from CrossbarConfig."""
    from nxbar.crossbar.config import CrossbarConfig

    d = CrossbarConfig()
    options = [
        click.option("--r-on", "r_on_ohm", type=float, default=d.r_on_ohm, show_default=True, help="ON resistance, ohm."),
        click.option("--r-off", "r_off_ohm", type=float, default=d.r_off_ohm, show_default=True, help="OFF resistance, ohm."),
        click.option("--r-source", "r_source_ohm", type=float, default=d.r_source_ohm, show_default=True, help="Row driver resistance, ohm."),
        click.option("--r-sink", "r_sink_ohm", type=float, default=d.r_sink_ohm, show_default=True, help="Column sink resistance, ohm."),
        click.option("--r-wire-row", "r_wire_row_ohm", type=float, default=d.r_wire_row_ohm, show_default=True, help="Row wire segment, ohm."),
        click.option("--r-wire-col", "r_wire_col_ohm", type=float, default=d.r_wire_col_ohm, show_default=True, help="Column wire segment, ohm."),
        click.option("--parasitic-scale", "parasitic_scale", type=float, default=d.parasitic_scale, show_default=True,
                     help="Factor s on all four parasitic resistances (the circuit is solved with s R_source, "
                          "s R_sink, s R_wire_row, s R_wire_col)."),
        click.option("--sigma", type=float, default=d.sigma, show_default=True, help="Device variation sigma/mu."),
        click.option("--bits", type=int, default=None, help="Conductance levels 2^bits (default: analog)."),
        click.option("--layer-bits", default=None,
                     help="Per-layer precision instead of --bits, one entry per conv/FC layer, e.g. 4,2,2,none,..."),
        click.option("--seed", type=int, default=d.seed, show_default=True, help="Chip seed (one seed = one chip)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


PHYSICS = ("r_on_ohm", "r_off_ohm", "r_source_ohm", "r_sink_ohm", "r_wire_row_ohm", "r_wire_col_ohm", "parasitic_scale",
           "sigma", "bits", "layer_bits", "seed")


def _layer_bits(text: str | None):
    if text is None:
        return None
    try:
        return tuple(None if t.strip().lower() in ("none", "analog") else int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"--layer-bits {text!r}: expected integers or 'none', comma-separated") from None


def _config(size: int, kwargs: dict):
    from nxbar.crossbar.config import CrossbarConfig

    values = {k: kwargs.pop(k) for k in PHYSICS}
    values["layer_bits"] = _layer_bits(values["layer_bits"])
    return CrossbarConfig(size=size, **values)


def _map(net, config, use_cache: bool):
    from nxbar.crossbar.mapped import map_model

    if use_cache:
        _check_cache()
    with _progress(None, f"mapping onto {config.size}x{config.size} crossbars", len(net.mvm_names)) as bar:
        mapped = map_model(net, config, cache=use_cache, progress=lambda name, i, n: bar.update(1))
    return mapped


def _report_table(report) -> str:
    lines = [f"{'layer':14s} {'matrix':>12s} {'grid':>8s} {'tiles':>6s} {'NF':>7s} {'|dW|/wmax':>10s} {'solve s':>8s}"]
    for r in report:
        lines.append(
            f"{r['name']:14s} {'x'.join(map(str, r['matrix_shape'])):>12s} {'x'.join(map(str, r['grid'])):>8s} "
            f"{r['tiles']:6d} {r['nf']:7.4f} {r['mean_abs_dw_over_wmax']:10.5f} {r['solve_s']:8.2f}"
        )
    return "\n".join(lines)


@main.command("map")
@model_and_data_options
@XBAR
@physics_options
@NO_CACHE
@BATCH_SIZE
@_fail_cleanly
def map_command(model, dataset, weights, data, split, n, size, no_cache, batch_size, **physics):
    """Map a model onto crossbars: per-layer report and clean accuracy in software and on the crossbars."""
    from nxbar.evaluation import count_correct

    config = _config(size, physics)
    net, meta = _load_model(model, dataset, weights)
    config = _for_weights(config, meta)
    ds = _load_data(data, split, n, net)
    mapped = _map(net, config, not no_cache)
    click.echo(f"{net.arch} on {size}x{size} crossbars, chip seed {config.seed}: {config.as_dict()}")
    click.echo(_report_table(mapped.report))
    total = len(ds.labels)
    for name, m in (("software", net), ("crossbars", mapped)):
        c = count_correct(m, ds.images, ds.labels, batch_size)
        click.echo(f"clean accuracy {name:9s} {c}/{total} = {100 * c / total:.2f}%  ({ds.source})")



@main.command()
@click.option("--xbar", "sizes", default="16,32,64", show_default=True, help="Crossbar sizes, comma-separated.")
@physics_options
@click.option("--tiles", "n_tiles", type=click.IntRange(min=1), default=64, show_default=True, help="Random tiles per size.")
@_fail_cleanly
def nf(sizes, n_tiles, **physics):
    """Non-ideality factor (docs/protocol.md section 3) of random tiles, G uniform in [G_min, G_max], per crossbar size."""
    from nxbar.crossbar.mapped import random_tile_nf

    sizes = _integers(sizes, "--xbar", "crossbar sizes", "32 or 16,32,64", 1)
    configs = [_config(size, dict(physics)) for size in sizes]  # every size checked before any solve
    click.echo(f"{'size':>6s} {'NF':>8s}   ({n_tiles} random tiles each, chip seed {physics['seed']})")
    for config in configs:
        click.echo(f"{config.size:6d} {random_tile_nf(config, n_tiles=n_tiles, seed=config.seed):8.4f}")


@main.command()
@click.option("--xbar", "size", type=click.IntRange(min=1), default=4, show_default=True, help="Tile size.")
@physics_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the netlist here (default: stdout).")
@_fail_cleanly
def spice(size, output, **physics):
    """One random tile (and random input voltages) as a SPICE netlist, expected column currents in comments."""
    from nxbar.crossbar.spice import netlist

    if output:
        _output_path(output, "-o")
    config = _config(size, physics)
    rng = np.random.default_rng(config.seed)
    g = rng.uniform(config.g_min_s, config.g_max_s, size=(size, size))
    v = rng.uniform(0.0, 1.0, size=size)
    text = netlist(g, v, **config.parasitics_ohm,
                   title=f"nxbar {size}x{size} tile, seed {config.seed}, G uniform in [1/R_off, 1/R_on]")
    if output:
        atomic_write_text(output, text)
        click.echo(f"wrote {output}: run `ngspice -b {output}` and compare with the expected currents in its comments")
    else:
        click.echo(text, nl=False)



@main.command()
@click.argument("assignment", type=int)
@click.argument("student_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--seed", type=int, default=None,
              help="Seed of the hidden inputs, to grade on the same inputs again [default: a fresh one per file, "
                   "shown after grading].")
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True,
              help="Seconds (wall clock and CPU) one file may run.")
@click.option("--memory", "memory_mib", type=int, default=4096, show_default=True, help="MiB one file may use.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write every student's score, max and message per test here.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Write one row per student (points per test) here, for a gradebook.")
@click.option("--gradescope", "gradescope_path", type=click.Path(dir_okay=False), default=None,
              help="Write Gradescope's autograder results.json here (one STUDENT_FILE only).")
@_fail_cleanly
def grade(assignment, student_files, seed, timeout_s, memory_mib, json_path, csv_path, gradescope_path):
    """Grade STUDENT_FILES for course assignment 1 (layers), 2 (crossbar) or 3 (attacks); see docs/assignments.

    Each file runs in a child process of its own, under limits, on hidden inputs drawn afresh. Exit status 0
    when every file earns full marks, 1 when any loses marks, 2 on a usage error."""
    from nxbar.grading import Limits, grade_many
    from nxbar.grading.formats import to_csv, to_gradescope, to_json

    if gradescope_path and len(student_files) != 1:
        raise ValueError(f"--gradescope writes the results of one submission, got {len(student_files)} STUDENT_FILES")
    outputs = {_output_path(p, option): fmt for p, option, fmt in (
        (json_path, "--json", to_json), (csv_path, "--csv", to_csv),
        (gradescope_path, "--gradescope", lambda reports: to_gradescope(reports[0]))) if p}
    reports = grade_many(assignment, student_files, seed=seed,
                         limits=Limits(timeout_s=timeout_s, memory_mib=memory_mib))
    click.echo("\n\n".join(r.table() for r in reports))
    for path, fmt in outputs.items():
        atomic_write_text(path, fmt(reports))
    if any(r.score < r.max_score for r in reports):
        raise click.exceptions.Exit(1)


@main.command()
@model_and_data_options
@click.option("--attack", type=click.Choice(("fgsm", "pgd")), default="fgsm", show_default=True)
@click.option("--eps", "eps_text", default="0.1", show_default=True, help="Budget in pixel units, e.g. 0.1 or 8/255.")
@click.option("--widths", default=None,
              help="Bit widths to hand out, comma-separated [default: nxbar.quanos.DEFAULT_WIDTHS, 2,4].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@_fail_cleanly
def ans(model, dataset, weights, data, split, n, attack, eps_text, widths, json_path):
    """Adversarial Noise Sensitivity per layer and the QUANOS bit widths it implies (docs/protocol.md section 6.2)."""
    import json

    from nxbar.attacks import parse_fraction
    from nxbar.quanos import DEFAULT_WIDTHS, attack_ans, bits_from_ans

    if json_path:
        _output_path(json_path, "--json")
    cfg = AttackConfig(attack=attack, eps=parse_fraction(eps_text, "eps"))
    widths = widths or ",".join(map(str, DEFAULT_WIDTHS))
    try:
        width_list = [int(w) for w in widths.split(",")]
    except ValueError:
        raise ValueError(f"--widths {widths!r}: expected integers such as 2,4") from None
    net, meta = _load_model(model, dataset, weights)
    ds = _load_data(data, split, n, net)
    sensitivity = attack_ans(net, ds.images, ds.labels, cfg)
    bits = bits_from_ans(sensitivity, width_list)
    click.echo(f"{net.arch} on {ds.source}, {len(ds.labels)} images, {attack.upper()} eps {eps_text}")
    click.echo(f"{'layer':8s} {'ANS':>9s} {'bits':>5s}")
    for name, value in sensitivity.items():
        click.echo(f"{name:8s} {value:9.4f} {bits[name]:5d}")
    click.echo(f"--layer-bits {','.join(str(b) for b in bits.values())}")
    if json_path:
        atomic_write_text(json_path, json.dumps({
            "attack": cfg.as_dict(), "data": ds.source, "n_images": int(len(ds.labels)),
            "npz_sha256": meta["npz_sha256"], "ans": sensitivity, "bits": bits, "widths": width_list,
            "versions": nxbar.versions()}, indent=2))
        click.echo(f"wrote {json_path}")


@main.command()
@model_and_data_options
@XBAR
@physics_options
@click.option("--attack", type=click.Choice(("pgd", "apgd")), default="pgd", show_default=True,
              help="Every attacker's attack: PGD, or APGD-CE (Croce & Hein 2020; the sanity checks vary PGD).")
@click.option("--eps", "eps_text", default="8/255", show_default=True, help="Budget in pixel units.")
@pgd_options
@click.option("--victims", default=",".join(map(str, CHIP_SEEDS)), show_default=True, help="Victim chip seeds.")
@click.option("--eot", default=",".join(map(str, EOT_SEEDS)), show_default=True,
              help="Chip seeds the EOT attacker samples.")
@click.option("--transfer-seed", type=int, default=TRANSFER_SEED, show_default=True,
              help="Chip the transfer attacker owns.")
@click.option("--sanity-images", type=click.IntRange(min=1), default=100, show_default=True)
@QUERIES
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the report here; finished attackers are kept in JSON.partial meanwhile, and a run "
                   "stopped part-way (Ctrl-C, a lost session) resumes from it when run again with the same options.")
@cluster_options
@_fail_cleanly
def threats(model, dataset, weights, data, split, n, size, attack, eps_text, steps, alpha_text, attack_seed,
            read_seed, victims, eot, transfer_seed, sanity_images, queries, json_path, scheduler, workers, **physics):
    """Attacker x victim matrix (software, nominal crossbar, EOT over chips, cross-chip transfer) with the
    gradient-masking sanity checks of Carlini et al."""
    from nxbar import cluster
    from nxbar.attacks import parse_fraction
    from nxbar.threats import Inputs, format_report, run_recorded, threat_report
    from nxbar.weights import resolve_weights

    if json_path:
        _output_path(json_path, "--json")
        _output_path(f"{json_path}.partial", "--json")
        _on_interrupt(f"the attackers finished so far are kept in {json_path}.partial; run the same command again "
                      f"(same options) to resume from them")
    _check_cache()  # the chips are mapped, and stored there, along the way
    config = _config(size, physics)
    attack = AttackConfig(attack=attack, eps=parse_fraction(eps_text, "eps"), steps=_steps(attack, steps),
                          alpha=parse_fraction(alpha_text, "alpha"), seed=attack_seed)
    seeds = {name: _integers(text, name, "chip seeds", "0,1,2", 0) for name, text in (("--victims", victims),
                                                                                  ("--eot", eot))}
    net, meta = _load_model(model, dataset, weights)
    config = _for_weights(config, meta)
    ds = _load_data(data, split, n, net)
    with cluster.connect(scheduler, workers) as client:
        inputs = None if client is None else Inputs.of(weights or resolve_weights(model, dataset), data, split, n,
                                                       ds.images, ds.labels)
        resumed, on_part = _threat_progress(client, json_path)
        options = {"victim_seeds": seeds["--victims"], "eot_seeds": seeds["--eot"], "transfer_seed": transfer_seed,
                   "sanity_images": sanity_images, "queries": queries, "read_seed": read_seed, "progress": _bar,
                   "client": client, "inputs": inputs}
        if json_path:
            report = run_recorded(net, meta, ds.images, ds.labels, ds.source, config, attack, json_path, model=model,
                                  command="nxbar " + " ".join(sys.argv[1:]), on_resume=resumed, on_part=on_part,
                                  **options)
        else:
            report = threat_report(net, config, ds.images, ds.labels, attack, on_part=on_part, **options)
    click.echo(f"{net.arch} on {ds.source}, {len(ds.labels)} images, {size}x{size} crossbars")
    click.echo(format_report(report))
    if json_path:
        click.echo(f"wrote {json_path}")


def _threat_progress(client, json_path=None):
    """(on_resume, on_part) of a threat report: on_resume(done) says what a resumed run found in
    `<json_path>.partial`; on a cluster (whose workers show no progress bars) on_part(part) prints a line per
    finished attacker or sanity target, with an ETA."""
    from nxbar.study.progress import Progress
    from nxbar.threats import ATTACKERS

    bar, before = Progress(len(ATTACKERS) + 2, lambda text: click.echo(text, err=True)), [0]

    def on_resume(done: dict) -> None:
        before[0] = len(done["rows"]) // 2 + len(done["checks"])
        bar.total -= before[0]
        click.echo(f"resuming from {json_path}.partial: {len(done['rows']) // 2} attacker(s) and "
                   f"{len(done['checks'])} sanity target(s) done", err=True)

    def on_part(part: dict) -> None:
        if client is not None:
            finished = len(part["rows"]) // 2 + len(part["checks"]) - before[0]
            bar.step(1, finished, int(bar.total), f"attackers {len(part['rows']) // 2}, sanity targets "
                                                  f"{len(part['checks'])}")

    return on_resume, on_part


@main.group()
def cache():
    """The on-disk cache: mapped models, and the PGD inputs `nxbar reproduce` shares between experiments."""


@cache.command("clear")
@_fail_cleanly
def cache_clear():
    """Remove every cache entry (mapped models and adversarial inputs)."""
    from nxbar.cache import cache_dir, clear_cache

    removed = clear_cache()
    click.echo(f"removed {len(removed)} cached file(s) from {cache_dir()}")


@main.command()
@model_and_data_options
@XBAR
@physics_options
@click.option("--attack", type=click.Choice(ATTACKS), default="pgd", show_default=True)
@click.option("--eps", "eps_text", default=None,
              help="Budget(s), comma-separated, e.g. 2/255,8/255 or 0.1 [default: 8/255 for pgd, 0.1 for fgsm].")
@click.option("--eps-space", type=click.Choice(EPS_SPACES), default="pixel", show_default=True,
              help="pixel: [0, 1] image units; normalized: units of the normalised input (pixel budget eps*std).")
@pgd_options
@click.option("--no-random-start", is_flag=True, help="Start PGD at the clean image.")
@click.option("--early-stop", is_flag=True,
              help="PGD only: stop attacking an image once it is misclassified and keep that adversarial image "
                   "(as AutoAttack does). Faster; AA can only be lower or equal; recorded in --json. "
                   "[default: off, every image gets every step]")
@click.option("--modes", default=",".join(MODES).lower(), show_default=True,
              help="Any of sw, sh, hh, comma-separated.")
@click.option("--input-bits", type=int, default=None,
              help="Input pixel discretization to 2^B levels in front of every model (docs/protocol.md section 6.1; "
                   "straight-through gradient).")
@NO_CACHE
@BATCH_SIZE
@click.option("--sanity-images", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also run the gradient-masking sanity checks (Carlini et al.) of the PGD attack (first eps) on "
                   "the first N images, on the software model and on the chip: about 16 PGD runs and a "
                   "random search each. 0: not run.")
@QUERIES
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write results, full configuration, weight hash, versions and timings here.")
@_fail_cleanly
def evaluate(model, dataset, weights, data, split, n, size, attack, eps_text, eps_space, steps, alpha_text,
             no_random_start, early_stop, attack_seed, read_seed, modes, input_bits, no_cache, batch_size, sanity_images, queries,
             json_path, **physics):
    """Attack in the SW, SH and HH modes and print CA, AA and AL (docs/protocol.md sections 5 and 7)."""
    import json

    from nxbar.attacks import parse_fraction
    from nxbar.evaluate_run import evaluate_record, evaluate_run
    from nxbar.evaluation import mode_names
    from nxbar.sanity import format_checks
    from nxbar.weights import resolve_weights, weight_paths

    if json_path:
        _output_path(json_path, "--json")
    t0 = time.perf_counter()
    config = _config(size, physics)
    try:
        mode_list = mode_names(m for m in modes.split(",") if m.strip())
    except ValueError:
        raise ValueError(f"--modes {modes!r}: allowed modes are {', '.join(MODES).lower()}") from None
    eps_list = [parse_fraction(t, "eps") for t in (eps_text or ("0.1" if attack == "fgsm" else "8/255")).split(",")]
    alpha, steps = parse_fraction(alpha_text, "alpha"), _steps(attack, steps)
    attacks = [AttackConfig(attack=attack, eps=e, eps_space=eps_space, steps=steps, alpha=alpha,
                            random_start=not no_random_start, seed=attack_seed, early_stop=early_stop)
               for e in eps_list]
    if sanity_images and attack != "pgd":
        raise ValueError(f"--sanity-images {sanity_images} needs --attack pgd (the checks vary PGD), "
                         f"got --attack {attack}")
    net, meta = _load_model(model, dataset, weights)
    config = _for_weights(config, meta)
    ds = _load_data(data, split, n, net)
    load_s = time.perf_counter() - t0
    result = evaluate_run(net, ds.images, ds.labels, attacks, config=config, modes=mode_list,
                          map_fn=_hardware(read_seed, not no_cache), input_bits=input_bits,
                          batch_size=batch_size, sanity_images=sanity_images, queries=queries, progress=_bar)
    timings = {"load_s": load_s, **result.timings, "total_s": time.perf_counter() - t0}

    start = 'no random start' if no_random_start else f'random start seed {attack_seed}'
    attack_desc = attack.upper() + (f", {steps} steps, alpha {alpha_text}, {start}"
                                    + (", early stop" if early_stop else "") if attack == "pgd" else
                                    f", {steps} steps, {start}" if attack == "apgd" else "")
    click.echo(f"{meta.get('model', net.arch)} ({meta['dataset']}) on {ds.source}, {len(ds.labels)} images; {attack_desc}; eps in {eps_space} units")
    if result.defence is not None:
        click.echo(result.defence.describe())
    if read_seed is not None and result.mapped is not None:
        click.echo(result.mapped.describe())
    elif result.mapped is not None:
        click.echo(f"crossbars {size}x{size}, chip seed {config.seed}: " +
                   ", ".join(f"{k}={v}" for k, v in config.as_dict().items() if k not in ("size", "seed")))
    click.echo(f"{'mode':5s} {'eps':>8s} {'CA %':>7s} {'AA %':>7s} {'AL %':>7s}")
    for r in result.rows:
        click.echo(f"{r['mode']:5s} {eps_label(attack, r['eps']):>8s} {r['CA']:7.2f} {r['AA']:7.2f} {r['AL']:7.2f}")
    if result.sanity is not None:
        click.echo(f"gradient-masking sanity checks, PGD eps {eps_label(attack, eps_list[0])}, "
                   f"first {result.sanity_images} images:")
        click.echo("\n".join(format_checks(result.sanity)))
    elif attack == "pgd":
        click.echo("gradient-masking sanity checks: not run (--sanity-images N runs them)")
    click.echo(f"time: {timings['total_s']:.1f} s")
    if json_path:
        record = evaluate_record(result, command="nxbar " + " ".join(sys.argv[1:]), net=net, meta=meta,
                                 weights_path=weight_paths(weights or resolve_weights(model, dataset))[0],
                                 source=ds.source, n_images=len(ds.labels), config=config, attacks=attacks,
                                 timings=timings)
        atomic_write_text(json_path, json.dumps(record, indent=2))
        click.echo(f"wrote {json_path}")


@main.command()
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the experiments, their cell counts and how many are stored.")
@click.option("--report", "write_report", is_flag=True,
              help="Write README.md (tables, claim verdicts, threat-model section) from the stored CSVs and "
                   "threats/*.json.")
@click.option("--figures", "draw_figures", is_flag=True,
              help="Draw NAME.png for every stored CSV (needs matplotlib: pip install 'nxbar[plot]').")
@click.option("--quick", is_flag=True, help="Small smoke version (few cells, 16 images), stored as NAME_quick.csv.")
@click.option("--n", "n", type=int, default=None, help="Embedded test images to use [default: 1,000; 16 with --quick].")
@click.option("--out", type=click.Path(file_okay=False), default="reference_results", show_default=True,
              help="Results folder, relative to the current folder (created if missing); run from a checkout's "
                   "root to extend its stored results.")
@click.option("--paper", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --report: copy the paper's tables (*.csv) from this folder into OUT/paper/ first "
                   "[default: OUT/paper/ as it is; reference_results/paper/ holds them].")
@cluster_options
@_fail_cleanly
def reproduce(name, list_only, write_report, draw_figures, quick, n, out, paper, scheduler, workers):
    """Run experiment NAME of the study, resuming from the cells already stored (Ctrl-C keeps the finished
    cells: the same command run again goes on from them)."""
    from nxbar import cluster
    from nxbar.study import figures, grid, report, results, runner
    from nxbar.study.progress import Progress

    out = Path(out).absolute()
    computes = not (list_only or draw_figures or write_report)
    _no_cells_with_cluster(scheduler, workers, computes, "--list, --report or --figures")
    if not list_only:  # every other use writes there
        _output_path(out, "--out", folder=True)
    if list_only:
        for key, description in grid.EXPERIMENTS.items():
            cells = {c.key() for c in grid.experiment_cells(key)}
            stored = sum(results.row_key(r) in cells for r in results.read_rows(out / f"{key}.csv"))
            click.echo(f"{key:7s} {len(cells):4d} cells {stored:4d} stored  {description}")
    elif draw_figures:
        try:
            paths = figures.draw_all(out)
        except ImportError as err:  # matplotlib, an optional extra, is missing
            raise ValueError(str(err)) from None
        for path in paths:
            click.echo(f"wrote {path}")
    elif write_report:
        if paper is not None:
            results.copy_paper_tables(paper, out)
        click.echo(f"wrote {report.write_report(out)}")
    elif name is None:
        raise ValueError("give an experiment NAME (see --list), --list or --report")
    else:
        _check_cache()  # mappings and shared adversarial inputs are stored there
        _on_interrupt(f"the finished cells are stored in {out}; run the same command again to resume from them")
        click.echo(f"{name}: computing the cells not yet stored in {out}", err=True)
        bar = Progress(0, lambda text: click.echo(text, err=True))

        def progress(i, total, cell):
            bar.total = total  # cells of about the same cost: the ETA is the mean time per cell so far
            bar.step(1, i, total, cell.describe())

        with cluster.connect(scheduler, workers) as client:
            path = runner.run(name, out, quick=quick, n=n, progress=progress, draw=figures.draw, client=client)
        click.echo(f"wrote {path} and {path.with_suffix('.json')}")


@main.command()
@click.option("--quick", is_flag=True,
              help="Every path of the study on 16 images, one chip and two small crossbar sizes, stored in "
                   "OUT/robustness_quick/.")
@click.option("--out", type=click.Path(file_okay=False), default="reference_results", show_default=True,
              help="Results folder; the study writes OUT/robustness/ (created if missing).")
@click.option("--stop-after", type=click.Choice(["sweep", "attacks"]), default="attacks", show_default=True,
              help="sweep: only the non-ideality sweep and the choice of the operating points.")
@click.option("--from-stored", is_flag=True,
              help="Compute no cell: write verdicts.csv and the figures from the attack cells stored so far.")
@click.option("--resamples", type=click.IntRange(min=100), default=None,
              help="Bootstrap resamples of the confidence intervals [default: 10,000].")
@cluster_options
@_fail_cleanly
def robustness(quick, out, stop_after, from_stored, resamples, scheduler, workers):
    """The robustness study (docs/protocol.md section 12): sweep sigma and the parasitic scale, choose the
    operating points from clean accuracy alone, attack at them with per-image outcomes, and give every claim a
    statistical verdict (verdicts.csv, figures). Resumable cell by cell: Ctrl-C keeps the finished cells, and
    the same command run again goes on from them."""
    from nxbar import cluster
    from nxbar.study import robustness as study
    from nxbar.study import robustness_report, stats

    _no_cells_with_cluster(scheduler, workers, not from_stored, "--from-stored")
    out = _output_path(Path(out).absolute(), "--out", folder=True)
    design = study.design_for(quick)
    where = study.folder(out, quick)
    if from_stored:
        if not (where / "attacks.csv").is_file():
            raise ValueError(f"--from-stored: {where} holds no attacks.csv yet; run `nxbar robustness` first")
    else:
        _check_cache()  # the sweep's mappings are reused at the chosen points
        _on_interrupt(f"the finished cells are stored in {where}; run the same command again to resume from them")
        click.echo(f"robustness study: computing the cells not yet stored in {where}", err=True)
        with cluster.connect(scheduler, workers) as client:
            run = study.Study(out, design, echo=lambda text: click.echo(text, err=True), client=client)
            record = run.run(stop_after=stop_after)
        click.echo("operating points (parasitic scale s at sigma "
                   f"{design.point_sigma:g}): " + ", ".join(f"{k} {v:g}" for k, v in record["chosen_scale"].items()))
    if stop_after == "attacks":
        made = robustness_report.finish(out, design, resamples=resamples or stats.RESAMPLES)
        for name, path in made.items():
            click.echo(f"{name}: {path}")


@main.command()
@click.option("--quick", is_flag=True, help="Every path on 8 images, one chip and small crossbars, at the points of "
                                            "`nxbar robustness --quick`.")
@click.option("--out", type=click.Path(file_okay=False), default="reference_results", show_default=True,
              help="Results folder: threat matrices in OUT/threats/, the rest in OUT/robustness/.")
@_fail_cleanly
def adaptive(quick, out):
    """Adaptive and stochastic attackers at the robustness study's operating points (docs/protocol.md section
    13): threat matrices at small budgets, APGD beside PGD-10, and stochastic hardware with EOT. Resumable:
    Ctrl-C keeps the finished parts, and the same command run again goes on from them."""
    from nxbar.study import adaptive as study

    out = _output_path(Path(out).absolute(), "--out", folder=True)
    _check_cache()
    _on_interrupt("the finished parts are stored; run the same command again to resume from them")
    design = study.QUICK_ADAPTIVE if quick else study.FULL_ADAPTIVE
    for name, path in study.run(out, design, echo=lambda text: click.echo(text, err=True)).items():
        click.echo(f"{name}: {path}")


if __name__ == "__main__":
    main()
