"""Which MONAI dictionary transforms a config may use, and which of their arguments.

A config may name only transforms that are known to be pure array transforms: they take
the case's arrays and plain values (numbers, flags, key names, MONAI option names that
MONAI looks up in fixed tables) and return arrays. Anything that runs a callable, reads or
writes files, logs data, imports a class by name, or needs a Python object is refused.
The list is an *allow*-list on purpose: MONAI adds transforms and aliases every release,
and a deny-list by name let ``LoadImageD`` through where ``LoadImaged`` was refused.

Entries are keyed by the *defining* class (the name in ``class X(...)``), never by an
alias; :mod:`voxpipe.monai_adapter` resolves every exported alias to that class, from
source when validating and by identity when building. For each class the arguments
reviewed for this MONAI version are listed; an argument not listed is refused, so a new
MONAI argument stays off until someone reviews it. ``**kwargs`` is never accepted.
Reviewed against MONAI 1.6.1; ``tests/test_monai_allowlist.py`` checks every name that
``monai.transforms`` exports.
"""

from __future__ import annotations

# Defining class -> (module under monai.transforms, reviewed arguments).
ALLOWED: dict[str, tuple[str, str]] = {
    # croppad.dictionary
    "BorderPadd": ("croppad.dictionary", "keys spatial_border mode allow_missing_keys"),
    "BoundingRectd": ("croppad.dictionary", "keys bbox_key_postfix allow_missing_keys"),
    "CenterScaleCropd": ("croppad.dictionary", "keys roi_scale allow_missing_keys"),
    "CenterSpatialCropd": ("croppad.dictionary", "keys roi_size allow_missing_keys"),
    "CropForegroundd": (
        "croppad.dictionary",
        "keys source_key channel_indices margin allow_smaller k_divisible mode start_coord_key end_coord_key allow_missing_keys",
    ),
    "DivisiblePadd": ("croppad.dictionary", "keys k mode method allow_missing_keys"),
    "RandScaleCropd": ("croppad.dictionary", "keys roi_scale max_roi_scale random_center random_size allow_missing_keys"),
    "RandSpatialCropd": ("croppad.dictionary", "keys roi_size max_roi_size random_center random_size allow_missing_keys"),
    "ResizeWithPadOrCropd": ("croppad.dictionary", "keys spatial_size mode allow_missing_keys method"),
    "SpatialCropd": ("croppad.dictionary", "keys roi_center roi_size roi_start roi_end roi_slices allow_missing_keys"),
    "SpatialPadd": ("croppad.dictionary", "keys spatial_size method mode allow_missing_keys"),
    # intensity.dictionary
    "AdjustContrastd": ("intensity.dictionary", "keys gamma invert_image retain_stats allow_missing_keys"),
    "ClipIntensityPercentilesd": ("intensity.dictionary", "keys lower upper sharpness_factor channel_wise dtype allow_missing_keys"),
    "ComputeHoVerMapsd": ("intensity.dictionary", "keys dtype new_key_prefix allow_missing_keys"),
    "ForegroundMaskd": ("intensity.dictionary", "keys threshold hsv_threshold invert new_key_prefix allow_missing_keys"),
    "GaussianSharpend": ("intensity.dictionary", "keys sigma1 sigma2 alpha approx allow_missing_keys"),
    "GaussianSmoothd": ("intensity.dictionary", "keys sigma approx allow_missing_keys"),
    "GibbsNoised": ("intensity.dictionary", "keys alpha allow_missing_keys"),
    "HistogramNormalized": ("intensity.dictionary", "keys num_bins min max mask mask_key dtype allow_missing_keys"),
    "KSpaceSpikeNoised": ("intensity.dictionary", "keys loc k_intensity allow_missing_keys"),
    "MaskIntensityd": ("intensity.dictionary", "keys mask_data mask_key allow_missing_keys"),
    "MedianSmoothd": ("intensity.dictionary", "keys radius allow_missing_keys"),
    "NormalizeIntensityd": ("intensity.dictionary", "keys subtrahend divisor nonzero channel_wise dtype allow_missing_keys"),
    "RandAdjustContrastd": ("intensity.dictionary", "keys prob gamma invert_image retain_stats allow_missing_keys"),
    "RandBiasFieldd": ("intensity.dictionary", "keys degree coeff_range dtype prob allow_missing_keys"),
    "RandCoarseDropoutd": (
        "intensity.dictionary",
        "keys holes spatial_size dropout_holes fill_value max_holes max_spatial_size prob allow_missing_keys",
    ),
    "RandCoarseShuffled": ("intensity.dictionary", "keys holes spatial_size max_holes max_spatial_size prob allow_missing_keys"),
    "RandGaussianNoised": ("intensity.dictionary", "keys prob mean std dtype allow_missing_keys sample_std"),
    "RandGaussianSharpend": (
        "intensity.dictionary",
        "keys sigma1_x sigma1_y sigma1_z sigma2_x sigma2_y sigma2_z alpha approx prob allow_missing_keys",
    ),
    "RandGaussianSmoothd": ("intensity.dictionary", "keys sigma_x sigma_y sigma_z approx prob allow_missing_keys"),
    "RandGibbsNoised": ("intensity.dictionary", "keys prob alpha allow_missing_keys"),
    "RandHistogramShiftd": ("intensity.dictionary", "keys num_control_points prob allow_missing_keys"),
    "RandKSpaceSpikeNoised": ("intensity.dictionary", "keys prob intensity_range channel_wise allow_missing_keys"),
    "RandRicianNoised": ("intensity.dictionary", "keys prob mean std channel_wise relative sample_std dtype allow_missing_keys"),
    "RandScaleIntensityFixedMeand": (
        "intensity.dictionary",
        "keys factors fixed_mean preserve_range prob dtype allow_missing_keys channel_wise",
    ),
    "RandScaleIntensityd": ("intensity.dictionary", "keys factors prob channel_wise dtype allow_missing_keys"),
    "RandShiftIntensityd": (
        "intensity.dictionary",
        "keys offsets safe factor_key meta_keys meta_key_postfix prob channel_wise allow_missing_keys",
    ),
    "RandStdShiftIntensityd": ("intensity.dictionary", "keys factors prob nonzero channel_wise dtype allow_missing_keys"),
    "SavitzkyGolaySmoothd": ("intensity.dictionary", "keys window_length order axis mode allow_missing_keys"),
    "ScaleIntensityRangePercentilesd": (
        "intensity.dictionary",
        "keys lower upper b_min b_max clip relative channel_wise dtype allow_missing_keys",
    ),
    "ScaleIntensityRanged": ("intensity.dictionary", "keys a_min a_max b_min b_max clip dtype allow_missing_keys"),
    "ScaleIntensityd": ("intensity.dictionary", "keys minv maxv factor channel_wise dtype allow_missing_keys"),
    "ShiftIntensityd": ("intensity.dictionary", "keys offset safe factor_key meta_keys meta_key_postfix allow_missing_keys"),
    "StdShiftIntensityd": ("intensity.dictionary", "keys factor nonzero channel_wise dtype allow_missing_keys"),
    "ThresholdIntensityd": ("intensity.dictionary", "keys threshold above cval allow_missing_keys"),
    # meta_utility.dictionary
    "FromMetaTensord": ("meta_utility.dictionary", "keys data_type allow_missing_keys"),
    "ToMetaTensord": ("meta_utility.dictionary", "keys allow_missing_keys"),
    # post.dictionary
    "Activationsd": ("post.dictionary", "keys sigmoid softmax allow_missing_keys"),
    "AsDiscreted": ("post.dictionary", "keys argmax to_onehot threshold rounding allow_missing_keys"),
    "DistanceTransformEDTd": ("post.dictionary", "keys allow_missing_keys sampling"),
    "FillHolesd": ("post.dictionary", "keys applied_labels connectivity allow_missing_keys"),
    "GenerateHeatmapd": (
        "post.dictionary",
        "keys sigma heatmap_keys ref_image_keys spatial_shape truncated normalize dtype allow_missing_keys coordinate_space visibility_keys",
    ),
    "KeepLargestConnectedComponentd": (
        "post.dictionary",
        "keys applied_labels is_onehot independent connectivity num_components allow_missing_keys",
    ),
    "LabelFilterd": ("post.dictionary", "keys applied_labels allow_missing_keys"),
    "LabelToContourd": ("post.dictionary", "keys kernel_type allow_missing_keys"),
    "MeanEnsembled": ("post.dictionary", "keys output_key weights"),
    "ProbNMSd": ("post.dictionary", "keys spatial_dims sigma prob_threshold box_size allow_missing_keys"),
    "RemoveSmallObjectsd": ("post.dictionary", "keys min_size connectivity independent_channels by_measure pixdim allow_missing_keys"),
    "SobelGradientsd": (
        "post.dictionary",
        "keys kernel_size spatial_axes normalize_kernels normalize_gradients padding_mode dtype new_key_prefix allow_missing_keys",
    ),
    "VoteEnsembled": ("post.dictionary", "keys output_key num_classes"),
    # signal.dictionary
    "SignalFillEmptyd": ("signal.dictionary", "keys allow_missing_keys replacement"),
    # smooth_field.dictionary
    "RandSmoothDeformd": (
        "smooth_field.dictionary",
        "keys spatial_size rand_size pad field_mode align_corners prob def_range grid_dtype grid_mode grid_padding_mode grid_align_corners device",
    ),
    "RandSmoothFieldAdjustContrastd": ("smooth_field.dictionary", "keys spatial_size rand_size pad mode align_corners prob gamma device"),
    "RandSmoothFieldAdjustIntensityd": ("smooth_field.dictionary", "keys spatial_size rand_size pad mode align_corners prob gamma device"),
    # spatial.dictionary
    "Affined": (
        "spatial.dictionary",
        "keys rotate_params shear_params translate_params scale_params affine spatial_size mode padding_mode device dtype align_corners allow_missing_keys rotate_order",
    ),
    "ConvertBoxToPointsd": ("spatial.dictionary", "keys point_key mode allow_missing_keys"),
    "ConvertPointsToBoxesd": ("spatial.dictionary", "keys box_key allow_missing_keys"),
    "Flipd": ("spatial.dictionary", "keys spatial_axis allow_missing_keys"),
    "GridDistortiond": ("spatial.dictionary", "keys num_cells distort_steps mode padding_mode device allow_missing_keys"),
    "GridPatchd": ("spatial.dictionary", "keys patch_size offset num_patches overlap sort_fn threshold pad_mode allow_missing_keys"),
    "Orientationd": ("spatial.dictionary", "keys axcodes as_closest_canonical labels allow_missing_keys"),
    "Rand2DElasticd": (
        "spatial.dictionary",
        "keys spacing magnitude_range spatial_size prob rotate_range shear_range translate_range scale_range mode padding_mode device allow_missing_keys",
    ),
    "Rand3DElasticd": (
        "spatial.dictionary",
        "keys sigma_range magnitude_range spatial_size prob rotate_range shear_range translate_range scale_range mode padding_mode device allow_missing_keys",
    ),
    "RandAffined": (
        "spatial.dictionary",
        "keys spatial_size prob rotate_range shear_range translate_range scale_range mode padding_mode cache_grid device allow_missing_keys",
    ),
    "RandAxisFlipd": ("spatial.dictionary", "keys prob allow_missing_keys"),
    "RandFlipd": ("spatial.dictionary", "keys prob spatial_axis allow_missing_keys"),
    "RandGridDistortiond": ("spatial.dictionary", "keys num_cells prob distort_limit mode padding_mode device allow_missing_keys"),
    "RandGridPatchd": (
        "spatial.dictionary",
        "keys patch_size min_offset max_offset num_patches overlap sort_fn threshold pad_mode allow_missing_keys",
    ),
    "RandRotate90d": ("spatial.dictionary", "keys prob max_k spatial_axes allow_missing_keys"),
    "RandRotated": (
        "spatial.dictionary",
        "keys range_x range_y range_z prob keep_size mode padding_mode align_corners dtype allow_missing_keys",
    ),
    "RandSimulateLowResolutiond": (
        "spatial.dictionary",
        "keys prob downsample_mode upsample_mode zoom_range align_corners allow_missing_keys device",
    ),
    "RandZoomd": ("spatial.dictionary", "keys prob min_zoom max_zoom mode padding_mode align_corners dtype keep_size allow_missing_keys"),
    "ResampleToMatchd": ("spatial.dictionary", "keys key_dst mode padding_mode align_corners dtype allow_missing_keys"),
    "Resized": (
        "spatial.dictionary",
        "keys spatial_size size_mode mode align_corners anti_aliasing anti_aliasing_sigma dtype allow_missing_keys",
    ),
    "Rotate90d": ("spatial.dictionary", "keys k spatial_axes allow_missing_keys"),
    "Rotated": ("spatial.dictionary", "keys angle keep_size mode padding_mode align_corners dtype allow_missing_keys rotate_order"),
    "Spacingd": (
        "spatial.dictionary",
        "keys pixdim diagonal mode padding_mode align_corners dtype scale_extent recompute_affine min_pixdim max_pixdim ensure_same_shape allow_missing_keys",
    ),
    "SpatialResampled": ("spatial.dictionary", "keys mode padding_mode align_corners dtype dst_keys allow_missing_keys"),
    "Zoomd": ("spatial.dictionary", "keys zoom mode padding_mode align_corners dtype keep_size allow_missing_keys"),
    # utility.dictionary
    "AddCoordinateChannelsd": ("utility.dictionary", "keys spatial_dims allow_missing_keys"),
    "AddExtremePointsChanneld": ("utility.dictionary", "keys label_key background pert sigma rescale_min rescale_max allow_missing_keys"),
    "ApplyTransformToPointsd": ("utility.dictionary", "keys refer_keys dtype affine invert_affine affine_lps_to_ras allow_missing_keys"),
    "AsChannelLastd": ("utility.dictionary", "keys channel_dim allow_missing_keys"),
    "CastToTyped": ("utility.dictionary", "keys dtype allow_missing_keys"),
    "ClassesToIndicesd": (
        "utility.dictionary",
        "keys indices_postfix num_classes image_key image_threshold output_shape max_samples_per_class allow_missing_keys",
    ),
    "ConcatItemsd": ("utility.dictionary", "keys name dim allow_missing_keys"),
    "ConvertToMultiChannelBasedOnBratsClassesd": ("utility.dictionary", "keys allow_missing_keys et_label"),
    "CopyItemsd": ("utility.dictionary", "keys times names allow_missing_keys"),
    "DeleteItemsd": ("utility.dictionary", "keys"),
    "EnsureChannelFirstd": ("utility.dictionary", "keys strict_check allow_missing_keys channel_dim"),
    "EnsureTyped": ("utility.dictionary", "keys data_type dtype device wrap_sequence track_meta allow_missing_keys"),
    "FgBgToIndicesd": ("utility.dictionary", "keys fg_postfix bg_postfix image_key image_threshold output_shape allow_missing_keys"),
    "FlattenSequenced": ("utility.dictionary", "keys allow_missing_keys"),
    "Identityd": ("utility.dictionary", "keys allow_missing_keys"),
    "ImageFilterd": ("utility.dictionary", "keys kernel kernel_size allow_missing_keys"),
    "IntensityStatsd": ("utility.dictionary", "keys ops key_prefix mask_keys channel_wise meta_keys meta_key_postfix allow_missing_keys"),
    "LabelToMaskd": ("utility.dictionary", "keys select_labels merge_channels allow_missing_keys"),
    "MapLabelValued": ("utility.dictionary", "keys orig_labels target_labels dtype allow_missing_keys"),
    "RandImageFilterd": ("utility.dictionary", "keys kernel kernel_size prob allow_missing_keys"),
    "RemoveRepeatedChanneld": ("utility.dictionary", "keys repeats allow_missing_keys"),
    "RepeatChanneld": ("utility.dictionary", "keys repeats allow_missing_keys"),
    "SplitDimd": ("utility.dictionary", "keys output_postfixes dim keepdim update_meta allow_missing_keys"),
    "SqueezeDimd": ("utility.dictionary", "keys dim update_meta allow_missing_keys"),
    "ToCupyd": ("utility.dictionary", "keys dtype wrap_sequence allow_missing_keys"),
    "ToDeviced": ("utility.dictionary", "keys device allow_missing_keys"),
    "ToNumpyd": ("utility.dictionary", "keys dtype wrap_sequence allow_missing_keys"),
    "ToPILd": ("utility.dictionary", "keys allow_missing_keys"),
    "ToTensord": ("utility.dictionary", "keys dtype device wrap_sequence track_meta allow_missing_keys"),
    "TransformPointsImageToWorldd": ("utility.dictionary", "keys refer_keys dtype affine_lps_to_ras allow_missing_keys"),
    "TransformPointsWorldToImaged": ("utility.dictionary", "keys refer_keys dtype affine_lps_to_ras allow_missing_keys"),
    "Transposed": ("utility.dictionary", "keys indices allow_missing_keys"),
}

_WRITER = "writes files outside VoxPipe's output folder; use a VoxPipe writer such as `write.nifti`"
_OBJECT = "needs a Python object or function, which a config cannot hold"
_SAMPLES = "returns several samples per case, but a VoxPipe stage maps one case to one case"
_BATCH = "works on training batches, but VoxPipe runs one case at a time; leave it out, or use it in a MONAI training loop"
_BY_NAME = "imports a class by name from another library and passes it arbitrary arguments; use the MONAI transform that does the same (`monai.RandFlipd`, `monai.RandAffined`, ...) or a plugin stage"

# Defining class -> why it is refused and what to use instead (one line).
REFUSED: dict[str, str] = {
    "LoadImaged": "reads files itself, with a `reader` that may name any Python callable; "
    "use a VoxPipe loader such as `load.auto` as the first stage",
    "SaveImaged": _WRITER,
    "SaveClassificationd": _WRITER,
    "WriteFileMappingd": _WRITER,
    "Lambdad": "runs an arbitrary callable; write a plugin stage instead (docs/writing-plugins.md)",
    "RandLambdad": "runs an arbitrary callable; write a plugin stage instead (docs/writing-plugins.md)",
    "DataStatsd": "logs image data and metadata, which may contain PHI; use `voxpipe info` on the input",
    "Invertd": "needs a transform object, which a config cannot hold; write a plugin stage that inverts its own transform",
    "Ensembled": f"{_OBJECT}; use `monai.MeanEnsembled` or `monai.VoteEnsembled`",
    "Cropd": f"{_OBJECT}; use `monai.SpatialCropd` or `monai.CenterSpatialCropd`",
    "RandCropd": f"{_OBJECT}; use `monai.RandSpatialCropd`",
    "Padd": f"{_OBJECT}; use `monai.SpatialPadd` or `monai.BorderPadd`",
    "RandCropByLabelClassesd": f"{_SAMPLES}; use `monai.RandSpatialCropd`",
    "RandCropByPosNegLabeld": f"{_SAMPLES}; use `monai.RandSpatialCropd`",
    "RandSpatialCropSamplesd": f"{_SAMPLES}; use `monai.RandSpatialCropd`",
    "RandWeightedCropd": f"{_SAMPLES}; use `monai.RandSpatialCropd`",
    "GridSplitd": f"{_SAMPLES}; use `monai.GridPatchd`",
    "CutMixd": _BATCH,
    "CutOutd": _BATCH,
    "MixUpd": _BATCH,
    "Decollated": _BATCH,
    "ApplyPendingd": "only has a meaning inside MONAI's lazy Compose; VoxPipe applies every transform at once, so leave it out",
    "TorchVisiond": _BY_NAME,
    "RandTorchVisiond": _BY_NAME,
    "TorchIOd": _BY_NAME,
    "RandTorchIOd": _BY_NAME,
    "CuCIMd": _BY_NAME,
    "RandCuCIMd": _BY_NAME,
    "SimulateDelayd": "only sleeps (a MONAI testing aid); leave it out",
    "SelectItemsd": "drops every other case key, VoxPipe's own included; use `monai.DeleteItemsd`",
    "FlattenSubKeysd": "writes arbitrary sub-keys to the top of the case, where they could replace VoxPipe's own keys; use `monai.CopyItemsd` with named keys",
    "MapTransform": "is MONAI's base class, not a transform; use a concrete one such as `monai.ScaleIntensityRanged`",
}

NOT_ALLOWED = "is not on VoxPipe's list of reviewed MONAI array transforms; use one that is (docs/configs.md) or a plugin stage"

# Why an argument that an allowed transform has is left out of ALLOWED (shown when a config sets it).
REFUSED_ARGUMENTS: dict[str, str] = {
    "lazy": "VoxPipe applies every transform at once, so lazy resampling is off",
    "select_fn": "takes a Python function, which a config cannot hold; MONAI's default is used",
    "other": "takes a Python function, which a config cannot hold",
    "list_output": "would turn the case into a list; VoxPipe stages map one case to one case",
    "use_re": "a pattern could match VoxPipe's own case keys; name the keys",
    "sep": "nested keys could reach into VoxPipe's own case keys; name top-level keys",
}
NOT_REVIEWED = "is not reviewed by VoxPipe for this MONAI version, so it cannot be set; leave it out"

# Arguments whose value is a dtype: only these names, which numpy and torch parse without importing anything.
DTYPE_ARGUMENTS = frozenset({"dtype", "grid_dtype"})
DTYPE_NAMES = (
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
)

# Arguments typed more narrowly than "plain value", by (class, argument): the allowed strings.
THRESHOLD_METHODS = ("isodata", "li", "mean", "minimum", "otsu", "triangle", "yen")  # skimage.filters.threshold_<name>
STAT_OPS = ("mean", "median", "max", "min", "std")
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("ForegroundMaskd", "threshold"): THRESHOLD_METHODS,
    ("ForegroundMaskd", "hsv_threshold"): THRESHOLD_METHODS,
    ("IntensityStatsd", "ops"): STAT_OPS,
}

# Case keys that belong to VoxPipe, not to the image data: a MONAI stage may not name them.
RESERVED_KEYS = frozenset({"case_id", "source", "output_dir", "history", "warnings", "dicom"})


def reviewed_arguments(cls_name: str) -> frozenset[str]:
    """The arguments of an allowed class that a config may set."""
    return frozenset(ALLOWED[cls_name][1].split())
