"""Stochastic hardware: crossbars read with fresh device variation at every forward pass (read noise,
docs/protocol.md section 13.2).

A real analog chip's conductances fluctuate from one read to the next. Here every call of the network (one
forward pass over a batch, or one forward-plus-gradient pass) is one read: each device gets a fresh variation
draw G_read = max(G (1 + sigma z), G_floor) (`nxbar.crossbar.mapping.apply_variation`, z ~ N(0, 1) per device
and read) around its programmed conductance G (`conductance_pair`). The circuit is solved once, for the
programmed conductances without variation (the design's nominal chip, `map_model` with sigma 0); the read's
fluctuation dG = G_read - G reaches the output through ideal wires (first order in the parasitics: a device's
current change is not redistributed by the wire network), so a read costs no circuit solve:

    W_read = W'_nominal + (dG+ - dG-) w_max / (G_max - G_min)        (`effective_weights`, section 4.6)

The draws come from one stream seeded by `read_seed`, so a run is reproducible; a different order or number
of reads (another batch size) gives other draws. The noise-free chip (`map_model`) stays the default.
"""

from __future__ import annotations

import numpy as np

from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import map_model, matrix_to_weight, weight_to_matrix
from nxbar.crossbar.mapping import apply_variation, conductance_pair, effective_weights


class StochasticChip:
    """The design `config` of `software`, read with fresh variation (sigma = config.sigma) at every call.

    forward, predict and loss_and_input_grad each draw one read (`read`); `reads` counts them. dtype and std
    are the software model's, so the attacks use it unchanged; `nxbar.threats.EOTModel` over k references to
    one StochasticChip averages the gradient over k fresh reads. The reads come from the stream seeded by
    (read_seed, stream): `stream` tells several stochastic chips of one run apart (the victims of a threat
    matrix).
    """

    def __init__(self, software, config: CrossbarConfig, read_seed: int, *, stream: int = 0, cache=True,
                 cache_dir=None):
        for name, value in (("read_seed", read_seed), ("stream", stream)):
            if not (isinstance(value, (int, np.integer)) and value >= 0):
                raise ValueError(f"{name} {value!r} is not allowed; it must be an integer >= 0")
        self.software, self.config, self.read_seed, self.stream = software, config, int(read_seed), int(stream)
        self.nominal = map_model(software, config.replace(sigma=0.0, seed=0), cache=cache, cache_dir=cache_dir)
        self.report = self.nominal.report  # the nominal chip's mapping report
        self.dtype, self.std = software.dtype, software.std
        self.rng, self.reads = np.random.default_rng([self.read_seed, self.stream]), 0
        self._layers = []
        for i, name in enumerate(software.mvm_names):
            w = software.params[name]
            g_plus, g_minus, w_max = conductance_pair(weight_to_matrix(w), config.g_min_s, config.g_max_s,
                                                      config.bits_of(i))
            nominal = weight_to_matrix(self.nominal.params[name]).astype(np.float64)
            self._layers.append((name, w.shape, w.dtype, g_plus, g_minus, w_max, nominal))

    def read(self):
        """The network of one read: W_read per layer (module docstring), the software network otherwise."""
        c, weights = self.config, {}
        for name, shape, dtype, g_plus, g_minus, w_max, nominal in self._layers:
            d_plus = apply_variation(g_plus, c.sigma, self.rng, c.g_min_s) - g_plus
            d_minus = apply_variation(g_minus, c.sigma, self.rng, c.g_min_s) - g_minus
            weights[name] = matrix_to_weight(nominal + effective_weights(d_plus, d_minus, w_max, c.g_min_s,
                                                                         c.g_max_s), shape).astype(dtype)
        self.reads += 1
        return self.software.with_params(weights)

    def forward(self, x):
        return self.read().forward(x)

    def predict(self, x):
        return np.argmax(self.forward(x), axis=1)

    def loss_and_input_grad(self, x, y):
        return self.read().loss_and_input_grad(x, y)

    def as_dict(self) -> dict:
        """What a result records of the stochastic hardware."""
        return {"hardware": "stochastic: fresh variation at every read", "sigma": self.config.sigma,
                "read_seed": self.read_seed, "stream": self.stream}

    def describe(self) -> str:
        return (f"stochastic {self.config.size}x{self.config.size} crossbars: fresh variation sigma "
                f"{self.config.sigma:g} at every read, read seed {self.read_seed} (docs/protocol.md section 13.2)")
