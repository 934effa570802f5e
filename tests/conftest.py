"""Strict numerics for every test: rank promotion raises, so a missing batch sum fails loudly."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fresh, fixed PRNG key per test: random inputs are drawn from keys, never zeros or ones."""
    return jax.random.key(0)
