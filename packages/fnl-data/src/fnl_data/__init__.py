"""fnl-data: DensePose-COCO I/O, transforms, and the built-in synthetic toy-humans dataset.

Modules: :mod:`fnl_data.coco` (read/validate/write), :mod:`fnl_data.transforms` (resize, flip),
:mod:`fnl_data.dataset` (the ``DensePoseDataset`` object), :mod:`fnl_data.toy` (generator and
body surface), :mod:`fnl_data.config` (registered configs).
"""
