"""Real NVP (Dinh, Sohl-Dickstein & Bengio, ICLR 2017): an exact, multi-scale normalizing flow for images."""

from .base import Bijector, Sequential
from .batchnorm import BatchNormFlow
from .checkpoint import CheckpointError, load_model, read_header, save_model
from .config import FlowConfig
from .coupling import ChannelCoupling, CheckerboardCoupling
from .likelihood import bits_per_dim, bits_per_dim_breakdown, dequantize
from .model import RealNVP
from .preprocess import LogitTransform
from .squeeze import CheckerboardOrder, Squeeze

__version__ = "0.1.0"

__all__ = [
    "BatchNormFlow",
    "Bijector",
    "ChannelCoupling",
    "CheckerboardCoupling",
    "CheckerboardOrder",
    "CheckpointError",
    "FlowConfig",
    "LogitTransform",
    "RealNVP",
    "Sequential",
    "Squeeze",
    "bits_per_dim",
    "bits_per_dim_breakdown",
    "dequantize",
    "load_model",
    "read_header",
    "save_model",
]
