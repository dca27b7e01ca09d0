"""stepjepa: fine-tune causal LMs with next-token loss plus a JEPA objective."""

__version__ = "0.1.0"
