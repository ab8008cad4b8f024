"""Central finite differences, shared by every backward-pass test."""

import numpy as np


def numeric_gradient(loss, array, h=1e-6):
    """dloss()/darray by central differences, perturbing `array` in place element by element.

    Truncation error h²·|L'''|/6 and rounding error ε·|L|/h balance near h = 1e-6 in float64: about
    1e-13 and 2e-9 absolute for losses of order 10, so analytic gradients of order 0.01-1 agree to a
    relative 1e-6, with an absolute floor of ~1e-8 for the rounding.
    """
    out = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + h
        up = loss()
        array[index] = saved - h
        down = loss()
        array[index] = saved
        out[index] = (up - down) / (2 * h)
    return out


FD_TOL = {"rtol": 1e-6, "atol": 1e-8}  # see numeric_gradient: relative 1e-6 above a ~1e-8 rounding floor


def assert_layer_gradients(layer, x, rng, names=None) -> dict:
    """Check a layer's backward against central differences of loss = sum(y · R), R random, for the
    input and each parameter in `names` (default: all of layer.params). Returns the analytic grads."""
    y, cache = layer.forward(x)
    target = rng.standard_normal(y.shape)
    dx, grads = layer.backward(target, cache)

    def loss():
        return float(np.sum(layer.forward(x)[0] * target))

    np.testing.assert_allclose(dx, numeric_gradient(loss, x), **FD_TOL, err_msg="input")
    for name in names if names is not None else layer.params:
        np.testing.assert_allclose(grads[name], numeric_gradient(loss, layer.params[name]), **FD_TOL, err_msg=name)
    return grads
