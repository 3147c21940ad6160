"""The `kovn` command line. It is the one place that may import every layer."""
