"""Sphere geometry (runtime): ERP conventions, patch layout, sampling, fusion, view culling."""
