"""fnl-backbones: Feature-extractor backbones for FnL: any timm model, the paper's 23 backbones, norm conversion and freezing."""
