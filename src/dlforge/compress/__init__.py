"""From a trained run to a smaller, faster, verified model: exported forms of its forward pass (ONNX,
torch.export), pruning, int8 quantization, and the measurements that compare them with the checkpoint
(test metric, size, parameters, latency, parity of outputs). `dlforge.tasks.export` and
`dlforge.tasks.compress` drive them from a checkpoint (`dlforge.run.load.load_run`)."""
