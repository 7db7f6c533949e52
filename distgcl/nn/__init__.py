"""Neural modules only (no training logic)."""
from distgcl.nn.encoder import GCNEncoder, make_activation
from distgcl.nn.nmn import (MetricFactors, NegativeMetricNetwork, SignedNegativeMetricNetwork,
                            build_metric_network)
from distgcl.nn.projector import Projector
from distgcl.nn.views import TwoViewEncoder

__all__ = ["GCNEncoder", "MetricFactors", "NegativeMetricNetwork", "Projector",
           "SignedNegativeMetricNetwork", "TwoViewEncoder", "build_metric_network",
           "make_activation"]
