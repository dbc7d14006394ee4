"""The trainer: one YAML experiment (``config``) -> starting model (``build``) -> samples
(``data``) -> batches (``batch``) -> losses (``losses``) -> the loop with checkpoints and
resume (``loop``). The command line is :mod:`segllm_training.train`."""
