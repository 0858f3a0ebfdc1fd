"""The ``ntk`` command line: local kernels and predictions, or the service itself."""
