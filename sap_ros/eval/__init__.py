"""Evaluation (never imported by the runtime): metrics, oracle, baselines, replay, reports."""
