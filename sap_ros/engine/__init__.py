"""The SAM2 engine (runtime): model, memory, objects, discovery, the per-frame pipeline."""
