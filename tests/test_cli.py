"""The `nxbar` command line: parsing, printed tables, the JSON record and every error path (click's CliRunner)."""

import json
import sys

import pytest
from click.testing import CliRunner

from cli import main
from nxbar.weights import save_weights

IDEAL = ["--r-source", "0", "--r-sink", "0", "--r-wire-row", "0", "--r-wire-col", "0", "--sigma", "0"]


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("NXBAR_CACHE_DIR", str(tmp_path / "cache"))

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    return invoke


def test_version_and_info(run):
    assert run("--version").output.strip().startswith("nxbar, version")
    out = run("info")
    assert out.exit_code == 0, out.output
    for fragment in ("vgg8", "vgg16", "embedded", "first 1,000 CIFAR-10 test images", "Cache of mapped models and shared PGD inputs"):
        assert fragment in out.output


def test_accuracy(run, weights):
    out = run("accuracy", "--weights", weights, "--n", 20, "--batch-size", 8)
    assert out.exit_code == 0, out.output
    assert "/20 correct, clean accuracy" in out.stdout
    assert "classifying: 3/3 (100%)" in out.stderr  # stderr is not a terminal here: timed lines, not a bar


def test_progress_in_a_log_is_timed_lines(capsys):
    from cli import _LogProgress

    with _LogProgress(None, "attack", 4, every_s=0.0) as bar:
        for _ in range(4):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(")")[0] for line in lines] == [f"attack: {i}/4 ({25 * i}%" for i in (1, 2, 3, 4)]
    assert all("ETA" in line for line in lines[:3]) and "ETA" not in lines[3]
    with _LogProgress(range(5), "slow", every_s=3600.0) as bar:
        assert list(bar) == list(range(5))
    assert capsys.readouterr().err.splitlines() == ["slow: 5/5 (100%) 0 s"]


def test_evaluate_software_only_with_json(run, weights, tmp_path):
    path = tmp_path / "r.json"
    out = run("evaluate", "--weights", weights, "--n", 8, "--modes", "sw", "--attack", "pgd", "--steps", 2,
              "--eps", "2/255,8/255", "--json", path)
    assert out.exit_code == 0, out.output
    lines = [l.split() for l in out.output.splitlines() if l.startswith("SW ")]
    assert [l[1] for l in lines] == ["2/255", "8/255"]
    assert "gradient-masking sanity checks: not run (--sanity-images N runs them)" in out.output
    for _, _, ca, aa, al in lines:
        assert float(al) == pytest.approx(float(ca) - float(aa), abs=0.011)
    record = json.loads(path.read_text())
    assert set(record) >= {"command", "model", "data", "crossbar", "attacks", "results", "timings", "versions"}
    assert record["model"]["npz_sha256"] and record["data"]["n_images"] == 8
    assert record["attacks"][0] == {"attack": "pgd", "eps": 2 / 255, "eps_space": "pixel", "steps": 2,
                                    "alpha": 2 / 255, "random_start": True, "seed": 0}
    assert {"numpy", "nxbar", "numba", "scipy"} <= set(record["versions"])
    assert [r["mode"] for r in record["results"]] == ["SW", "SW"]
    out = run("evaluate", "--weights", weights, "--n", 8, "--modes", "sw", "--steps", 2, "--early-stop",
              "--json", path)
    assert out.exit_code == 0, out.output
    assert "2 steps, alpha 2/255, random start seed 0, early stop;" in out.output
    assert json.loads(path.read_text())["attacks"][0]["early_stop"] is True


def test_evaluate_runs_the_sanity_checks_on_request(run, weights, tmp_path):
    path = tmp_path / "r.json"
    out = run("evaluate", "--weights", weights, "--n", 4, "--modes", "sw", "--steps", 2, "--sanity-images", 2,
              "--queries", 5, "--json", path)
    assert out.exit_code == 0, out.output
    assert "gradient-masking sanity checks, PGD eps 8/255, first 2 images:" in out.output
    lines = [l for l in out.output.splitlines() if l.startswith("sanity [software] ")]
    assert [l.split()[2] for l in lines] == ["eps_sweep:", "steps_restarts:", "gradient_free:", "loss_increases:"]
    record = json.loads(path.read_text())
    assert list(record["sanity"]) == ["software"] and len(record["sanity"]["software"]) == 4
    assert record["sanity"]["software"][0]["values"]["accuracy"][-1] == 0.0  # eps 1: every image falls
    assert record["sanity"]["software"][2]["values"]["queries"] == 5
    assert record["timings"]["sanity_s"] > 0


def test_evaluate_ideal_crossbars_equal_software(run, weights):
    out = run("evaluate", "--weights", weights, "--n", 6, "--attack", "fgsm", "--eps", "0.03", "--xbar", 64,
              "--no-cache", *IDEAL)
    assert out.exit_code == 0, out.output
    rows = {l.split()[0]: l.split()[1:] for l in out.output.splitlines() if l[:3] in ("SW ", "SH ", "HH ")}
    assert rows["SW"] == rows["SH"] == rows["HH"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "vgg11"], "Invalid value for '--model'"),
        (["--eps", "-0.1"], "eps -0.1 is out of range"),
        (["--eps", "2"], "eps 2.0 is out of range"),
        (["--eps", "abc"], "eps 'abc' is not a number"),
        (["--steps", "0"], "steps 0 is not allowed"),
        (["--xbar", "0"], "size must be an integer >= 1, got 0"),
        (["--modes", "sw,xx"], "--modes 'sw,xx'"),
        (["--r-wire-row", "-1"], "r_wire_row_ohm must be a finite number >= 0, got -1.0"),
        (["--n", "5000"], "--n 5000 is out of range"),
        (["--data", "/no/such/path"], "/no/such/path"),
        (["--attack", "fgsm", "--sanity-images", "4"], "--sanity-images 4 needs --attack pgd"),
        (["--attack", "fgsm", "--early-stop"], "early stopping is defined for pgd only, not for fgsm"),
    ],
)
def test_evaluate_errors_are_one_line_exit_2(run, weights, args, message):
    out = run("evaluate", "--weights", weights, "--modes", "sw", *args)
    assert out.exit_code == 2, out.output
    assert message in out.output
    assert "Traceback" not in out.output and out.exception is None or isinstance(out.exception, SystemExit)


def test_missing_shipped_weights_is_explained(run, monkeypatch, tmp_path):
    monkeypatch.setattr("nxbar.weights.shipped_weights_dir", lambda: tmp_path)
    out = run("accuracy", "--model", "vgg16")
    assert out.exit_code == 2 and "no shipped weights for --model vgg16" in out.output


def test_nf_and_spice(run, tmp_path):
    out = run("nf", "--xbar", "4,8", "--tiles", 4)
    assert out.exit_code == 0, out.output
    values = [float(l.split()[1]) for l in out.output.splitlines()[1:]]
    assert len(values) == 2 and 0 < values[0] < values[1] < 1
    path = tmp_path / "tile.cir"
    out = run("spice", "--xbar", 3, "--seed", 1, "-o", path)
    assert out.exit_code == 0, out.output
    assert path.read_text().rstrip().lower().endswith(".end")
    assert run("nf", "--xbar", "4,x").exit_code == 2


def test_map_report(run, weights):
    out = run("map", "--weights", weights, "--xbar", 64, "--n", 10, "--no-cache", *IDEAL)
    assert out.exit_code == 0, out.output
    assert "conv1" in out.output and "fc2" in out.output
    acc = [l for l in out.output.splitlines() if l.startswith("clean accuracy")]
    assert len(acc) == 2 and acc[0].split()[3] == acc[1].split()[3]  # ideal crossbars: same count


def test_cache_clear(run):
    out = run("cache", "clear")
    assert out.exit_code == 0 and "removed" in out.output


def test_grade_command(run):
    from pathlib import Path

    skeleton = Path(__file__).resolve().parents[1] / "docs" / "assignments" / "skeletons" / "assignment1_layers.py"
    out = run("grade", 1, skeleton)
    assert out.exit_code == 1, out.output  # a submission that loses marks
    assert "score 0/" in out.output and "NotImplementedError" in out.output
    bad = run("grade", 4, skeleton)
    assert bad.exit_code == 2 and "4" in bad.output


def test_evaluate_with_input_discretization_and_layer_bits(run, weights, tmp_path):
    path = tmp_path / "d.json"
    out = run("evaluate", "--weights", weights, "--n", 4, "--attack", "fgsm", "--eps", "0.03", "--xbar", 64,
              "--input-bits", 4, "--layer-bits", "4,4,2,2,none,none,8,8", "--no-cache", *IDEAL, "--json", path)
    assert out.exit_code == 0, out.output
    assert "straight-through" in out.output
    record = json.loads(path.read_text())
    assert record["defence"] == {"defence": "input_discretization", "bits": 4, "gradient": "straight-through"}
    assert record["crossbar"]["layer_bits"] == [4, 4, 2, 2, None, None, 8, 8]
    assert [r["bits"] for r in record["mapping_report"]] == [4, 4, 2, 2, None, None, 8, 8]
    bad = run("evaluate", "--weights", weights, "--modes", "sw", "--layer-bits", "4,x")
    assert bad.exit_code == 2 and "--layer-bits '4,x'" in bad.output


def test_hybrid_precision_weights_map_at_their_own_bits(run, weights, tmp_path):
    from nxbar.crossbar.mapping import quantize_weights
    from nxbar.models.arch import mvm_names
    from nxbar.weights import load_weights

    params, meta = load_weights(weights)
    bits = [2, 4, 8, None, 2, 4, 8, 2]
    per_layer = dict(zip(mvm_names("vgg8"), bits))
    stem = tmp_path / "vgg8q_cifar10"
    save_weights(stem, {k: quantize_weights(v, per_layer.get(k)) for k, v in params.items()},
                 {k: v for k, v in meta.items() if k not in ("format", "format_version", "arrays", "npz_sha256",
                                                             "nxbar_version")} | {"model": "vgg8q", "layer_bits": bits})
    path = tmp_path / "q.json"
    out = run("evaluate", "--weights", stem, "--n", 2, "--attack", "fgsm", "--modes", "hh", "--xbar", 64,
              "--no-cache", *IDEAL, "--json", path)
    assert out.exit_code == 0, out.output
    assert "\nvgg8q (cifar10) on " in out.output
    record = json.loads(path.read_text())
    assert record["model"]["name"] == "vgg8q" and record["crossbar"]["layer_bits"] == bits
    assert [r["bits"] for r in record["mapping_report"]] == bits
    out = run("evaluate", "--weights", stem, "--n", 2, "--attack", "fgsm", "--modes", "hh", "--xbar", 64,
              "--no-cache", *IDEAL, "--bits", 3, "--json", path)  # an explicit precision wins
    assert out.exit_code == 0, out.output
    assert [r["bits"] for r in json.loads(path.read_text())["mapping_report"]] == [3] * 8


def test_ans_command(run, weights, tmp_path):
    path = tmp_path / "ans.json"
    out = run("ans", "--weights", weights, "--n", 4, "--eps", "0.05", "--json", path)
    assert out.exit_code == 0, out.output
    record = json.loads(path.read_text())
    assert list(record["ans"]) == [f"conv{k}" for k in range(1, 7)] + ["fc1", "fc2"]
    assert all(v > 0 for v in record["ans"].values()) and sorted(set(record["bits"].values())) == [2, 4]
    assert f"--layer-bits {','.join(str(b) for b in record['bits'].values())}" in out.output


def test_threats_command_errors(run, weights):
    out = run("threats", "--weights", weights, "--victims", "0,a")
    assert out.exit_code == 2 and "--victims '0,a'" in out.output
    out = run("threats", "--weights", weights, "--steps", 0)
    assert out.exit_code == 2 and "steps 0 is not allowed" in out.output


THREATS = ["threats", "--n", 4, "--xbar", 64, *IDEAL, "--steps", 2, "--victims", "0", "--eot", "1",
           "--transfer-seed", 2, "--sanity-images", 4, "--queries", 5]


def test_threats_command_runs_and_resumes_a_stopped_run(run, weights, tmp_path, monkeypatch):
    import nxbar.threats

    real, calls = nxbar.threats.sanity_checks, []

    def stop_at_the_chip(*args, **kwargs):
        calls.append(kwargs["label"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the session ends during the chip's sanity checks
        return real(*args, **kwargs)

    def attack_again(*args, **kwargs):
        raise AssertionError("the resumed run attacked again with a finished attacker")

    path, partial = tmp_path / "t.json", tmp_path / "t.json.partial"
    with monkeypatch.context() as m:
        m.setattr(nxbar.threats, "sanity_checks", stop_at_the_chip)
        assert run(*THREATS, "--weights", weights, "--json", path).exit_code != 0
    stopped = json.loads(partial.read_text())
    part = stopped["part"]
    assert not path.exists() and len(part["rows"]) == 10 and list(part["checks"]) == ["software"]
    out = run(*THREATS, "--weights", weights, "--steps", 3, "--json", path)  # not the stopped run's options
    assert out.exit_code == 2 and "t.json.partial holds a stopped run with other attack;" in out.output
    with monkeypatch.context() as m:
        m.setattr(nxbar.threats, "make_adversarial", attack_again)
        m.setattr(sys, "argv", ["/venv/bin/nxbar", *map(str, THREATS)])  # the command line as a shell gives it
        out = run(*THREATS, "--weights", weights, "--json", path)
    assert out.exit_code == 0, out.output
    assert "resuming from" in out.stderr and "5 attacker(s) and 1 sanity target(s) done" in out.stderr
    record = json.loads(path.read_text())
    assert record["rows"] == part["rows"] and record["checks"]["software"] == part["checks"]["software"]
    assert list(record["checks"]) == ["software", "chip 0"] and not partial.exists()
    assert {"config", "attack", "rows", "checks", "npz_sha256", "versions"} <= set(record)
    assert record["model"] == "vgg8" and record["sanity_images"] == 4 and record["n_images"] == 4
    assert (record["victims"], record["eot"], record["transfer_seed"], record["queries"]) == ([0], [1], 2, 5)
    assert record["command"] == "nxbar " + " ".join(map(str, THREATS))
    assert record["wall_time_s"] > stopped["wall_time_s"] > 0  # the stopped run's time counts too
    # ideal crossbars without variation: every chip is the software network, so every attacker hits it alike
    assert len({(r["CA"], r["AA"]) for r in record["rows"]}) == 1


def _not_before_the_check(*args, **kwargs):
    raise AssertionError("computed before the output path was checked")


@pytest.mark.parametrize(
    "args, computes, message",
    [
        (["evaluate", "--weights", "{weights}", "--modes", "sw", "--n", 2, "--json", "{missing}/r.json"],
         "nxbar.evaluate_run.evaluate_modes", "--json {missing}/r.json: the folder {missing} does not exist"),
        (["ans", "--weights", "{weights}", "--n", 2, "--json", "{missing}/a.json"],
         "nxbar.quanos.attack_ans", "--json {missing}/a.json: the folder {missing} does not exist"),
        (["threats", "--weights", "{weights}", "--n", 2, "--json", "{file}/t.json"],
         "nxbar.threats.threat_report", "--json {file}/t.json: {file} is not a writable folder"),
        (["spice", "-o", "{missing}/t.cir"],
         "nxbar.crossbar.spice.netlist", "-o {missing}/t.cir: the folder {missing} does not exist"),
        (["reproduce", "table2", "--quick", "--out", "{file}/results"],
         "nxbar.study.runner.run", "--out {file}/results: {file} is not a writable folder"),
    ],
)
def test_output_paths_are_checked_before_computing(run, weights, tmp_path, monkeypatch, args, computes, message):
    places = {"weights": weights, "missing": tmp_path / "missing", "file": tmp_path / "a_file"}
    places["file"].write_text("not a folder")
    monkeypatch.setattr(computes, _not_before_the_check)
    out = run(*(a.format(**places) if isinstance(a, str) else a for a in args))
    assert out.exit_code == 2, out.output
    assert message.format(**places) in out.output and "allowed: a writable" in out.output


def test_an_unwritable_cache_is_refused_before_mapping(run, weights, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NXBAR_CACHE_DIR", str(blocker / "cache"))
    with monkeypatch.context() as m:
        m.setattr("nxbar.crossbar.mapped.map_model", _not_before_the_check)
        out = run("map", "--weights", weights, "--n", 2, "--xbar", 64)
    assert out.exit_code == 2, out.output
    assert f"cache folder (NXBAR_CACHE_DIR) {blocker / 'cache'}: {blocker} is not a writable folder" in out.output
    assert run("map", "--weights", weights, "--n", 2, "--xbar", 64, "--no-cache", *IDEAL).exit_code == 0


def test_a_file_error_after_the_computation_is_exit_1_without_usage(run, weights, tmp_path, monkeypatch):
    import shutil

    import nxbar.evaluate_run

    folder = tmp_path / "results"
    folder.mkdir()
    real = nxbar.evaluate_run.evaluate_modes

    def folder_removed_meanwhile(*args, **kwargs):
        shutil.rmtree(folder)
        return real(*args, **kwargs)

    monkeypatch.setattr(nxbar.evaluate_run, "evaluate_modes", folder_removed_meanwhile)
    out = run("evaluate", "--weights", weights, "--modes", "sw", "--n", 2, "--steps", 1, "--json", folder / "r.json")
    assert out.exit_code == 1, out.output
    assert f"Error: [Errno 2] No such file or directory: '{folder / '.r.json.'}" in out.stderr  # its temporary file
    assert "Usage:" not in out.output
    assert [line.split()[0] for line in out.stdout.splitlines() if line.startswith("SW ")] == ["SW"]


def test_reproduce_writes_below_the_current_folder_by_default(run, tmp_path, monkeypatch):
    from pathlib import Path

    from nxbar.study import runner as study_runner

    folders = []

    def stored(name, out, **kwargs):
        folders.append(out)
        return Path(out) / f"{name}.csv"

    monkeypatch.setattr(study_runner, "run", stored)
    monkeypatch.chdir(tmp_path)
    out = run("reproduce", "table2")
    assert out.exit_code == 0, out.output
    assert folders == [tmp_path / "reference_results"]
    assert out.stdout == f"wrote {tmp_path}/reference_results/table2.csv and {tmp_path}/reference_results/table2.json\n"
    assert f"table2: computing the cells not yet stored in {tmp_path}/reference_results" in out.stderr
    out = run("reproduce", "table2", "--out", "mine")  # a relative folder is reported in full
    assert out.stdout.startswith(f"wrote {tmp_path}/mine/table2.csv and ")
    assert "relative to the current folder" in run("reproduce", "--help").output


def test_absurd_crossbar_sizes_are_refused_before_any_work(run, weights):
    out = run("map", "--weights", weights, "--n", 2, "--xbar", 100000)
    assert out.exit_code == 2, out.output
    assert "size 100000 is too large: the circuit solve of one 100000x100000 tile needs" in out.output
    assert "allowed sizes: 1..4729" in out.output
    out = run("nf", "--xbar", "16,100000", "--tiles", 1)
    assert out.exit_code == 2 and "size 100000 is too large" in out.output and out.stdout == ""


def test_non_finite_logits_end_with_an_error_not_an_accuracy(run, weights, tmp_path):
    import numpy as np

    from nxbar.weights import load_weights

    params, meta = load_weights(weights)
    stem = tmp_path / "vgg8_huge"
    save_weights(stem, {k: v * np.float32(1e38) if k.endswith(".weight") else v for k, v in params.items()},
                 {k: v for k, v in meta.items() if k not in ("format", "format_version", "arrays", "npz_sha256",
                                                             "nxbar_version")})
    with np.errstate(all="ignore"):
        out = run("accuracy", "--weights", stem, "--n", 4)
    assert out.exit_code == 2, out.output
    assert "4 of 4 images gave non-finite logits (NaN or inf)" in out.output and "clean accuracy" not in out.output


@pytest.mark.parametrize(
    "args, stops, hint",
    [
        (["accuracy", "--n", 2], "nxbar.models.vgg.VGG.predict", "nothing was kept; run the command again"),
        (["threats", "--n", 2, "--json", "{tmp}/t.json"], "nxbar.threats.threat_report",
         "the attackers finished so far are kept in {tmp}/t.json.partial; run the same command again (same options) "
         "to resume from them"),
    ],
)
def test_ctrl_c_exits_130_with_what_to_do(run, weights, tmp_path, monkeypatch, args, stops, hint):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stops, ctrl_c)
    out = run(*(str(a).format(tmp=tmp_path) for a in args), "--weights", weights)
    assert out.exit_code == 130, out.output
    assert out.stderr.endswith(f"\ninterrupted: {hint.format(tmp=tmp_path)}\n") and "Aborted!" not in out.output


def test_ctrl_c_on_a_real_process_exits_130_and_says_how_to_resume(tmp_path):
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    out = tmp_path / "results"
    command = [sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py"), "reproduce", "table2", "--quick",
               "--n", "2", "--out", str(out)]
    env = {**os.environ, "NXBAR_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        started, deadline = "", time.monotonic() + 60
        while not started.startswith("table2: computing") and time.monotonic() < deadline:
            started = proc.stderr.readline() or "(the process ended)"
            if started == "(the process ended)":
                break
        assert started == f"table2: computing the cells not yet stored in {out}\n"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.endswith(f"\ninterrupted: the finished cells are stored in {out}; run the same command again to "
                           f"resume from them\n")
    assert "Aborted!" not in stderr and "Traceback" not in stderr and stdout == ""
