"""Weight initialisation, drawing from the generator that ``fastlayers.manual_seed`` seeds."""
import math

from fastlayers import random


def uniform(shape, bound, dtype):
    """An array of ``shape`` drawn from U(-bound, bound), in ``dtype``."""
    return random.generator().uniform(-bound, bound, size=shape).astype(dtype)


def normal(shape, dtype, std=1.0):
    """An array of ``shape`` drawn from N(0, std^2), in ``dtype`` (PyTorch's ``init.normal_``)."""
    return (random.generator().standard_normal(size=shape) * std).astype(dtype)


def default_weight_and_bias(weight_shape, fan_in, bias, dtype):
    """PyTorch's default for Linear and Conv2d: kaiming_uniform(a=sqrt(5)) for the weight, which is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias (None if not ``bias``)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    w = uniform(weight_shape, bound, dtype)
    b = uniform((weight_shape[0],), bound, dtype) if bias else None
    return w, b
