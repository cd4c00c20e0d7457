"""aqa-pipeline: action quality assessment from cached video features."""

__version__ = "0.1.0"
