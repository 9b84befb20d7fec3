"""The amortised run mode, all of it: its config, the map from decoder rows to labels, the
proposals verified on a feature's examples, and the seed-propose-verify-descend rounds.

Part of `run/` (layer 6): may import every layer below it.
"""
