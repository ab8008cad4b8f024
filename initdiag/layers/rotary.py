"""Rotary position embeddings (RoPE; Su et al. 2021, "RoFormer"), in Hugging Face Llama's convention.

Each head's query and key vectors (head_dim d, even) are rotated by an angle that grows with the
position t = 0 ... steps-1, in d/2 planes that pair column i with column i + d/2 (rotate_half: the
two halves of head_dim, as transformers' LlamaRotaryEmbedding/apply_rotary_pos_emb; the original
RoFormer pairs neighbouring columns 2i, 2i+1 instead: the same rotation on permuted columns):

    inv_freq_i = base^(-2i/d)        i = 0 ... d/2 - 1
    angle[t] = t · [inv_freq, inv_freq]                        (steps, d)
    rope(x) = x ⊙ cos(angle) + rotate_half(x) ⊙ sin(angle)     rotate_half([x1, x2]) = [-x2, x1]

The rotation is orthogonal, so its backward is its transpose: rotate_halfᵀ = -rotate_half, and
    ropeᵀ(g) = g ⊙ cos(angle) - rotate_half(g ⊙ sin(angle)).
The tables are computed in float64 and cast to the activations' dtype (Hugging Face computes
inv_freq in float32: its float32 angles differ from these by rounding only).
"""

from __future__ import annotations

import numpy as np

DEFAULT_BASE = 10000.0


def tables(steps: int, head_dim: int, base: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each (steps, head_dim), of the angles t · inv_freq repeated over the two halves."""
    inv_freq = 1.0 / (float(base) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.outer(np.arange(steps, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(dtype, copy=False), np.sin(angles).astype(dtype, copy=False)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """[x1, x2] -> [-x2, x1] over the last axis (a new array)."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x (..., steps, d) rotated at positions 0 ... steps-1."""
    out = rotate_half(x)
    out *= sin
    out += x * cos
    return out


def rotate_back(g: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """The transpose of `rotate` applied to g (..., steps, d): the gradient with respect to rotate's input."""
    out = g * cos
    out -= rotate_half(g * sin)
    return out


KINDS = ()  # helpers of the attention kinds, no kind of their own
