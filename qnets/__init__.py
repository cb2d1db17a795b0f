"""qnets: quadratic neurons, quadratic CIFAR ResNets and the ReLinear training strategy.

Companion to F.-L. Fan, M. Li, F. Wang, R. Lai, G. Wang, "On Expressivity and Trainability of
Quadratic Networks", arXiv:2110.06081 (IEEE TNNLS 2023).

Three layers, whose imports point down only (tests/test_layout.py):
1. the library: `layers` (quadratic neurons), `models` (CIFAR ResNets), `relinear`, `data` and
   `sources` (CIFAR-10), and the run: `config` (its Config and name), `fastpath` (its step),
   `store` (results and checkpoints), `train` (the loop: `fit`), with `locks` and `utils`;
2. the paper's reproduction: `experiments` (presets, each notebook's configs), `stats` and `claims`
   (verdicts), `plots`, notebook 01's `mlps`, `neuron` and `expressivity`, `precision`, `notebooks`;
3. running many: `runner` (a plan, here), `streams` (runs side by side), `campaign` (a plan in
   budgeted windows: `window` runs one, `collect` takes its output back), `cluster` (Slurm jobs),
   `timing`, `bench` and `packbench` (speed), and `report`, which renders the results into
   README.md and results/README.md.
"""
from .layers import QuadraticConv2d, QuadraticLinear
from .models import resnet, resnet20, resnet32, resnet44, resnet56, resnet110
from . import relinear
from .relinear import linearize, quadratize
from .utils import VERSION as __version__
__all__ = ["QuadraticConv2d", "QuadraticLinear", "resnet", "resnet20", "resnet32", "resnet44",
           "resnet56", "resnet110", "relinear", "quadratize", "linearize", "__version__"]
