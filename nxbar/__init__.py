"""nxbar: VGG networks on simulated memristive crossbars under adversarial attack.

A NumPy reference implementation of Bhattacharjee & Panda, "Rethinking
Non-idealities in Memristive Crossbars for Adversarial Robustness in Neural
Networks" (arXiv 2008.11298). See SPEC sections 1-7 and docs/physics.md.
"""

__version__ = "0.1.0"
