"""nxbar.files: whole-or-nothing writes, and cutting a CSV back to its last complete row."""

import json
import os

import pytest

from nxbar.files import Partial, atomic_write, atomic_write_text, drop_torn_row


class DiskFull(OSError):
    pass


def _full_disk(fd):
    raise DiskFull(28, "No space left on device")


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "record.json"
    atomic_write_text(path, "old é")
    plain = tmp_path / "plain"
    plain.write_text("")
    assert path.read_bytes() == "old é".encode() and path.stat().st_mode == plain.stat().st_mode
    atomic_write(path, lambda f: f.write(b"\x00new"))
    assert path.read_bytes() == b"\x00new" and sorted(p.name for p in tmp_path.iterdir()) == ["plain", "record.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    atomic_write_text(path, "old")

    def half_then_fail(f):
        f.write(b"ne")
        raise KeyboardInterrupt  # the run is stopped in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    monkeypatch.setattr(os, "fsync", _full_disk)  # the data never reaches the disk
    with pytest.raises(DiskFull):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


HEADER = "model,n,CA\r\n"
ROW = "vgg8,8,12.5\r\n"


@pytest.mark.parametrize("text, dropped", [
    ("", None),
    (HEADER, None),
    (HEADER + ROW + ROW, None),
    (HEADER + ROW + "vgg8,8,1", "vgg8,8,1"),  # cut before its line end: the value may be cut too
    (HEADER + ROW + "vgg8,8,12.5\r", "vgg8,8,12.5\r"),
    (HEADER + ROW + "vgg8,8" + ROW, "vgg8,8" + ROW),  # a row appended to a torn one
    (HEADER + "vgg8\r\n", "vgg8\r\n"),
    ("model,n", "model,n"),  # a torn header
])
def test_drop_torn_row(tmp_path, text, dropped):
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode())
    assert drop_torn_row(path) == dropped
    assert path.read_bytes().decode() == (text[:len(text) - len(dropped)] if dropped else text)


def test_threats_partial_file_is_replaced_whole(tmp_path, monkeypatch):
    """`nxbar threats --json`: the partial file of a stopped run is written whole or not at all."""
    from click.testing import CliRunner

    import nxbar.threats
    from cli import main
    from nxbar.models.vgg import random_params
    from nxbar.weights import save_weights

    meta = {"arch": "vgg8", "dataset": "cifar10", "num_classes": 10, "input_size": 32, "bn_eps": 1e-5,
            "normalization": {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
            "class_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    weights = tmp_path / "vgg8_random"
    save_weights(weights, random_params("vgg8", num_classes=10, input_size=32), meta)
    parts = iter([{"rows": [{"attacker": "white-box"}], "checks": {}},
                  {"rows": [{"attacker": "white-box"}, {"attacker": "eot"}], "checks": {}}])

    def one_attacker_then_stop(*args, on_part, **kwargs):
        on_part(next(parts))
        raise KeyboardInterrupt  # the session ends

    monkeypatch.setattr(nxbar.threats, "threat_report", one_attacker_then_stop)
    path = tmp_path / "t.json"
    args = ["threats", "--weights", str(weights), "--n", "2", "--json", str(path)]
    assert CliRunner().invoke(main, args).exit_code != 0
    partial = tmp_path / "t.json.partial"
    stopped = json.loads(partial.read_text())
    assert stopped["part"]["rows"] == [{"attacker": "white-box"}] and stopped["wall_time_s"] > 0
    monkeypatch.setattr(os, "fsync", _full_disk)
    out = CliRunner().invoke(main, args)
    assert out.exit_code != 0 and "No space left on device" in out.output
    assert json.loads(partial.read_text()) == stopped  # the next attacker's part never reached the disk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json.partial", "vgg8_random.json", "vgg8_random.npz"]


def test_partial_keeps_parts_resumes_them_and_refuses_another_run(tmp_path):
    path = tmp_path / "r.json.partial"
    first = Partial(path, {"eps": 0.1})
    assert first.load() is None
    first.keep({"rows": [1]})
    again = Partial(path, {"eps": 0.1})
    assert again.load() == {"rows": [1]} and again.elapsed_s() >= again.earlier_s > 0
    with pytest.raises(ValueError, match=r"r.json.partial holds a stopped run with other eps; delete it"):
        Partial(path, {"eps": 0.2}).load()


def test_an_evaluate_record_is_replaced_whole(tmp_path, monkeypatch):
    """`nxbar evaluate --json`: a write cut short (a full disk) leaves the earlier record as it was."""
    from click.testing import CliRunner

    from cli import main

    path = tmp_path / "r.json"
    path.write_text('{"earlier": "record"}')
    monkeypatch.setattr(os, "fsync", _full_disk)
    args = ["evaluate", "--n", "2", "--modes", "sw", "--attack", "fgsm", "--json", str(path)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 1 and "No space left on device" in out.output
    assert path.read_text() == '{"earlier": "record"}' and [p.name for p in tmp_path.iterdir()] == ["r.json"]
