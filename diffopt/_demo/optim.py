"""Adam on lists of NumPy arrays: the one optimiser of the demo, the examples and the benchmarks.

The same update as ``torch.optim.Adam`` without weight decay, so that a NumPy
training loop (gradients from HIPS autograd or moved back from a framework)
follows the framework's own optimiser step for step.
"""

import numpy as np

__all__ = ["Adam"]


class Adam:
    """Adam on a list of NumPy arrays (parameters are kept in float32).

    Parameters
    ----------
    params : list of numpy.ndarray
        The initial parameters (their shapes size the moment estimates).
    lr : float
        Step size.
    b1, b2 : float
        Decay rates of the first and second moment estimates.
    eps : float
        Added to the square root of the second moment.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt._demo.optim import Adam
    >>> opt = Adam([np.zeros(2, np.float32)], lr=0.1)
    >>> opt.step([np.zeros(2, np.float32)], [np.array([1.0, -1.0])])[0]   # first step: -lr * sign(g)
    array([-0.1,  0.1], dtype=float32)
    """

    def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, params, grads):
        """The updated parameters, one Adam step from ``params`` along ``grads``."""
        self.t += 1
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            m_hat = self.m[i] / (1 - self.b1**self.t)
            v_hat = self.v[i] / (1 - self.b2**self.t)
            out.append((p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(np.float32))
        return out
