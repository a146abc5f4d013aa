"""nxbar: VGG networks on simulated memristive crossbars under adversarial attack.

A NumPy reference implementation of Bhattacharjee & Panda, "Rethinking
Non-idealities in Memristive Crossbars for Adversarial Robustness in Neural
Networks" (arXiv 2008.11298). See SPEC sections 1-7 and docs/physics.md.
"""

__version__ = "0.1.0"


def versions() -> dict:
    """Versions of nxbar, its numerical dependencies, Python and the platform, for result records."""
    import platform

    import numba
    import numpy
    import scipy

    return {"nxbar": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "numba": numba.__version__, "python": platform.python_version(), "platform": platform.platform()}
