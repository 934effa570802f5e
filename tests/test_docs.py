"""The documentation: it builds offline with warnings as errors, typesets math with the MathJax it ships,
and every public activation, loss and initializer documents its formulas where ``help()`` shows them."""

import pydoc
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import fnnet as fn
from fnnet import activations, initializers, losses

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [
    "index",
    "conventions",
    "activations",
    "losses",
    "layers",
    "initializers",
    "gradients",
    "forward_mode",
    "curvature",
    "training",
    "data",
    "errors",
    "experiments",
    "results",
    "benchmarks",
    "tutorials/check_your_layer",
]


@pytest.mark.slow
def test_the_site_builds_offline_with_warnings_as_errors(tmp_path):
    """One build (about 30 s), checked four ways; one test, so that ``pytest -n 2`` builds it once."""
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"sphinx-build failed:\n{run.stdout}\n{run.stderr}"
    _every_page_is_built_and_listed(tmp_path)
    _math_is_typeset_by_the_local_mathjax_and_nothing_is_loaded_from_a_network(tmp_path)
    _the_api_reference_renders_the_docstrings(tmp_path)
    _every_public_name_of_fnnet_is_in_the_api_reference(tmp_path)


def _every_page_is_built_and_listed(site):
    for page in PAGES:
        assert (site / f"{page}.html").is_file(), page
    index = (site / "index.html").read_text()
    for page in PAGES[1:]:
        assert f'href="{page}.html"' in index, f"{page} is not in the table of contents"


def _math_is_typeset_by_the_local_mathjax_and_nothing_is_loaded_from_a_network(site):
    page = (site / "activations.html").read_text()
    assert len(re.findall(r'<span class="math notranslate nohighlight">\\\(', page)) > 10  # inline math
    assert '<div class="math notranslate nohighlight">' in (site / "losses.html").read_text()  # display math
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page)
    assert scripts and all(s.startswith("_static/mathjax/tex-chtml.js") for s in scripts), scripts
    mathjax = site / "_static" / "mathjax"
    assert (mathjax / "tex-chtml.js").read_bytes() == (DOCS / "_static" / "mathjax" / "tex-chtml.js").read_bytes()
    assert (mathjax / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").is_file()
    for html in site.glob("*.html"):
        loaded = re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(https?:[^"]*)"', html.read_text())
        assert not loaded, f"{html.name} loads {loaded}"


def _the_api_reference_renders_the_docstrings(site):
    layers = (site / "layers.html").read_text()
    assert 'id="fnnet.Dense"' in layers and "dW = Xᵀ dY" in layers
    acts = (site / "activations.html").read_text()
    assert 'id="fnnet.Relu"' in acts and "relu'(0) = 0" in acts.replace("&#39;", "'")
    assert 'class="rubric">Derivative' in acts  # the formula sections are headed
    assert "Undefined substitution" not in layers + acts


CONSTRUCTORS = sorted({f.__name__: f for f in activations.LAYERS.values()}.items())
INITIALIZERS = sorted(
    {f.__name__: f for f in [*initializers.INITIALIZERS.values(), initializers.variance_scaling]}.items()
    | {("constant", initializers.constant), ("ones", initializers.ones)}
)


@pytest.mark.parametrize("name, constructor", CONSTRUCTORS)
def test_help_of_every_activation_constructor_shows_forward_derivative_and_kink(name, constructor):
    doc = pydoc.render_doc(constructor, renderer=pydoc.plaintext)
    for section in ("Forward:", "Derivative:", "Kink:"):
        assert section in doc, f"help(fn.{name}) has no {section} line"


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_help_of_every_loss_shows_its_forward_and_backward(name):
    doc = pydoc.render_doc(losses.LOSSES[name], renderer=pydoc.plaintext)
    assert "Forward:" in doc and "Backward:" in doc, f"help(fn.{name}) has no formulas"


def test_help_of_softmax_cross_entropy_is_its_own_not_the_generic_loss():
    doc = pydoc.render_doc(fn.softmax_cross_entropy, renderer=pydoc.plaintext)
    assert "dL/dz = (s · softmax(z) − y) / B" in doc
    assert "log-sum-exp" in doc


@pytest.mark.parametrize("name, factory", INITIALIZERS)
def test_help_of_every_initializer_states_its_variance(name, factory):
    doc = pydoc.render_doc(factory, renderer=pydoc.plaintext)
    assert re.search(r"Variance:\s+Var\[w\] = ", doc), f"help(fn.initializers.{name}) states no variance"


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_each_documented_loss_is_still_a_plain_loss(name):
    loss = losses.LOSSES[name]
    plain = fn.Loss(loss.forward, loss.backward, loss.jvp, loss.hvp)
    assert isinstance(loss, fn.Loss) and loss._fields == ("forward", "backward", "jvp", "hvp")
    assert loss == plain and hash(loss) == hash(plain)
    assert loss._replace(backward=loss.backward) == loss
    f = jax.jit(lambda l, p, t: l.forward(p, t)[0], static_argnums=0)
    pred = jnp.full((2, 3), 0.5)
    target = jnp.array([0, 2]) if name == "softmax_cross_entropy" else jnp.zeros((2, 3))
    assert float(f(loss, pred, target)) == float(f(plain, pred, target))


def test_help_style_docstrings_become_the_rst_that_says_the_same():
    """The docs' docstring hook: bars stay bars, indented formula blocks stay as written, lists end cleanly."""
    sys.path.insert(0, str(DOCS))
    try:
        import conf
    finally:
        sys.path.remove(str(DOCS))
    doc = [
        "The norm |x| of a ``literal `` and ``Layer``s.",
        "Backward, with rows:",
        "    dW = Xᵀ dY,   db = Σ dY",
        "    dx = dY Wᵀ",
        "1. first item",
        "   its continuation",
        "After the list.",
        "",
        "Args:",
        "    x: the input |x|.",
        "    Other text after the arguments.",
    ]
    assert conf.plain_text_to_rst(doc) == [
        r"The norm \|x\| of a ``literal`` and ``Layer``\ s.",
        "Backward, with rows::",
        "",
        "    dW = Xᵀ dY,   db = Σ dY",
        "    dx = dY Wᵀ",
        "",
        "1. first item",
        "   its continuation",
        "",
        "After the list.",
        "",
        "Args:",
        r"    x: the input \|x\|.",
        "",
        "Other text after the arguments.",
    ]


def _every_public_name_of_fnnet_is_in_the_api_reference(site):
    html = "".join(p.read_text() for p in site.glob("*.html"))
    missing = []
    for name in fn.__all__:
        obj = getattr(fn, name)
        if isinstance(obj, type(fn)):  # a module: its docstring heads a page
            anchors = [f'id="module-{obj.__name__}"']
        elif isinstance(obj, fn.Loss):  # a loss value: documented by its type
            anchors = [f'id="fnnet.losses.{type(obj).__name__}"']
        else:
            anchors = [f'id="fnnet.{name}"', f'id="{obj.__module__}.{name}"']
        if not any(a in html for a in anchors):
            missing.append(name)
    assert not missing, f"not in the docs: {missing}"
