"""fnl-necks: FPN and BiFPN necks for FnL detectors."""
