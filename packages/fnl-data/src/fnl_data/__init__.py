"""fnl-data: DensePose-COCO reading/writing, transforms, and the built-in synthetic toy-humans dataset for FnL."""
