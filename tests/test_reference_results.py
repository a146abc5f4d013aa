"""The stored reference results (reference_results/, issue 6): every stored table complete and internally
consistent, made by a full run with the shipped weights; a few cheap cells computed again give exactly the
stored counts (the engine is deterministic); README.md is the report generated from exactly these tables."""

import json
import shutil

import pytest

import nxbar.reproduce as rp
from nxbar.crossbar.config import CrossbarConfig
from nxbar.threats import ATTACKERS
from nxbar.weights import file_sha256, weight_paths

RESULTS = rp.DEFAULT_OUT
STORED = [name for name in rp.EXPERIMENTS if (RESULTS / f"{name}.csv").is_file()]
# Cheap cells computed again on the stored number of images: FGSM needs one gradient per image; 16x16 maps fastest.
RECOMPUTED = [
    ("table1", {"mode": "SW", "eps": "0.1", "eps_space": "pixel"}),
    ("table1", {"mode": "HH", "xbar": "16", "eps": "0.1", "eps_space": "pixel", "chip_seed": "0"}),
    ("table3", {"model": "vgg8q", "mode": "HH", "xbar": "16", "eps": "0.1", "chip_seed": "0"}),
    ("fig10", {"model": "vgg16q", "attack": "fgsm", "eps": "0.1"}),
    ("fig4", {"model": "vgg8", "xbar": "64"}),  # the only stored cell recomputed on 64x64 crossbars
    ("nf", {"layer": "tiles", "xbar": "16"}),
    ("nf", {"layer": "conv3.weight", "xbar": "16"}),
]


def test_readme_is_the_report_of_the_stored_tables(tmp_path):
    copy = shutil.copytree(RESULTS, tmp_path / "results")  # report() writes README.md into the folder it reads
    assert rp.report(copy).read_text() == (RESULTS / "README.md").read_text(), \
        "reference_results/README.md is stale: run `nxbar reproduce --report`"


@pytest.mark.parametrize("name", STORED)
def test_stored_table_is_complete_consistent_and_made_with_the_shipped_weights(name):
    rows = rp.read_rows(RESULTS / f"{name}.csv")
    record = json.loads((RESULTS / f"{name}.json").read_text())
    assert record["experiment"] == name and record["finished"] and not record["quick"] and record["base_physics"] == {}
    assert record["crossbar_defaults"] == json.loads(json.dumps(CrossbarConfig().as_dict()))
    keys = [rp.row_key(r) for r in rows]
    assert sorted(keys) == sorted(c.key() for c in rp.experiment_cells(name)), "grid incomplete or cells repeated"
    for model, w in record["weights"].items():
        shipped = weight_paths(rp.find_weights(model))[0]
        assert w["npz_sha256"] == file_sha256(shipped), f"{name} was made with other {model} weights"
    for r in rows:
        if r["mode"] == "nf":
            assert 0 < float(r["nf"]) < 1
            continue
        n = int(r["n"])
        assert n == record["data"]["n_images"] == 1000
        assert float(r["CA"]) == 100.0 * int(r["clean_correct"]) / n
        if r["mode"] != "clean":
            assert float(r["AA"]) == 100.0 * int(r["adv_correct"]) / n
            assert float(r["AL"]) == pytest.approx(float(r["CA"]) - float(r["AA"]), abs=1e-9)


@pytest.mark.parametrize("name,match", [(n, m) for n, m in RECOMPUTED if n in STORED])
def test_cheap_cells_computed_again_give_the_stored_numbers(name, match, tmp_path):
    row = next(r for r in rp.read_rows(RESULTS / f"{name}.csv") if all(r[k] == v for k, v in match.items()))
    again = rp.recompute(name, row, cache_dir=tmp_path)
    if name == "nf":
        assert float(again["nf"]) == pytest.approx(float(row["nf"]), rel=1e-12)
    else:
        assert again == {k: row[k] for k in again}


def _shipped_sha256(model: str) -> str:
    return file_sha256(weight_paths(rp.find_weights(model))[0])


@pytest.mark.parametrize("path", sorted(RESULTS.glob("evaluate_*.json")), ids=lambda p: p.name)
def test_stored_main_command_is_consistent_and_made_with_the_shipped_weights(path):
    record = json.loads(path.read_text())
    assert record["model"]["npz_sha256"] == _shipped_sha256(record["model"]["name"])
    for r in record["results"]:
        assert r["n"] == record["data"]["n_images"]
        assert r["CA"] == 100.0 * r["clean_correct"] / r["n"] and r["AA"] == 100.0 * r["adv_correct"] / r["n"]
        assert r["AL"] == pytest.approx(r["CA"] - r["AA"], abs=1e-9)
    assert record["timings"]["total_s"] >= record["timings"]["attack_s"] > 0


@pytest.mark.parametrize("path", sorted((RESULTS / "threats").glob("*.json")), ids=lambda p: p.name)
def test_stored_threat_matrix_is_consistent_and_made_with_the_shipped_weights(path):
    record = json.loads(path.read_text())
    assert record["npz_sha256"] == _shipped_sha256(record["model"])
    assert path.stem == f"{record['model']}_xbar{record['config']['size']}"
    for r in record["rows"]:
        assert r["n"] == record["n_images"] and r["AL"] == pytest.approx(r["CA"] - r["AA"], abs=1e-9)
        if r["victim"] == "chips":  # mean and spread over the chips, each chip's own numbers consistent too
            for key in ("CA", "AA", "AL"):
                values = [p[key] for p in r["per_seed"]]
                assert r[key] == pytest.approx(sum(values) / len(values), abs=1e-9)
            assert all(p["AL"] == pytest.approx(p["CA"] - p["AA"], abs=1e-9) for p in r["per_seed"])
    assert {r["attacker"] for r in record["rows"]} == set(ATTACKERS)
