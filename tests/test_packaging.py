"""`pip install .` (a wheel, not an editable install) carries the embedded data set and the shipped weights."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_holds_embedded_data_weights_and_cli(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO / "nxbar", src / "nxbar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "weights", src / "weights")
    for name in ("setup.py", "README.md", "cli.py"):
        shutil.copy(REPO / name, src / name)
    (src / "weights" / "probe_cifar10.json").write_text("{}")
    (src / "weights" / "probe_cifar10.npz").write_bytes(b"probe")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("nxbar-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"cli.py", "nxbar/_data/cifar10_test_first1000.npz", "nxbar/_weights/probe_cifar10.json",
            "nxbar/_weights/probe_cifar10.npz"} <= names
    assert not any(n.startswith("weights/") for n in names)
