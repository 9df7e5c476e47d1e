"""``python -m ringnet_lib.default_head --rebuild``: regenerate the shipped mesh and contour table."""
import sys

from ..model_io import save_dynamic_embedding
from .build import save_mesh_asset
from .contour_table import TABLE_ASSET, build_table

if __name__ == "__main__":
    if "--rebuild" not in sys.argv:
        sys.exit("usage: python -m ringnet_lib.default_head --rebuild   (writes the mesh and contour-table assets)")
    print("wrote", save_mesh_asset())
    print("wrote", save_dynamic_embedding(build_table(), TABLE_ASSET))
