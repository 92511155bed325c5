"""Reed's char-CNN-RNN alphabet (icml2016 data/donkey_folder_txt.lua), without torch.

Code i is the i-th character (1-based); a repeated character (``'-'``) keeps its last code; any other
code is padding.  The text encoder writes sentences with it and the Torch7 reader decodes Reed's
``char`` tensors with it.
"""

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
CODE = {ch: i for i, ch in enumerate(ALPHABET, 1)}  # a repeated character keeps its last code
CHAR = {code: ch for ch, code in CODE.items()}
