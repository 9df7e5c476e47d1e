"""NoW-style evaluation: point-to-triangle distances, the NoW protocol, a synthetic benchmark, export.

    from ringnet_lib.evaluation import now_errors, evaluate_shapes, heldout_betas, results_table

Modules: :mod:`.geometry` (the exact closest point on a triangle), :mod:`.mesh_index` (exact and fast
on a whole mesh: a bounding-volume hierarchy, and a tracker for ICP), :mod:`.now` (crop, alignment, ICP,
statistics), :mod:`.benchmark` (synthetic scans, ``evaluate_shapes``, tables), :mod:`.export`
(NoW's file layout), :mod:`.identifiability` (what landmarks can tell), :mod:`.diagnostics`
(what a network learned), :mod:`.trained` (a checkpoint's report). NoW's 7 landmarks and crop
sphere are :mod:`ringnet_lib.face_region`'s; Umeyama is :mod:`ringnet_lib.alignment`'s.
"""
from ..alignment import Similarity, umeyama
from ..face_region import (NOW_IBUG68, NOW_LANDMARK_NAMES, NOW_STATIC_INDEX, CropSphere, crop_mask, crop_sphere,
                           now_landmarks_from_ibug68, now_landmarks_from_static)
from .benchmark import (HELDOUT_SEED, SyntheticScan, evaluate_shapes, heldout_betas, make_scan, neutral_meshes,
                        results_rows, results_table, sample_surface)
from .export import now_prediction_paths, write_now_prediction, write_obj
from .geometry import MeshDistance, closest_point_barycentrics, closest_points_on_triangles
from .mesh_index import MeshIndex, MeshTracker, closest_points_on_mesh, point_to_mesh_distance
from .now import (NowResult, align_by_landmarks, crop_mesh, crop_points, cumulative_error_curve, now_errors,
                  refine_alignment, summarize_errors)
