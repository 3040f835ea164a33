"""Generative tasks: anomaly maps from an autoencoder trained on normal scans (``task: anomaly``)
and through-plane super-resolution learned from thin-slice scans (``task: superres``).

``medimg.generative.run.run_generative`` runs either task from a workflow; see docs/generative.md.
"""
