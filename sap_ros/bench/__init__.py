"""``sap_bench`` (evaluation): benchmarks that print ratios measured side by side."""
