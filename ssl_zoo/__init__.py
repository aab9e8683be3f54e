"""ssl_zoo: self-supervised and contrastive objectives on one backbone, one evaluator."""

__version__ = "0.1.0"
