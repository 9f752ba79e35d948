"""``make demo`` (evaluation): a synthetic bag through the real node over DDS, then a report."""
