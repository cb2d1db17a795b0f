"""qnets: quadratic neurons, quadratic CIFAR ResNets and the ReLinear training strategy.

Companion to F.-L. Fan, M. Li, F. Wang, R. Lai, G. Wang, "On Expressivity and Trainability of
Quadratic Networks", arXiv:2110.06081 (IEEE TNNLS 2023).
"""
from .layers import QuadraticConv2d, QuadraticLinear
from .models import resnet, resnet20, resnet32, resnet44, resnet56, resnet110
from . import relinear

__version__ = "0.1.0"
__all__ = ["QuadraticConv2d", "QuadraticLinear", "resnet", "resnet20", "resnet32", "resnet44",
           "resnet56", "resnet110", "relinear", "__version__"]
