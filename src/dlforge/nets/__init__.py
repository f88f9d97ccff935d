"""Networks: plain `nn.Module`s, one family per file, no Lightning.

A backbone maps its input to a feature vector and exposes the size as `out_features`, so any
objective can put its own head on it.
"""
