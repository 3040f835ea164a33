"""The stages of a study run, in order: prepare → plan → track → build → fit → export → score → register.

Each stage is one function in its own module; what passes between them is a small record in
:mod:`medimg.training.stages.records`. :func:`medimg.training.run.run_workflow` calls them in turn.
"""
