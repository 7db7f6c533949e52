"""distgcl: distributed graph contrastive learning (GRACE, E2Neg, NML-GCL)."""
__version__ = "0.1.0"
