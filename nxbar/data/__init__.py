"""Image data sets as uint8 arrays (`dataset.Dataset`), one module per format:

- `cifar`: CIFAR-10 / CIFAR-100 python version, `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz` or their
  extracted folders (https://www.cs.toronto.edu/~kriz/cifar.html).
- `image_folder`: root/<class>/<image>, as a folder or a .zip; classes are the sorted folder names.
- `tiny_imagenet`: the official `tiny-imagenet-200/` layout (CS231n), as a folder or a .zip.
- `load`: "embedded" (the first 1,000 CIFAR-10 test images shipped with nxbar) or a path of any of these,
  detected (`load_dataset`).
`archive` reads image files from a folder or a .zip and decodes them. Every loader returns a `Dataset`: images
uint8 (N, H, W, 3) in RGB order, labels int64 (N,), class names (label k is class_names[k]) and a readable
`source`.
"""
