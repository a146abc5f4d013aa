"""nxbar.study.figures: the plotted numbers (chip-seed mean and sample std), the series labels, the PNGs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

from nxbar.study import figures, grid  # noqa: E402

PHYSICS = {"r_on_ohm": "20000.0", "r_off_ohm": "200000.0", "sigma": "0.1", "bits": ""}
AL = {  # (xbar, mode) -> AL at eps 8/255 per chip seed 0, 1, 2; the other eps (2/255) runs on chip 0 only
    ("16", "SH"): [30.0, 32.0, 37.0], ("16", "HH"): [20.0, 21.0, 25.0],
    ("32", "SH"): [28.0, 28.5, 29.0], ("32", "HH"): [10.0, 14.0, 12.0],
}


def _row(**fields):
    """A CSV row as read back: every column a string, absent key columns empty."""
    row = dict.fromkeys(grid.COLUMNS, "")
    row.update({k: str(v) for k, v in fields.items()})
    return row


def _attack_rows(model="vgg8", **extra):
    rows = []
    for eps in (2 / 255, 8 / 255):
        common = dict(model=model, dataset="cifar10", attack="pgd", eps=repr(eps), eps_space="pixel", steps=10,
                      alpha=0.01, random_start=True, attack_seed=0, **extra)
        rows.append(_row(xbar="software", mode="SW", AL=60.0 if eps > 0.01 else 15.0, **common))
        for (size, mode), values in AL.items():
            for seed, al in enumerate(values if eps > 0.01 else values[:1]):
                rows.append(_row(xbar=size, mode=mode, chip_seed=seed, AL=al - (0 if eps > 0.01 else 5), **PHYSICS,
                                 **common))
    return rows


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_attack_series_mean_std_and_labels(tmp_path):
    rows = _attack_rows()
    got = figures.series(rows)
    assert list(got) == ["SW", "xbar16 SH", "xbar16 HH", "xbar32 SH", "xbar32 HH"]  # SW once, varying parts only
    eps = [2 / 255, 8 / 255]
    assert got["SW"] == (eps, [15.0, 60.0], [0.0, 0.0])
    for (size, mode), values in AL.items():
        xs, mean, std = got[f"xbar{size} {mode}"]
        assert xs == eps
        assert mean == pytest.approx([values[0] - 5, np.mean(values)])
        assert std == pytest.approx([0.0, np.std(values, ddof=1)])
    assert got["xbar16 SH"][1][1] == pytest.approx(33.0) and got["xbar16 SH"][2][1] == pytest.approx(np.sqrt(13))

    path = figures.draw("table2", rows, tmp_path / "sub" / "table2.png")
    assert path == tmp_path / "sub" / "table2.png"
    assert _png_size(path) == (500, 550)  # 5 x (4 + 1.5 for the legend) inches at 100 dpi
    again = figures.draw("table2", rows, tmp_path / "again.png")
    assert again.read_bytes() == path.read_bytes()  # deterministic: no timestamp in the PNG
    assert b"Software" not in path.read_bytes()  # nor the matplotlib version


def test_physics_model_and_input_bits_labels():
    # fig8b-like: only R_off varies; both parts are named together, as the report writes them
    rows = [r for r in _attack_rows() if r["xbar"] in ("software", "32")]
    rows += [{**r, "r_off_ohm": "2000000.0"} for r in rows if r["xbar"] == "32"]
    got = figures.series(rows)
    assert set(got) == {"SW", "xbar32 SH R_on 20k ON/OFF 10", "xbar32 HH R_on 20k ON/OFF 10",
                        "xbar32 SH R_on 20k ON/OFF 100", "xbar32 HH R_on 20k ON/OFF 100"}

    # table3-like: model varies; fig9-like: a new key column input_bits, empty = no discretization
    assert "vgg8q xbar16 HH" in figures.series(_attack_rows("vgg8") + _attack_rows("vgg8q"))
    bits = _attack_rows() + [{**r, "input_bits": "4"} for r in _attack_rows()]
    labels = set(figures.series(bits))
    assert {"SW", "SW 4-bit input", "xbar32 SH", "xbar32 SH 4-bit input"} <= labels and len(labels) == 10


def test_line_colours_and_styles():
    def styles(rows):
        entries = figures._series(rows)
        return {label: figures._styles(entries)[tuple(key.items())] for label, key, *_ in entries}

    # table2-like: only size and mode vary: one colour per size, SH solid, HH dashed, the one SW black
    got = styles(_attack_rows())
    assert got == {"SW": ("black", "-"), "xbar16 SH": ("C0", "-"), "xbar16 HH": ("C0", "--"),
                   "xbar32 SH": ("C1", "-"), "xbar32 HH": ("C1", "--")}
    # fig9-like: one colour per input setting, its SW dotted in it
    got = styles(_attack_rows() + [{**r, "input_bits": "4"} for r in _attack_rows()])
    assert got["SW"] == ("C0", ":") and got["xbar32 SH"] == ("C0", "-") and got["xbar16 HH"] == ("C0", "--")
    assert got["SW 4-bit input"] == ("C1", ":") and got["xbar32 HH 4-bit input"] == ("C1", "--")
    # fig10-like: two software-only settings (4-bit input, the QUANOS model) get colours of their own
    sw = [r for r in _attack_rows() if r["mode"] == "SW"]
    got = styles(_attack_rows() + [{**r, "input_bits": "4"} for r in sw] + [{**r, "model": "vgg8q"} for r in sw])
    assert got["vgg8 SW"] == ("C0", ":") and got["vgg8 SW 4-bit input"] == ("C1", "-")
    assert got["vgg8q SW"] == ("C2", "-")
    # fig8b-like: one colour per physics variant; SW, which has none, black
    rows = [r for r in _attack_rows() if r["xbar"] in ("software", "32")]
    got = styles(rows + [{**r, "r_off_ohm": "2000000.0"} for r in rows if r["xbar"] == "32"])
    assert got["SW"] == ("black", "-") and got["xbar32 HH R_on 20k ON/OFF 10"] == ("C0", "--")
    assert got["xbar32 SH R_on 20k ON/OFF 100"] == ("C1", "-")


def test_a_long_legend_keeps_the_axes_at_full_width():
    # fig8b: SW and SH/HH at four ON/OFF ratios, 9 long labels; in three columns the legend would be wider than
    # the panel, and the constrained layout would squeeze the axes to a strip to make room for it
    rows = [r for r in _attack_rows() if r["xbar"] in ("software", "32")]
    rows += [{**r, "r_off_ohm": f"{r_off:.1f}"} for r_off in (2e6, 2e7, 4e7) for r in rows if r["xbar"] == "32"]
    fig = figures.figure("fig8b", rows)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert len(ax.get_legend().get_texts()) == 9
    assert ax.get_position().width > 0.8  # of the figure's width
    legend, whole = ax.get_legend().get_window_extent(), fig.bbox
    assert whole.x0 <= legend.x0 and legend.x1 <= whole.x1 and whole.y0 <= legend.y0


def test_panels_per_attack_and_eps_space(tmp_path):
    pixel = _attack_rows()
    rows = pixel + [{**r, "eps_space": "normalized"} for r in pixel] + [{**r, "attack": "fgsm"} for r in pixel]
    assert list(figures.panels(rows)) == [("pgd", "pixel"), ("pgd", "normalized"), ("fgsm", "pixel")]
    with pytest.raises(ValueError, match="pass the rows of one panel"):
        figures.series(rows)
    path = figures.draw("table1", rows, tmp_path / "t.png")
    assert _png_size(path) == (1500, 550)


def test_fig4_and_nf(tmp_path):
    ca = {("vgg8", "software"): [90.0], ("vgg8", "16"): [85.0, 86.0], ("vgg16", "software"): [92.0],
          ("vgg16", "16"): [80.0, 84.0]}
    rows = [_row(model=m, dataset="cifar10", xbar=s, mode="clean", chip_seed="" if s == "software" else seed,
                 CA=v, **({} if s == "software" else PHYSICS))
            for (m, s), values in ca.items() for seed, v in enumerate(values)]
    assert figures.series(rows) == {"software": (["vgg8", "vgg16"], [90.0, 92.0], [0.0, 0.0]),
                                    "xbar16": (["vgg8", "vgg16"], [85.5, 82.0],
                                               pytest.approx([np.sqrt(0.5), np.sqrt(8.0)]))}
    assert _png_size(figures.draw("fig4", rows, tmp_path / "fig4.png")) == (500, 400)

    layers = ["conv1", "conv2", "fc1"]
    nf = [_row(model="vgg8", xbar=s, mode="nf", layer=layer, nf=0.01 * i + int(s) / 1000, **PHYSICS)
          for s in ("16", "32") for i, layer in enumerate(layers + ["tiles"])]
    got = figures.series(nf)
    assert list(got) == ["xbar16", "xbar32"]
    assert got["xbar32"][0] == ["tiles", *layers]
    assert got["xbar32"][1] == pytest.approx([0.062, 0.032, 0.042, 0.052])


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="experiment 'fig9'.*rows is empty"):
        figures.draw("fig9", [], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"experiment 'odd'.*\['defence'\] without an attack"):
        figures.draw("odd", [_row(mode="defence", CA=1.0)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="experiment 'fig4'.*'CA' is empty in the row of .*mode.: .clean"):
        figures.draw("fig4", [_row(model="vgg8", xbar="software", mode="clean")], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_draw_all_registered_and_unknown_names(tmp_path):
    import csv

    def write(name, rows):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*grid.COLUMNS, "input_bits"])
            writer.writeheader()
            writer.writerows(rows)

    write("table2", _attack_rows())
    write("table2_quick", _attack_rows())  # quick runs are not figures of the study
    write("fig9", [{**r, "input_bits": "4"} for r in _attack_rows()])  # not registered (yet): drawn generically
    paths = figures.draw_all(tmp_path)
    assert paths == [tmp_path / "table2.png", tmp_path / "fig9.png"]
    assert all(_png_size(p) == (500, 550) for p in paths)


def test_runtime_package_works_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from nxbar.study import figures\n"
            "rows = [{'model': 'vgg8', 'xbar': 'software', 'mode': 'clean', 'CA': '90.0'}]\n"
            "assert figures.series(rows) == {'clean': (['vgg8'], [90.0], [0.0])}\n"
            "try:\n    figures.draw('fig4', rows, 'x.png')\n"
            "except ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "pip install 'nxbar[plot]'" in done.stdout
