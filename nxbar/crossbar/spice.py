"""One crossbar tile as a SPICE netlist, to re-check T with an independent circuit simulator.

The netlist is the circuit of docs/physics.md section 1 element by element (voltage sources and resistors only):
  Vin<i>   in<i> 0          row i's ideal source, V_i volts
  Rs<i>    in<i> r<i>_0     R_source
  Rr<i>_<j> r<i>_<j> r<i>_<j+1>   R_wire_row
  Rd<i>_<j> r<i>_<j> c<i>_<j>     the device, 1/G[i,j] ohm (omitted when G[i,j] = 0: an open cell)
  Rc<i>_<j> c<i>_<j> c<i+1>_<j>   R_wire_col
  Rk<j>    c<R-1>_<j> k<j>  R_sink
  Vout<j>  k<j> 0           0 V source in series with the sink: SPICE reports I_j = i(Vout<j>)
A zero resistance is written as a 0 V source with the same name and V instead of R as first letter,
an exact ideal connection in any SPICE; a zero R_sink leaves Vout<j> alone between c<R-1>_<j> and 0.
The `.op` card is standard SPICE; the `.control` block makes `ngspice -b` print every I_j with 16
significant digits.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from nxbar.crossbar.checks import check_tile_and_input
from nxbar.crossbar.circuit import transfer_matrix


def _two_terminal(name: str, a: str, b: str, ohm: float) -> str:
    """A resistor, or a 0 V source (exact ideal connection) when ohm == 0."""
    return f"V{name} {a} {b} DC 0" if ohm == 0 else f"R{name} {a} {b} {ohm:.17g}"


def netlist(G, v, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm, title="nxbar crossbar tile") -> str:
    """SPICE netlist (text) of the tile G (R, C) siemens driven by v (R,) volts; resistances in ohm.

    The comments list the column currents I = v T expected from transfer_matrix.
    """
    G, v, res = check_tile_and_input(G, v, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm)
    R, C = G.shape
    if "\n" in title:
        raise ValueError(f"title must be one line, got {title!r}")
    expected = v @ transfer_matrix(G, **res)
    lines = [
        title,
        f"* Crossbar tile, {R} rows x {C} columns, nxbar docs/physics.md section 1; units ohm, volt, ampere.",
        "* R_source {r_source_ohm:.17g}, R_sink {r_sink_ohm:.17g}, R_wire_row {r_wire_row_ohm:.17g}, "
        "R_wire_col {r_wire_col_ohm:.17g} ohm (0 ohm = 0 V source).".format(**res),
        "* Expected column currents I_j = i(Vout<j>) from nxbar.crossbar.transfer_matrix (I = v T):",
        *(f"*   I_{j} = {expected[j]:.17g} A" for j in range(C)),
    ]
    for i in range(R):
        lines.append(f"Vin{i} in{i} 0 DC {v[i]:.17g}")
        lines.append(_two_terminal(f"s{i}", f"in{i}", f"r{i}_0", res["r_source_ohm"]))
        for j in range(C - 1):
            lines.append(_two_terminal(f"r{i}_{j}", f"r{i}_{j}", f"r{i}_{j + 1}", res["r_wire_row_ohm"]))
        for j in range(C):
            if G[i, j] > 0:
                lines.append(f"Rd{i}_{j} r{i}_{j} c{i}_{j} {1.0 / G[i, j]:.17g}")
        if i < R - 1:
            for j in range(C):
                lines.append(_two_terminal(f"c{i}_{j}", f"c{i}_{j}", f"c{i + 1}_{j}", res["r_wire_col_ohm"]))
    for j in range(C):
        if res["r_sink_ohm"] == 0:
            lines.append(f"Vout{j} c{R - 1}_{j} 0 DC 0")
        else:
            lines.append(f"Rk{j} c{R - 1}_{j} k{j} {res['r_sink_ohm']:.17g}")
            lines.append(f"Vout{j} k{j} 0 DC 0")
    lines += [".op", ".control", "set numdgt=15", "run", *(f"print i(Vout{j})" for j in range(C)), "quit", ".endc"]
    lines.append(".end")
    return "\n".join(lines) + "\n"


def run_ngspice(netlist_text: str, timeout_s: float = 120.0) -> np.ndarray:
    """Run `ngspice -b` on a netlist from `netlist` and return the column currents i(Vout<j>) in amperes."""
    exe = shutil.which("ngspice")
    if exe is None:
        raise RuntimeError("ngspice not found on PATH (Debian/Ubuntu: apt-get install ngspice)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tile.cir"
        path.write_text(netlist_text)
        proc = subprocess.run([exe, "-b", str(path)], capture_output=True, text=True, timeout=timeout_s, cwd=tmp)
    out = proc.stdout + proc.stderr
    found = {int(j): float(x) for j, x in re.findall(r"^i\(vout(\d+)\)\s*=\s*(\S+)", out, flags=re.M | re.I)}
    if proc.returncode != 0 or not found or sorted(found) != list(range(len(found))):
        raise RuntimeError(f"ngspice failed (exit {proc.returncode}); output ends with:\n{out[-2000:]}")
    return np.array([found[j] for j in range(len(found))])
