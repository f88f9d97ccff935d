"""Building blocks shared by the networks: attention, positions, feed-forward layers, norms, init, the
pre-norm Transformer block, convolution blocks."""
