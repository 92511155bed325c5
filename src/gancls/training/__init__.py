"""Training: the GAN-CLS loop (``gancls train``) and the text encoder's (``gancls train-text-encoder``).

- ``train``: the loop, read like dcgan's ``main.py``; ``state``: G, D, optimisers and the averaged G;
  ``batches``, ``ema``, ``stats``, ``distributed``: what one step needs.
- ``checkpoint``: resumable training checkpoints; ``run_record`` and ``loop_times``: the record-keeping.
- ``train_text_encoder``: fits the char-CNN-RNN to the data's own embeddings, or imports Reed's.

Imports ``gancls.config``, ``gancls.files``, ``gancls.data``, ``gancls.models`` and ``gancls.drawing.grids``.
"""
