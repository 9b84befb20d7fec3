"""External formats (layer 2): the label set and its files, Neuronpedia, explanation sources.

Owns `LabelSet` (sidecar, SAE metadata), Neuronpedia rows, explanation readers and comparisons.
May import `records/` only, and no torch.
"""
