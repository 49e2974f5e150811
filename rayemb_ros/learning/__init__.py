"""The learned part: the encoder, its checkpoints, the subspace maths, training pairs, the
objective, the training loop, and the fixed-landmark baseline's network.
"""
