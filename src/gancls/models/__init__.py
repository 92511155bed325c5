"""The networks: GAN-CLS itself, Reed's char-CNN-RNN text encoder, and the files that hold them.

- ``gan``: the generator and discriminator of the seed's description (Reed et al. 2016).
- ``alphabet``: Reed's 70 characters and their codes (torch-free, shared with the data readers).
- ``text_encoder``: the char-CNN-RNN; ``reed_t7``: importing Reed's own ``.t7`` weights into it.
- ``generator_file``: the shipped ``generator.pt`` (saving and loading a trained G).

Imports ``gancls.config`` and ``gancls.files`` only; nothing heavy at start.
"""
