"""torch_ref_conv.py - RECONSTRUCTION (by the extra-labels helper) of the conv helpers trainlib.py imports.
See torch_ref.py's docstring."""
from __future__ import annotations

import torch_ref as R


def conv_fans(in_per_group, filters, groups, kh, kw):
    """PyTorch's fans on the (out, in/groups, kh, kw) weight."""
    area = kh * kw
    return in_per_group * area, filters * area


def init_conv_weight_(w, kind, params, fan_in, fan_out, groups=1):
    R.draw_(w, kind, params, fan_in, fan_out)
