"""The small datasets shipped inside the package (``ringnet_lib/data/samples/``), found as package data.

* :data:`SYNTHETIC_SAMPLE` - 8 synthetic identities x 6 images, 224 px, textured renders of the
  default head with exact ground truth (``python -m ringnet_lib.data.synthesize --identities 8
  --per-identity 6 --size 224 --seed 0``);
* :data:`ASTRONAUT_SAMPLE` - one real photo (scikit-image's ``data.astronaut()``, public domain),
  cropped, with dlib's 68 landmarks;
* :data:`ASTRONAUT_PHOTO` - that photo's crop as a PNG file, for the demo.

See ``samples/README.md`` for how they were made.
"""
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
SYNTHETIC_SAMPLE = SAMPLES / "synthetic"
ASTRONAUT_SAMPLE = SAMPLES / "astronaut"
ASTRONAUT_PHOTO = ASTRONAUT_SAMPLE / "images" / "astronaut" / "astronaut.png"
