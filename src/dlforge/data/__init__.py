"""DataModules and the loading of their sources. Batches are sliced from tensors held in memory."""
