"""``sap_synth`` (evaluation): synthetic 360 degree scenes with exact labels, as rosbags."""
