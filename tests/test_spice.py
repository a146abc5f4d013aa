"""The tile as a SPICE netlist, checked by an independent simulator: ngspice's column currents equal v T."""

import re
import shutil

import numpy as np
import pytest

from nxbar.crossbar import netlist, run_ngspice, transfer_matrix
from nxbar.crossbar import spice

NAMES = ("r_source_ohm", "r_sink_ohm", "r_wire_row_ohm", "r_wire_col_ohm")
needs_ngspice = pytest.mark.skipif(
    shutil.which("ngspice") is None, reason="ngspice is not installed (Debian/Ubuntu: apt-get install ngspice)"
)


def random_case(seed, rows, cols):
    rng = np.random.default_rng(seed)
    G = rng.uniform(1 / 200e3, 1 / 20e3, (rows, cols))
    res = dict(zip(NAMES, rng.uniform(0.5, 300.0, 4)))
    v = rng.uniform(0.0, 1.0, rows)
    return G, res, v


def expected_in_comments(text):
    return np.array([float(x) for x in re.findall(r"^\*   I_\d+ = (\S+) A$", text, flags=re.M)])


@needs_ngspice
@pytest.mark.parametrize("seed, rows, cols", [(0, 4, 4), (1, 8, 8), (2, 3, 6)])
def test_ngspice_gives_the_column_currents_of_T(seed, rows, cols):
    G, res, v = random_case(seed, rows, cols)
    text = netlist(G, v, **res)
    expect = v @ transfer_matrix(G, **res)
    np.testing.assert_array_equal(expected_in_comments(text), expect)
    np.testing.assert_allclose(run_ngspice(text), expect, rtol=1e-6)


@needs_ngspice
@pytest.mark.parametrize("zero", [(name,) for name in NAMES] + [NAMES])
def test_zero_resistances_are_zero_volt_sources(zero):
    G, res, v = random_case(3, 4, 5)
    res.update({name: 0.0 for name in zero})
    text = netlist(G, v, **res)
    n_resistors = len(re.findall(r"^R", text, flags=re.M))
    n_sources = len(re.findall(r"^V", text, flags=re.M))
    counts = {"r_source_ohm": 4, "r_sink_ohm": 5, "r_wire_row_ohm": 4 * 4, "r_wire_col_ohm": 3 * 5}
    zeroed = sum(counts[name] for name in zero if name != "r_sink_ohm")  # a zero sink only drops Rk
    assert n_resistors == sum(counts.values()) + 4 * 5 - zeroed - (5 if "r_sink_ohm" in zero else 0)
    assert n_sources == 4 + 5 + zeroed
    np.testing.assert_allclose(run_ngspice(text), v @ transfer_matrix(G, **res), rtol=1e-6)


@needs_ngspice
def test_open_cell_is_left_out():
    G, res, v = random_case(4, 4, 4)
    G[1, 2] = 0.0
    text = netlist(G, v, **res)
    assert "Rd1_2 " not in text and "Rd1_1 " in text
    np.testing.assert_allclose(run_ngspice(text), v @ transfer_matrix(G, **res), rtol=1e-6)


@needs_ngspice
def test_ngspice_failure_is_reported():
    with pytest.raises(RuntimeError, match="ngspice failed"):
        run_ngspice("broken\nV1 a 0 DC 1\nV2 a 0 DC 2\n.op\n.end\n")


def test_missing_ngspice_is_reported(monkeypatch):
    monkeypatch.setattr(spice.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"ngspice not found on PATH \(Debian/Ubuntu: apt-get install ngspice\)"):
        run_ngspice("title\n.end\n")


def test_bad_netlist_inputs():
    G, res, v = random_case(5, 2, 3)
    with pytest.raises(ValueError, match=r"G must be one tile of shape \(R, C\), got shape \(1, 2, 3\)"):
        netlist(G[None], v, **res)
    with pytest.raises(ValueError, match=r"v must be 2 finite voltages \(shape \(2,\)\), got shape \(3,\)"):
        netlist(G, np.ones(3), **res)
    with pytest.raises(ValueError, match=r"r_wire_col_ohm must be a finite number >= 0 \(ohm\), got -1"):
        netlist(G, v, **{**res, "r_wire_col_ohm": -1})
    with pytest.raises(ValueError, match=r"title must be one line, got 'a\\nb'"):
        netlist(G, v, **res, title="a\nb")
