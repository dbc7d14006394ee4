"""segllm_training: data, training and evaluation for SegLLM.

``tabletop``     synthetic tabletop scenes and conversations (the demo model's data), the demo
                 frames, the held-out seed
``mrseg``        the MRSeg dataset generator (``python -m segllm_training.mrseg``)
``relations``    positional relation phrases, shared by both data generators
``trainer``      experiment config, model building, data sources, batches, losses, the loop
``train``        the one training entry point (``python -m segllm_training.train``)
``eval``         per-round evaluation, the tabletop held-out evaluation, the shape probe
``experiments``  studies built on the trainer (the mask-encoding ablation)
"""
