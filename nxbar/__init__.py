"""nxbar: VGG networks on simulated memristive crossbars under adversarial attack.

A NumPy reference implementation of Bhattacharjee & Panda, "Rethinking
Non-idealities in Memristive Crossbars for Adversarial Robustness in Neural
Networks" (arXiv 2008.11298). See docs/protocol.md and docs/physics.md.
"""

__version__ = "0.2.0"


def versions() -> dict:
    """Versions of nxbar, its numerical dependencies, Python and the platform, and the BLAS kernel in use (float32
    results are bit for bit the same only on the same kernel, see nxbar.reproducibility), for result records."""
    import platform

    import numba
    import numpy
    import scipy

    from nxbar.reproducibility import blas

    return {"nxbar": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "numba": numba.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "blas_kernel": blas()["kernel"]}
