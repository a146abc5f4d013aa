"""Install nxbar: the package, the top-level click CLI (`nxbar`), the shipped weights and the embedded data."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = {}
exec((HERE / "nxbar" / "__init__.py").read_text().split("\n\n\n")[0].split('"""', 2)[2], VERSION)

setup(
    name="nxbar",
    version=VERSION["__version__"],
    description="VGG networks on simulated memristive crossbars under FGSM/PGD attacks, in NumPy",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nxbar", "nxbar.*"]) + ["nxbar._weights"],
    # The top-level weights/ folder is installed as the package data folder nxbar/_weights,
    # so that `pip install .` (not only editable installs) finds the shipped networks.
    package_dir={"nxbar._weights": "weights"},
    package_data={"nxbar": ["_data/*.npz"], "nxbar._weights": ["*.npz", "*.json"]},
    py_modules=["cli"],
    install_requires=["numpy>=1.24", "scipy>=1.10", "numba>=0.59", "pillow>=9", "click>=8.1"],
    extras_require={
        "test": ["pytest>=7"],
        "train": ["torch==2.13.0"],
        "plot": ["matplotlib>=3.7"],
        # `--scheduler`/`--workers`: the study's cells on a Dask cluster (nxbar.cluster); nothing else imports it
        "cluster": ["dask[distributed]>=2024.1"],
    },
    entry_points={"console_scripts": ["nxbar=cli:main"]},
)
