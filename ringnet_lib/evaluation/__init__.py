"""NoW-style evaluation: point-to-triangle distances, alignment, the NoW metric, a synthetic benchmark, export.

    from ringnet_lib.evaluation import now_errors, evaluate_shapes, heldout_betas, results_table
"""
from .benchmark import (SyntheticScan, evaluate_shapes, heldout_betas, make_scan, neutral_meshes, results_table,
                        sample_surface, write_results_csv)
from .export import now_prediction_paths, write_now_prediction, write_obj
from .geometry import (MeshDistance, Similarity, closest_point_barycentrics, closest_points_on_mesh,
                       closest_points_on_triangles, point_to_mesh_distance, umeyama)
from .now import (NOW_IBUG68, NOW_LANDMARK_NAMES, NOW_STATIC_INDEX, CropSphere, NowResult, align_by_landmarks,
                  crop_mask, crop_mesh, crop_points, crop_sphere, cumulative_error_curve, now_errors,
                  now_landmarks_from_ibug68, now_landmarks_from_static, refine_alignment, summarize_errors)
