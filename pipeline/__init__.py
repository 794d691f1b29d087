"""raydistill: label a corpus with an LLM teacher on Ray, distill it into a small student."""

__version__ = "0.1.0"
