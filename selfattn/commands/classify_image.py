"""`selfattn classify-image RUN_DIR IMAGE.png`: the label of one image, with its probability.

How a file becomes the model's input (see ``selfattn.vision.read_image``): greyscale, grey+alpha,
palette, RGB and RGBA are accepted; colour becomes luminance (0.299 R + 0.587 G + 0.114 B),
transparency is composited over black. The image must be square; by default a square of another
side is resampled to the model's size (box filter down, bilinear up); ``--size-policy exact``
refuses any other size instead. Training images are light objects on black: ``--invert`` flips
a dark-on-light drawing. Anything else (another mode, not square, not an image, no such file) is
one line on stderr and exit status 2.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("classify-image", help="classify an image file with a trained image run",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", help="run folder (uses its best checkpoint) or a checkpoint folder")
    p.add_argument("image", help="image file (PNG, or anything Pillow reads)")
    p.add_argument("--size-policy", default="resize", choices=("resize", "exact"),
                   help="resize: resample a square image of another side; exact: refuse it")
    p.add_argument("--invert", action="store_true", help="use 1 - pixel (for dark-on-light drawings)")
    p.add_argument("--top-k", type=int, default=1, help="print the k most likely labels")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..vision import classify_image, load_image_classifier, read_checkpoint_config, read_image

    if args.top_k < 1:
        raise ValueError(f"--top-k must be an int >= 1; got {args.top_k}")
    cfg = read_checkpoint_config(args.run_dir)  # config only: the image is checked before the weights load
    pixels = read_image(args.image, cfg.model.image_size, size_policy=args.size_policy, invert=args.invert)
    model, cfg = load_image_classifier(args.run_dir)
    for label, prob in classify_image(model, cfg, pixels, top_k=args.top_k):
        print(f"{label}\t{prob:.4f}")
    return 0
