"""The HLO summary of ``benchmarks/peer_evidence.py``: dot shapes, FLOPs and while-loop placement."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import peer_evidence
    finally:
        sys.path.remove(str(BENCHMARKS))
    return peer_evidence


def test_a_dot_in_a_scan_is_found_with_its_shapes_flops_and_trip_count():
    pe = _module()

    def f(w):
        def body(c, _):
            return jnp.tanh(c[:, :3] @ w), None

        c, _ = lax.scan(body, jnp.ones((4, 5)), None, length=2)
        return c.sum()

    text = jax.jit(f).lower(jnp.ones((3, 5))).compile().as_text()
    dots = [m for m in pe.hlo_summary(text)["matmuls"] if m["op"] == "dot"]
    assert len(dots) == 1
    (d,) = dots
    assert (d["lhs"], d["rhs"], d["out"]) == ([4, 3], [3, 5], [4, 5])
    assert d["flops"] == 2 * 4 * 3 * 5
    assert d["scope"].startswith("while") and d["trips"] == 2 and d["total_flops"] == 2 * d["flops"]


def test_the_flops_of_a_convolution_are_two_macs_per_output_and_tap():
    pe = _module()
    conv = lambda a, b: lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
    text = jax.jit(conv).lower(jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))).compile().as_text()
    convs = [m for m in pe.hlo_summary(text)["matmuls"] if m["op"] == "convolution"]
    assert len(convs) == 1
    assert convs[0]["out"] == [2, 6, 6, 4] and convs[0]["scope"] == "entry"
    assert convs[0]["flops"] == 2 * (2 * 6 * 6 * 4) * (3 * 3 * 3)
