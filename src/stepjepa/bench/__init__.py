"""The ``bench`` command: time and memory of one training step per mode, and its report."""
