"""The benchmark behind ``fnnet bench``: the models, the timing protocol, the sweep throughput, the report.

Modules: :mod:`fnnet.bench.models` (entries and analytic FLOPs), :mod:`fnnet.bench.timing` (the matmul peak
and the timed train step), :mod:`fnnet.bench.sweep` (vmapped vs loop vs PyTorch), :mod:`fnnet.bench.peers`
(each entry's PyTorch twin, timed interleaved), :mod:`fnnet.bench.report` (tables, targets, files). The
command itself is :mod:`fnnet.cli.bench`; ``python -m fnnet.bench`` runs it.
"""

from fnnet.bench import models, peers, report, sweep, timing

__all__ = ["models", "peers", "report", "sweep", "timing"]
