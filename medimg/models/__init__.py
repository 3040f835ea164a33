"""Networks, pretrained weight sources, safe partial loading and fine-tuning helpers.

Modules: :mod:`~medimg.models.networks` (``build_network``), :mod:`~medimg.models.sources`
(where weights come from), :mod:`~medimg.models.loading` (``load_pretrained``),
:mod:`~medimg.models.finetune` (parameter groups, freezing, schedules). The settings they read
(``PretrainedSpec``, ``FinetuneSpec``) are part of the workflow schema, in
:mod:`~medimg.config.weights`. Imported one by one so that a config check never pays for torch.
"""
