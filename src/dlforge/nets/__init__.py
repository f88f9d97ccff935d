"""Networks: plain `nn.Module`s, one family per file, no Lightning; their shared blocks in `layers/`.

What objectives need from a network (a backbone's feature size, a token encoder, a decoder with a
cache) is stated in `contracts.py`.
"""
